"""Multi-fidelity: budgets, rungs, and the ``report`` callable an estimator trains under.

An estimator that trains (the built-in ``train`` kind, or a user function that takes
``budget`` and ``report``) is given the largest budget and reports its accuracy as it goes;
at each rung budget the trial either goes on or is stopped. Budgets are in the estimator's
own unit (epochs for ``train``).

The stopping rule is multi-objective asynchronous successive halving (MO-ASHA: Schmucker
et al., "Multi-objective Asynchronous Successive Halving", 2021, arXiv:2106.12639), the
multi-objective form of ASHA (Li et al., "A System for Massively Parallel Hyperparameter
Tuning", MLSys 2020): ``rung_continues`` decides, ``RungReporter`` records a running trial's
rung values in the study and applies the rule to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import optuna
from optuna.trial import TrialState

from search._record import rung_points, write_rung_points

__all__ = [
    "FidelityConfig",
    "Reporter",
    "RungReporter",
    "nondominated_fronts",
    "rung_continues",
]


class Reporter(Protocol):
    """Called by an estimator with its objective value after ``step`` units of budget.

    Raises ``optuna.TrialPruned`` when the trial should stop there. ``rungs`` are the
    budgets at which a report counts (the last is ``max_budget``): an estimator for which a
    report costs work (``train`` evaluates on the validation split) reports only there.
    """

    max_budget: float
    rungs: tuple[float, ...]

    def __call__(self, value: float, step: float) -> None: ...


@dataclass(frozen=True)
class FidelityConfig:
    """The ``[fidelity]`` table: rungs ``min_budget * eta**k`` up to ``max_budget``."""

    min_budget: float
    max_budget: float
    eta: int = 3  # reduction factor: about 1 in eta trials goes on at each rung

    def __post_init__(self) -> None:
        for key in ("min_budget", "max_budget"):
            v = getattr(self, key)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or v <= 0
            ):
                raise ValueError(f"fidelity.{key}={v!r} must be a positive number")
        if self.max_budget < self.min_budget:
            raise ValueError(
                f"fidelity.max_budget={self.max_budget!r} must be >= "
                f"fidelity.min_budget={self.min_budget!r}"
            )
        if isinstance(self.eta, bool) or not isinstance(self.eta, int) or self.eta < 2:
            raise ValueError(f"fidelity.eta={self.eta!r} must be an integer >= 2")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FidelityConfig:
        if not isinstance(d, Mapping):
            raise ValueError(f"fidelity={d!r} must be a table")
        known = ("min_budget", "max_budget", "eta")
        for key in d:
            if key not in known:
                raise ValueError(
                    f"unknown fidelity key {key!r}={d[key]!r}; known keys: {list(known)}"
                )
        for key in ("min_budget", "max_budget"):
            if key not in d:
                raise ValueError(f"fidelity.{key} is required")
        return cls(**dict(d))

    def rungs(self) -> tuple[float, ...]:
        """Rung budgets ``min_budget * eta**k`` below ``max_budget``, then ``max_budget``."""
        out: list[float] = []
        b = float(self.min_budget)
        while b < self.max_budget * (1 - 1e-9):
            out.append(b)
            b *= self.eta
        out.append(float(self.max_budget))
        return tuple(out)


# ---------------------------------------------------------------- the stopping rule


def _losses(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Points as losses (every objective minimised), shape (n, d)."""
    signs = []
    for d in directions:
        name = d.name.lower() if isinstance(d, optuna.study.StudyDirection) else str(d)
        if name not in ("maximize", "minimize"):
            raise ValueError(f"direction={d!r} must be 'maximize' or 'minimize'")
        signs.append(-1.0 if name == "maximize" else 1.0)
    arr = np.asarray(points, dtype=np.float64).reshape(len(points), len(signs))
    return arr * np.asarray(signs)


