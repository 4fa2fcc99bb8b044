"""What the search knows about one trial beyond Optuna's own fields: the trial record.

The run loop writes it once per trial, as the user attribute ``roofnas`` (one storage write
for everything); results, plots and the MLflow view read it back through ``TrialRecord.of``.
No other module reads trial user attributes by key. The stored form is a plain JSON object:

    {"arch": <Architecture.to_string()>, "costs": {<target>: {<metric>: value}},
     "feasible": bool, "estimator_skipped": bool, "estimator_s": seconds (when it ran),
     "estimator_metrics": {<name>: value} (when the estimator gave any),
     "estimator_error": the end of the traceback (when the estimator raised)}
     "rungs": [[budget, value], ...] and "stopped_at_budget": budget (multi-fidelity only)}

A multi-fidelity trial also keeps its rung points while it runs (``roofnas.rungs``, written
by ``write_rung_points``, read by ``rung_points``): other trials and workers compare against
them before the trial has finished, when its record is not yet written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

ATTR_RECORD = "roofnas"
# budget -> the trial's objective vector with the reported value at that rung budget
ATTR_RUNGS = "roofnas.rungs"


@dataclass(frozen=True)
class TrialRecord:
    """One trial's architecture, its costs on every hardware target, and what was spent on it."""

    arch: str  # searchspace.Architecture.to_string()
    costs: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # target name -> metric -> value (search._objectives.cost_summary)
    feasible: bool = False  # every constraint met
    estimator_skipped: bool = False  # rejected by a constraint, or no accuracy objective
    estimator_s: float | None = None  # seconds the accuracy estimator took, when it ran
    # what the estimator reported besides the objective (a user function's other dict entries)
    estimator_metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    estimator_error: str | None = None  # the end of the traceback, when the estimator raised
    # multi-fidelity: (rung budget, reported value) in budget order, and where it was stopped
    rungs: tuple[tuple[float, float], ...] = ()
    stopped_at_budget: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "arch": self.arch,
            "costs": {k: dict(v) for k, v in self.costs.items()},
            "feasible": self.feasible,
            "estimator_skipped": self.estimator_skipped,
        }
        if self.estimator_s is not None:
            d["estimator_s"] = self.estimator_s
        if self.estimator_metrics:
            d["estimator_metrics"] = dict(self.estimator_metrics)
        if self.estimator_error is not None:
            d["estimator_error"] = self.estimator_error
        if self.rungs:
            d["rungs"] = [[b, v] for b, v in self.rungs]
        if self.stopped_at_budget is not None:
            d["stopped_at_budget"] = self.stopped_at_budget
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRecord:
        est = d.get("estimator_s")
        error = d.get("estimator_error")
        stopped = d.get("stopped_at_budget")
        return cls(
            arch=str(d.get("arch", "")),
            costs=MappingProxyType({k: dict(v) for k, v in d.get("costs", {}).items()}),
            feasible=bool(d.get("feasible", False)),
            estimator_skipped=bool(d.get("estimator_skipped", False)),
            estimator_s=None if est is None else float(est),
            estimator_metrics=MappingProxyType(
                {str(k): float(v) for k, v in d.get("estimator_metrics", {}).items()}
            ),
            estimator_error=None if error is None else str(error),
            rungs=tuple((float(b), float(v)) for b, v in d.get("rungs", ())),
            stopped_at_budget=None if stopped is None else float(stopped),
        )

    def write(self, trial: optuna.Trial) -> None:
        """Store the record in the running trial (one storage write)."""
        trial.set_user_attr(ATTR_RECORD, self.to_dict())

    @classmethod
    def of(cls, t: FrozenTrial) -> TrialRecord | None:
        """The record of a finished trial; None for one that never got this far."""
        d = t.user_attrs.get(ATTR_RECORD)
        return None if d is None else cls.from_dict(d)


def write_rung_points(trial: optuna.Trial, points: Mapping[float, Sequence[float]]) -> None:
    """Store every rung point of the running trial so far (one storage write)."""
    trial.set_user_attr(ATTR_RUNGS, [[b, list(p)] for b, p in sorted(points.items())])


def rung_points(t: FrozenTrial) -> dict[float, tuple[float, ...]]:
    """Rung budget -> the trial's objective vector at that budget; empty when it has none."""
    return {float(b): tuple(float(x) for x in p) for b, p in t.user_attrs.get(ATTR_RUNGS, ())}


def is_feasible(t: FrozenTrial) -> bool:
    """COMPLETE with every constraint met (``value / limit - 1 <= 0``): a front candidate."""
    return t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())


def constraints_met(t: FrozenTrial) -> bool:
    """Every constraint met, in any finished state; without constraints, COMPLETE."""
    if not t.constraints:
        return t.state == TrialState.COMPLETE
    return all(v <= 0 for v in t.constraints.values())
