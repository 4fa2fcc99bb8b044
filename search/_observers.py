"""What follows a run trial by trial: the progress bar, the caller's callback, the MLflow view.

Each observer is told of every trial the run finishes (``on_trial``, after the run's
``FrontTracker`` has counted it) and closed once the search stops (``close``). MLflow is a
view: when it fails, the observer warns once, stops writing, and the search goes on
(``python -m search sync-mlflow`` logs the rest later).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial
from tqdm import tqdm

from search._budget import DONE_STATES, is_surplus_trial, other_workers
from search._config import ExperimentConfig
from search._front import FrontTracker
from search._mlflow import (
    FINISHED_STATES,
    MlflowTarget,
    MlflowView,
    child_record,
    mlflow_reachable,
    parent_params,
    summary_metrics,
)
from search._results import chosen_trials, log_models

log = logging.getLogger("search")


class TrialObserver(Protocol):
    def on_trial(self, trial: FrozenTrial) -> None:
        """A trial finished (any state) and the run's front has counted it."""

    def close(self) -> None:
        """The search stopped (budget met, Ctrl-C or an error)."""


class ProgressBar:
    """A tqdm bar of done trials, with the feasible count, front size and hypervolume."""

    def __init__(self, total: int, front: FrontTracker) -> None:
        self.front = front
        self.bar = tqdm(
            total=total, initial=front.n_finished, unit="trial", dynamic_ncols=True, leave=True
        )

    def on_trial(self, trial: FrozenTrial) -> None:
        f = self.front
        self.bar.n = f.n_finished
        # "stopped": trials the rung rule ended early ([fidelity]); shown once there are any
        stopped = {"stopped": f.n_stopped} if f.n_stopped else {}
        self.bar.set_postfix(
            feasible=f.n_feasible, **stopped, pareto=len(f.front), hv=f"{f.hv:.4f}", refresh=False
        )
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class CallbackObserver:
    """The caller's ``on_trial(trial)``."""

    def __init__(self, fn: Callable[[FrozenTrial], None]) -> None:
        self.fn = fn

    def on_trial(self, trial: FrozenTrial) -> None:
        self.fn(trial)

    def close(self) -> None:
        pass


class MlflowObserver:
    """Child runs in batches and the parent's step metrics (hypervolume, feasible, front size).

    A batch is written every ``mlflow.flush_every_trials`` trials or ``mlflow.flush_every_s``
    seconds, whichever comes first, and when the search stops.
    """

    def __init__(
        self, cfg: ExperimentConfig, front: FrontTracker, view: MlflowView | None,
        error: str | None = None,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.front = front
        self.view = view
        self.error = error
        self._pending: list[FrozenTrial] = []
        self._steps: list[tuple[str, float, int]] = []
        self._last_flush = time.monotonic()

    @classmethod
    def start(
        cls, cfg: ExperimentConfig, study: optuna.Study, front: FrontTracker
    ) -> MlflowObserver:
        """Open the study's parent run; an observer that does nothing when MLflow is off or down."""
        if not cfg.mlflow.enabled:
            return cls(cfg, front, None)
        target = MlflowTarget.of(cfg)
        view = target.view(cfg.study_name)
        try:
            down = mlflow_reachable(target.tracking_uri)
            if down is not None:
                raise ConnectionError(down)
            view.ensure_parent(study, parent_params(cfg, cfg.storage_url))
        except Exception as e:
            return cls(cfg, front, None, _mlflow_down(e))
        return cls(cfg, front, view)

    @property
    def parent_run_id(self) -> str | None:
        return self.view.parent_run_id if self.view is not None else None

    def on_trial(self, trial: FrozenTrial) -> None:
        if self.view is None:
            return
        # A surplus trial is a race artefact pruned before any work: MLflow never shows it.
        if trial.state in FINISHED_STATES and not is_surplus_trial(trial):
            self._pending.append(trial)
        if trial.state in DONE_STATES:
            step = self.front.n_finished
            self._steps += [
                ("hypervolume", self.front.hv, step),
                ("n_feasible", self.front.n_feasible, step),
                ("pareto_size", len(self.front.front), step),
            ]
        self._flush()

    def close(self) -> None:
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        if self.view is None or not (self._pending or self._steps):
            return
        due = len(self._pending) >= self.cfg.mlflow.flush_every_trials
        if not (
            force or due or time.monotonic() - self._last_flush >= self.cfg.mlflow.flush_every_s
        ):
            return
        try:
            names = [o.name for o in self.cfg.objectives]
            front = set(self.front.front)
            self.view.write_children(
                [child_record(t, names, front, self.cfg.study_name) for t in self._pending]
            )
            if self._steps:
                self.view.log_parent_metrics(self._steps)
            self._pending.clear()
            self._steps.clear()
        except Exception as e:
            self.error = _mlflow_down(e)
            self.view = None
        self._last_flush = time.monotonic()

    def finish(
        self,
        study: optuna.Study,
        final: FrontTracker,
        *,
        since: datetime.datetime,
        final_sync: bool,
        interrupted: bool,
        artifacts: Sequence[str] | None,
    ) -> None:
        """After the search: log what MLflow lacks, then (``artifacts`` given) the run summary.

        ``final_sync``: re-read the study and log what is missing, unless other workers ran
        trials since ``since`` (they may still be writing; ``sync-mlflow`` does it later).
        ``artifacts``: result files under ``cfg.results_dir`` to attach to the parent run,
        with its final metrics and models; the parent run is then closed.
        """
        if self.view is None:
            return
        try:
            others = other_workers(study, since) if final_sync else set()
            if others:
                log.warning(
                    "%d other worker(s) shared this study: once all are done, run `python -m "
                    "search sync-mlflow --study %s --storage ...` to log what a killed worker "
                    "left out", len(others), self.cfg.study_name,
                )  # fmt: skip
            if final_sync and not others:
                self.view.log_missing(study, [o.name for o in self.cfg.objectives])
            if artifacts is not None:
                self._log_summary(study, final, artifacts)
                self.view.finish_parent("KILLED" if interrupted else "FINISHED")
        except Exception as e:
            self.error = _mlflow_down(e)

    def _log_summary(
        self, study: optuna.Study, final: FrontTracker, artifacts: Sequence[str]
    ) -> None:
        """Final metrics, the result files and ``mlflow.pytorch.log_model`` for chosen ones."""
        assert self.view is not None and self.view.parent_run_id is not None
        n = final.n_finished
        summary = summary_metrics(study, self.cfg)
        self.view.log_parent_metrics(
            [(k, v, n) for k, v in summary.items()]
            + [("final_hypervolume", summary["hypervolume"], n),
               ("final_n_feasible", final.n_feasible, n),
               ("final_pareto_size", summary["pareto_size"], n), ("n_trials", n, n)],
            later_by_ms=1,
        )  # fmt: skip
        self.view.log_parent_artifacts(artifacts, Path(self.cfg.results_dir))
        k = self.cfg.mlflow.log_models
        if k > 0:
            log_models(self.view.tracking_uri, self.view.parent_run_id,
                       chosen_trials(study, self.cfg, k))  # fmt: skip


def _mlflow_down(e: Exception) -> str:
    msg = f"MLflow logging stopped ({type(e).__name__}: {e}); trials are kept in the Optuna "
    msg += "storage: run `python -m search sync-mlflow --study ...` later to log them"
    log.warning(msg)
    return msg