def nondominated_fronts(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Front index of each point by non-dominated sorting; 0 = no point dominates it.

    Deb et al., "A Fast and Elitist Multiobjective Genetic Algorithm: NSGA-II", IEEE TEC
    2002, sec. III-A: front 0 is the non-dominated set, front k+1 the non-dominated set of
    what is left without fronts 0..k. ``a`` dominates ``b``: no worse in every objective,
    better in one. Equal points share a front.
    """
    if not points:
        return []
    loss = _losses(points, directions)
    le = (loss[:, None, :] <= loss[None, :, :]).all(axis=2)
    lt = (loss[:, None, :] < loss[None, :, :]).any(axis=2)
    dominates = le & lt  # [i, j]: i dominates j
    fronts = np.full(len(points), -1)
    left = np.ones(len(points), dtype=bool)
    k = 0
    while left.any():
        beaten = dominates[left][:, left].any(axis=0)  # dominated by a point still left
        idx = np.flatnonzero(left)[~beaten]
        fronts[idx] = k
        left[idx] = False
        k += 1
    return [int(f) for f in fronts]


def rung_continues(
    point: Sequence[float],
    recorded: Sequence[Sequence[float]],
    directions: Sequence[str],
    eta: int,
) -> bool:
    """MO-ASHA's rule at one rung: does a trial with ``point`` there go on?

    ``recorded``: the points of every other trial at this rung (the reported value at the
    rung's budget and the trial's cost objectives, in objective order). With
    ``n = len(recorded) + 1``, the trial goes on iff fewer than ``max(1, n // eta)`` recorded
    points lie in strictly better non-dominated fronts than its own (Schmucker et al. 2021,
    sec. 3: ASHA's "top 1/eta" with the ranking by non-dominated sorting; the first trial at
    a rung always goes on, as in ASHA, Li et al. 2020, Alg. 2, and Optuna's
    ``SuccessiveHalvingPruner``). With one objective the front index is the rank among
    distinct values, so this is ASHA's rule: go on iff within the top ``max(1, n // eta)``,
    ties going on.
    """
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ValueError(f"eta={eta!r} must be an integer >= 2")
    fronts = nondominated_fronts([*recorded, point], directions)
    mine = fronts[-1]
    better = sum(1 for f in fronts[:-1] if f < mine)
    return better < max(1, len(fronts) // eta)


# ---------------------------------------------------------------- a running trial


class RungReporter:
    """The ``report`` callable of one running trial under the rung rule.

    ``objectives``: the trial's objective vector with any value in slot ``index`` (the
    estimator's objective; the other slots are the trial's costs, known before training).
    Each call records the value at every rung budget reached and not yet recorded (one user
    attribute write), then applies ``rung_continues`` at the highest of them below
    ``max_budget`` against every other trial of ``source`` (default: the trial's own study)
    that has a point at that rung; reaching ``max_budget`` never stops a trial.

    ``source`` is where all trials of the search are read: the storage study. In the
    local-sampler mode the running trial lives in an in-memory study and is not in
    ``source``; on a shared storage it is, and is left out of its own comparison.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        fidelity: FidelityConfig,
        directions: Sequence[str],
        objectives: Sequence[float],
        index: int,
        source: optuna.Study | None = None,
    ) -> None:
        if not 0 <= index < len(objectives) or len(objectives) != len(directions):
            raise ValueError(
                f"index={index} must name one of {len(objectives)} objectives "
                f"(directions={list(directions)!r})"
            )
        self.trial = trial
        self.fidelity = fidelity
        self.directions = list(directions)
        self.objectives = tuple(float(v) for v in objectives)
        self.index = index
        self.source = trial.study if source is None else source
        self.max_budget = float(fidelity.max_budget)
        self.rungs = fidelity.rungs()
        self.values: dict[float, float] = {}  # rung budget -> reported value
        self.stopped_at: float | None = None

    def point(self, value: float) -> tuple[float, ...]:
        p = list(self.objectives)
        p[self.index] = float(value)
        return tuple(p)

    def __call__(self, value: float, step: float) -> None:
        reached = [b for b in self.rungs if b <= step * (1 + 1e-9) and b not in self.values]
        if not reached:
            return
        for b in reached:
            self.values[b] = float(value)
        write_rung_points(self.trial, {b: self.point(v) for b, v in self.values.items()})
        rung = max(b for b in reached)
        if rung >= self.max_budget:
            return
        others = self.recorded_at(rung)
        if not rung_continues(self.point(value), others, self.directions, self.fidelity.eta):
            self.stopped_at = rung
            raise optuna.TrialPruned(
                f"stopped at budget {rung:g}: value {value:.6g} is not in the top "
                f"1/{self.fidelity.eta} of {len(others) + 1} trials at that rung"
            )

    def recorded_at(self, rung: float) -> list[tuple[float, ...]]:
        """Points at ``rung`` of every other trial of ``source`` (FAIL trials left out: a
        retried trial's copy carries the same values)."""
        me = self.trial.number if self.source is self.trial.study else None
        out = []
        for t in self.source.get_trials(deepcopy=False):
            if t.number == me or t.state == TrialState.FAIL:
                continue
            p = rung_points(t).get(rung)
            if p is not None and len(p) == len(self.directions):
                out.append(p)
        return out
