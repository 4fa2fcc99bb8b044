"""The run loop: a study, the per-trial evaluator, the front, observers; then the results.

``run_study(config)`` is a library function: the CLI calls it, and so does each worker
process on a shared storage. Trials already finished in the storage count against the
budget, so the same call continues an interrupted run and N workers on one storage share one
budget.
"""

from __future__ import annotations

import datetime
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search._budget import budget_reached, done_trials, optimize_shared, reseed_for_worker
from search._config import ExperimentConfig
from search._evaluate import TrialEvaluator
from search._front import FrontTracker, pareto_trials
from search._observers import CallbackObserver, MlflowObserver, ProgressBar, TrialObserver
from search._results import write_results
from search._storage import StorageError, close_storage, open_storage
from search._study import create_or_load_study, make_sampler

log = logging.getLogger("search")

# One architecture that breaks the estimator (torch raises RuntimeError; a user function's
# exception arrives as EstimatorCallError, a RuntimeError) is a FAIL trial, not the end of the
# search. A FAIL trial does not count against the budget.
CAUGHT_IN_TRIALS = (RuntimeError, FloatingPointError)
# An estimator that raised this many times in a row (no call returning in between) is broken
# rather than unlucky with some architectures: the run stops instead of failing on and on.
ESTIMATOR_FAILURES_IN_A_ROW = 10


@dataclass(frozen=True)
class RunResult:
    study_name: str
    storage: str
    n_finished: int
    n_feasible: int
    pareto: tuple[int, ...]  # trial numbers of the feasible Pareto front
    hypervolume: float
    interrupted: bool
    elapsed_s: float
    estimator_calls: int
    run_dir: str
    mlflow_parent_run_id: str | None = None
    mlflow_error: str | None = None
    rejections: Mapping[str, int] = field(default_factory=dict)
    closest: Mapping[str, float] = field(default_factory=dict)  # normalised: value/limit - 1
    artifacts: tuple[str, ...] = ()
    n_before: int = 0  # trials already finished in the storage when this run started
    estimator_failures: int = 0  # this run's trials that failed because the estimator raised
    estimator_first_error: str | None = None  # the first such traceback's last line
    estimator_gave_up: bool = False  # stopped after ESTIMATOR_FAILURES_IN_A_ROW failures

    def estimator_failure_note(self) -> str:
        """How many trials the estimator failed, and why the first did; "" when none."""
        if not self.estimator_failures:
            return ""
        note = (
            f"{self.estimator_failures} trial(s) failed in the estimator (first: "
            f"{self.estimator_first_error}); their tracebacks are in the trial records "
            "(estimator_error) and their MLflow child runs"
        )
        if self.estimator_gave_up:
            note += (
                f"; stopped after {ESTIMATOR_FAILURES_IN_A_ROW} failures in a row: fix the "
                "estimator, then the same command continues"
            )
        return note

    n_stopped: int = 0  # of n_finished: stopped at a rung budget ([fidelity]), PRUNED

    def budget_note(self, trials: int) -> str:
        """Why nothing ran: the budget counts every finished trial in the storage."""
        if self.n_before < trials:
            return ""
        return (
            f"nothing to run: study {self.study_name!r} already has {self.n_before} finished "
            f"trials and the budget is --trials {trials} (it counts every finished trial in "
            f"the storage); --trials M with M > {self.n_before} runs M - {self.n_before} more"
        )

    def no_feasible_message(self, cfg: ExperimentConfig) -> str:
        """Which constraint rejected most candidates, and the closest values seen."""
        if self.n_feasible or not self.rejections:
            return ""
        limits = {c.name: c.limit for c in cfg.constraints}
        worst = max(self.rejections, key=lambda k: self.rejections[k])
        lines = [
            f"no candidate met the constraints in {self.n_finished} trials; "
            f"{worst!r} rejected the most ({self.rejections[worst]} of {self.n_finished})."
        ]
        for k in sorted(self.closest, key=lambda k: -self.rejections.get(k, 0)):
            best = (self.closest[k] + 1.0) * limits[k]
            lines.append(
                f"  {k}: limit {limits[k]:g}, closest seen {best:.4g} "
                f"({self.closest[k] * 100:+.1f} % of the limit), "
                f"rejected {self.rejections.get(k, 0)}"
            )
        return "\n".join(lines)


