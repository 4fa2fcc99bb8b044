"""The per-trial callable: sample, cost on every target, constrain, then (maybe) estimate.

Per trial:

1. ``arch = searchspace.sample(trial, space)``;
2. ``costmodel.estimate`` on every hardware target (``ExperimentConfig.cost_reports``);
3. ``trial.set_constraint`` for each constraint (``value / limit - 1``); a candidate that
   breaks one returns its cost objectives with a neutral accuracy at once: no estimator work
   is spent on it;
4. otherwise the accuracy estimator scores it; with a ``[fidelity]`` table it trains under a
   ``RungReporter`` (``search._fidelity``), which may stop it at a rung budget: the trial
   ends PRUNED (``optuna.TrialPruned`` passes through).

The trial's ``TrialRecord`` is written once, at the end, even when scoring fails or stops;
a failed one keeps the end of the traceback (``estimator_error``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import optuna

import searchspace
from search._config import ExperimentConfig
from search._estimators import AccuracyEstimator, EstimatorConfig, make_estimator
from search._fidelity import RungReporter
from search._objectives import constraint_value, cost_summary, cost_value
from search._record import TrialRecord
from search._user_estimator import error_text, user_estimator


@dataclass
class Counters:
    trials: int = 0
    estimator_calls: int = 0
    rejected: int = 0
    estimator_failures: int = 0  # estimator calls that raised (their trials FAIL)
    failures_in_a_row: int = 0  # since the last estimator call that returned
    first_error: str | None = None  # the last line of the first failure's traceback
    stopped: int = 0  # stopped at a rung budget (PRUNED)

    def failed(self, traceback_text: str) -> None:
        self.estimator_failures += 1
        self.failures_in_a_row += 1
        if self.first_error is None:
            lines = [line for line in traceback_text.splitlines() if line.strip()]
            self.first_error = lines[-1].strip() if lines else "?"


class TrialEvaluator:
    """``study.optimize``'s objective for one experiment.

    ``estimator`` (an object with ``score(arch) -> float``, and ``report=`` with a
    ``[fidelity]`` table) is built from the config on first use when not given, so a search
    whose candidates are all rejected never loads its data; but a user function
    (``[estimator] function``) is loaded and checked here, so that a broken one fails before
    any trial. ``rungs_from``: the study whose trials the rung rule compares against (the
    storage study; default: the trial's own).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        estimator: Any | None = None,
        rungs_from: optuna.Study | None = None,
    ) -> None:
        self.cfg = cfg
        self.rungs_from = rungs_from
        self.space = searchspace.load_space(cfg.space)
        if estimator is None:
            estimator = user_estimator(
                cfg.estimator, seed=cfg.seed, has_fidelity=cfg.fidelity is not None
            )
        self._estimator = estimator
        self.counters = Counters()
        accuracy = [o.name for o in cfg.objectives if o.metric.metric == "accuracy"]
        self.needs_accuracy = bool(accuracy)
        # A rejected candidate's accuracy: the hypervolume box's worst, so it adds nothing.
        self.neutral_accuracy = cfg.hv_bounds[accuracy[0]][1] if accuracy else 0.0

    def estimator(self, arch: searchspace.Architecture) -> AccuracyEstimator:
        if self._estimator is None:
            ecfg = EstimatorConfig.from_dict({"seed": self.cfg.seed, **self.cfg.estimator})
            # space=: proxy_rank ranks against a reference population drawn once from the
            # space (seeded), so a trial's score does not depend on the order of trials.
            self._estimator = make_estimator(
                ecfg, tuple(arch.input_shape), arch.num_classes, space=self.space
            )
        return self._estimator

    def __call__(self, trial: optuna.Trial) -> list[float]:
        cfg = self.cfg
        self.counters.trials += 1
        arch = searchspace.sample(trial, self.space)
        reports = cfg.cost_reports(arch)
        primary = cfg.primary.name
        raw = {c.name: cost_value(c.metric, reports, primary) for c in cfg.constraints}
        cons = {c.name: constraint_value(raw[c.name], c.limit) for c in cfg.constraints}
        feasible = all(v <= 0 for v in cons.values())
        for k, v in cons.items():
            trial.set_constraint(k, v)
        scored = feasible and self.needs_accuracy
        accuracy = self.neutral_accuracy
        estimator_s: float | None = None
        metrics: dict[str, float] = {}
        error: str | None = None
        values = [
            accuracy if o.metric.metric == "accuracy" else cost_value(o.metric, reports, primary)
            for o in cfg.objectives
        ]
        reporter = self.reporter(trial, values) if scored else None
        try:
            if scored:
                est = self.estimator(arch)
                t0 = time.perf_counter()
                self.counters.estimator_calls += 1
                try:
                    accuracy = float(
                        est.score(arch) if reporter is None else est.score(arch, report=reporter)
                    )
                finally:  # a stopped or failed trial's seconds count too
                    estimator_s = time.perf_counter() - t0
                metrics = dict(getattr(est, "last_values", {}))
                self.counters.failures_in_a_row = 0
            elif not feasible:
                self.counters.rejected += 1
        except optuna.TrialPruned:  # stopped at a rung budget: not a failure
            self.counters.stopped += 1
            raise
        except Exception as e:
            error = error_text(e)
            self.counters.failed(error)
            raise
        finally:  # one storage write for everything we know, even if scoring failed
            TrialRecord(
                arch=arch.to_string(),
                costs={name: cost_summary(r) for name, r in reports.items()},
                feasible=feasible,
                estimator_skipped=not scored,
                estimator_s=estimator_s,
                estimator_metrics=MappingProxyType(metrics),
                estimator_error=error,
                rungs=tuple(sorted(reporter.values.items())) if reporter is not None else (),
                stopped_at_budget=reporter.stopped_at if reporter is not None else None,
            ).write(trial)
        return [accuracy if o.metric.metric == "accuracy" else v
                for o, v in zip(cfg.objectives, values, strict=True)]  # fmt: skip

    def reporter(self, trial: optuna.Trial, values: list[float]) -> RungReporter | None:
        """The rung reporter of ``trial`` under the config's ``[fidelity]``; None without one."""
        if self.cfg.fidelity is None:
            return None
        index = next(i for i, o in enumerate(self.cfg.objectives) if o.metric.metric == "accuracy")
        return RungReporter(
            trial, self.cfg.fidelity, self.cfg.directions, values, index, source=self.rungs_from
        )
