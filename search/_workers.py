"""``python -m search run --workers N``: N local processes on one study and its budget.

Each worker is a spawned process running ``run_study`` on the shared storage (the global
budget, heartbeats and retries are ``search._budget``'s and ``search._storage``'s). This
process makes the study and its MLflow parent run once before any worker starts, shows the
progress, and writes the results when all have exited.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.study import Study
from tqdm import tqdm

from search._budget import WORKER_INDEX_ENV, GlobalBudget
from search._config import ConfigError, ExperimentConfig, parse_config
from search._mlflow import MlflowTarget, mlflow_reachable, parent_params, sync
from search._run import RunResult, run_study
from search._study import create_or_load_study
from search._user_estimator import user_estimator

log = logging.getLogger("search")


def _worker_main(cfg_dict: dict[str, Any], source: str, index: int) -> None:
    """One local worker (a spawned process): the same loop as a single ``search run``."""
    # A session of its own: Ctrl-C in the terminal reaches the parent only, which passes it on
    # once (a second one would abort this worker in the middle of its trial).
    with contextlib.suppress(OSError):
        os.setsid()
    os.environ[WORKER_INDEX_ENV] = str(index)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = parse_config(cfg_dict, source=source)
    result = run_study(cfg, progress=False, write_artifacts=False, final_sync=False)
    sys.exit(130 if result.interrupted else 0)


def run_workers(cfg: ExperimentConfig, n_workers: int, *, progress: bool = True) -> RunResult:
    """N local processes on one study; a ``RunResult`` of the whole run.

    The study (fingerprint check included) and its MLflow parent run are made here, once,
    before any worker starts; then N spawned processes run ``run_study`` on the shared storage
    under the global budget; when all have exited this process writes the results, logs what
    MLflow lacks (no worker is writing any more, so this cannot log a trial twice) and closes
    the parent run. Ctrl-C stops every worker after its running trial.
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ConfigError(f"--workers={n_workers!r} must be an integer >= 1")
    if n_workers == 1:
        return run_study(cfg, progress=progress)
    user_estimator(cfg.estimator, seed=cfg.seed)  # a broken user function fails before any work
    study = create_or_load_study(cfg)
    mlflow_error = _open_mlflow_parent(cfg, study) if cfg.mlflow.enabled else None
    if mlflow_error is not None:  # keep searching; `sync-mlflow` logs it all later
        cfg = cfg.with_overrides(mlflow=False)
    interrupted = _run_processes(cfg, study, n_workers, progress)
    # The finish, from this one process: results and parent artifacts, then what MLflow lacks
    # (trials a killed worker had not flushed); no worker writes any more, so nothing is logged
    # twice. It also runs what is left (the retry of a killed worker's trial) unless Ctrl-C.
    final_cfg = cfg
    if interrupted:  # run no more trials: a budget of what is there already
        done = GlobalBudget(cfg.trials).status(study).done
        final_cfg = cfg.with_overrides(trials=max(done, 1))
    result = run_study(final_cfg, progress=False, final_sync=False)
    if result.mlflow_parent_run_id is not None and result.mlflow_error is None:
        target = MlflowTarget.of(cfg)
        try:
            sync(
                study,
                tracking_uri=target.tracking_uri,
                experiment_name=target.experiment_name,
                objective_names=[o.name for o in cfg.objectives],
                artifact_root=target.artifact_root,
            )
        except Exception as exc:
            mlflow_error = (
                f"MLflow sync at {target.tracking_uri} failed: {type(exc).__name__}: {exc}"
            )
    return dataclasses.replace(
        result,
        interrupted=interrupted or result.interrupted,
        mlflow_error=mlflow_error or result.mlflow_error,
    )


def _open_mlflow_parent(cfg: ExperimentConfig, study: Study) -> str | None:
    """Make the study's parent run before the workers start; None, or why MLflow is off."""
    target = MlflowTarget.of(cfg)
    error = mlflow_reachable(target.tracking_uri)
    if error is not None:
        return error
    try:
        target.view(cfg.study_name).ensure_parent(study, parent_params(cfg, cfg.storage_url))
    except Exception as exc:
        return f"MLflow at {target.tracking_uri} failed: {type(exc).__name__}: {exc}"
    return None


def _run_processes(cfg: ExperimentConfig, study: Study, n_workers: int, progress: bool) -> bool:
    """Start the workers, wait for them all; True when Ctrl-C (or SIGTERM) stopped them."""
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(cfg.to_dict(), cfg.source, i), daemon=False)
        for i in range(n_workers)
    ]
    forward = _ForwardInterrupt(procs)
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        _watch(study, procs, cfg.trials, progress)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    bad = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode not in (0, 130)]
    if bad:
        log.warning(
            "workers %s exited abnormally (exit codes %s); their running trials are failed by "
            "the heartbeat and retried",
            [i for i, _ in bad],
            [c for _, c in bad],
        )
    return forward.received


class _ForwardInterrupt:
    """A signal handler that passes Ctrl-C (or SIGTERM) on to every running worker."""

    def __init__(self, procs: Sequence[Any]) -> None:
        self.procs = procs
        self.received = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = True
        for p in self.procs:
            if p.pid is not None and p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)  # each stops after its running trial


def _watch(study: Study, procs: Sequence[Any], total: int, progress: bool) -> None:
    """Wait for the workers, showing the study's progress (read from the shared storage)."""
    bar = None
    if progress:
        bar = tqdm(total=total, unit="trial", dynamic_ncols=True, desc=f"{len(procs)} workers")
    try:
        while any(p.exitcode is None for p in procs):
            for p in procs:
                p.join(timeout=1.0 / len(procs))
            if bar is not None:
                bar.n = min(GlobalBudget(total).status(study).done, total)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