class _Stop:
    """SIGINT: finish the running trial, then stop (a second Ctrl-C aborts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: stopping after the running trial (Ctrl-C again to abort)")

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def run_study(
    cfg: ExperimentConfig,
    *,
    estimator: Any | None = None,
    progress: bool = True,
    write_artifacts: bool = True,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    final_sync: bool = True,
    local_sampler: bool = False,
    timeout_s: float | None = None,
) -> RunResult:
    """Run (or continue) the study of ``cfg`` until ``cfg.trials`` trials are done.

    ``estimator``: an object with ``score(arch) -> float`` (default: built from the config).
    With several workers on one storage pass ``final_sync=False`` to all but one (the final
    sync re-reads MLflow and logs what is missing, which races with a worker still writing).

    ``local_sampler=True`` (one process only; the CLI sets it without ``--workers``): the
    sampler works on an in-memory copy of the study and each finished trial is written to the
    storage as one record (``study.add_trial``) instead of about thirty (one per sampled
    choice): the storage still holds every finished trial the moment it ends, and a running
    trial is never in it.

    ``timeout_s``: no new trial starts after this many seconds of wall-clock time (the running
    one finishes), so searches can be compared at equal time as well as at equal trials.
    """
    if timeout_s is not None and not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
    t_start = time.perf_counter()
    evaluator = TrialEvaluator(cfg, estimator)  # a broken user function fails here, first
    run_dir = _make_run_dir(cfg)
    storage = open_storage(cfg.storage_url)
    study = create_or_load_study(cfg, storage)
    front = FrontTracker.of_trials(cfg, study.get_trials(deepcopy=False))
    n_before = front.n_finished
    evaluator.rungs_from = study  # the rung rule compares with every worker's trials
    mlflow = MlflowObserver.start(cfg, study, front)
    observers: list[TrialObserver] = [ProgressBar(cfg.trials, front)] if progress else []
    observers += [CallbackObserver(on_trial)] if on_trial is not None else []
    observers.append(mlflow)
    stop = _Stop()

    def gave_up() -> bool:
        return evaluator.counters.failures_in_a_row >= ESTIMATOR_FAILURES_IN_A_ROW

    def should_stop() -> bool:
        timed_out = timeout_s is not None and time.perf_counter() - t_start >= timeout_s
        return stop.requested or timed_out or gave_up()

    def after_trial(running: optuna.Study, t: FrozenTrial) -> None:
        if running is not study:  # local sampler: the finished trial goes in as one write
            study.add_trial(t)
            t = study.get_trials(deepcopy=False)[-1]
        front.add(t)
        for o in observers:
            o.on_trial(t)
        # The budget counts finished trials in the storage (all workers); checked here
        # rather than by a second callback, since Optuna deep-copies the trial per callback.
        if should_stop() or budget_reached(study, cfg.trials):
            running.stop()

    started = datetime.datetime.now()
    optimize = _optimize_local if local_sampler else _optimize_shared
    with stop:
        try:
            optimize(cfg, study, evaluator, after_trial, should_stop, front.n_finished)
        finally:
            close_storage(storage)  # held trial data out, fsync
            for o in observers:
                o.close()
    done = done_trials(study)  # from the storage: other workers may have added trials
    final = FrontTracker.of_trials(cfg, done)
    artifacts = write_results(study, cfg, cfg.results_dir) if write_artifacts and done else ()
    mlflow.finish(
        study, final, since=started, final_sync=final_sync, interrupted=stop.requested,
        artifacts=artifacts if write_artifacts else None,
    )  # fmt: skip
    return RunResult(
        study_name=cfg.study_name,
        storage=cfg.storage_url,
        n_finished=len(done),
        n_feasible=final.n_feasible,
        pareto=tuple(t.number for t in pareto_trials(study)) if done else (),
        hypervolume=final.hv,
        interrupted=stop.requested,
        elapsed_s=time.perf_counter() - t_start,
        estimator_calls=evaluator.counters.estimator_calls,
        run_dir=str(run_dir),
        mlflow_parent_run_id=mlflow.parent_run_id,
        mlflow_error=mlflow.error,
        rejections=dict(final.rejects.count),
        closest=dict(final.rejects.closest),
        artifacts=artifacts,
        n_before=n_before,
        estimator_failures=evaluator.counters.estimator_failures,
        estimator_first_error=evaluator.counters.first_error,
        estimator_gave_up=gave_up(),
        n_stopped=final.n_stopped,
    )


AfterTrial = Callable[[optuna.Study, FrozenTrial], None]


def _optimize_local(
    cfg: ExperimentConfig, study: optuna.Study, evaluator: TrialEvaluator,
    after_trial: AfterTrial, should_stop: Callable[[], bool], n_done: int,
) -> None:  # fmt: skip
    """One process: the sampler works on an in-memory copy of the study's finished trials."""
    remaining = cfg.trials - n_done
    if remaining <= 0:
        return
    work = optuna.create_study(directions=cfg.directions, sampler=make_sampler(cfg))
    work.add_trials([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
    work.optimize(
        evaluator,
        n_trials=remaining,
        callbacks=[after_trial],
        catch=CAUGHT_IN_TRIALS,
        gc_after_trial=False,
        show_progress_bar=False,
    )


def _optimize_shared(
    cfg: ExperimentConfig, study: optuna.Study, evaluator: TrialEvaluator,
    after_trial: AfterTrial, should_stop: Callable[[], bool], n_done: int,
) -> None:  # fmt: skip
    """Shared storage: every worker's trials are in it while they run, with heartbeats.

    The budget of ``cfg.trials`` is global; a worker whose share is done waits for the others'
    running trials, so that a killed one's trial is retried.
    """
    reseed_for_worker(study.sampler, cfg.storage_url)
    optimize_shared(study, evaluator, total_trials=cfg.trials, callbacks=[after_trial],
                    catch=CAUGHT_IN_TRIALS, should_stop=should_stop)  # fmt: skip


def _make_run_dir(cfg: ExperimentConfig) -> Path:
    run_dir = Path(cfg.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"run_dir={cfg.run_dir!r} cannot be created: {e.strerror}") from None
    return run_dir
