"""Many workers on one study: storages with heartbeats, a global trial budget, local workers.

Coordination is Optuna's own (issue 6: no home-made coordination): every worker opens the
same storage (PostgreSQL through ``RDBStorage`` across machines, the journal file on one host)
and runs ``study.optimize``; a SIGKILLed worker's trial stops sending heartbeats, the next
worker to ask for a trial fails it (``optuna.storages.fail_stale_trials``) and
``RetryHeartbeatStaleTrialCallback`` enqueues a copy with the parameters it had stored (the
journal holds a running trial's parameters until its next write, so a retry may sample afresh).

The journal storage has no heartbeat in Optuna 5.0, so ``enable_heartbeat`` gives it Optuna's
``BaseHeartbeat`` interface (``JournalHeartbeat``): the heartbeat is a trial system attribute
holding the wall-clock time (one host, one clock), written every ``heartbeat_interval`` s.

The budget is global and exact, counted as ``search run`` counts it: COMPLETE and PRUNED trials
(done) plus RUNNING and WAITING ones (about to be done); a FAIL trial does not count, so the
retry of a killed worker's trial (WAITING) takes its place. Workers stop asking for trials once
the count reaches ``total``; two workers that ask at the same moment can still each create one
trial too many (``MaxTrialsCallback`` has the same race). Such a *surplus* trial sees before any
work that ``total`` counted trials have smaller numbers than its own, is marked PRUNED with the
system attribute ``roofnas:surplus`` and is not counted. So ``--trials 100`` on any number of
workers ends with exactly 100 done trials, plus the FAIL trials that were retried and, rarely,
surplus trials that cost nothing. A worker whose budget is handed out stays until no trial of
the study is running or waiting, so that a retry of a killed worker's trial is always run.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStaleTrial
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState

__all__ = [
    "DEFAULT_GRACE_PERIOD_S",
    "DEFAULT_HEARTBEAT_INTERVAL_S",
    "DEFAULT_MAX_RETRY",
    "HEARTBEAT_ATTR",
    "SURPLUS_ATTR",
    "TEST_SLEEP_ENV",
    "WORKER_ATTR",
    "BudgetStatus",
    "GlobalBudget",
    "JournalHeartbeat",
    "counts_against_budget",
    "enable_heartbeat",
    "is_rdb_url",
    "is_surplus_trial",
    "mlflow_reachable",
    "open_rdb_storage",
    "open_storage",
    "optimize_shared",
    "other_workers",
    "reseed_for_worker",
    "run_workers",
    "worker_id",
]

DEFAULT_HEARTBEAT_INTERVAL_S = 10
DEFAULT_GRACE_PERIOD_S = 30  # three missed heartbeats
DEFAULT_MAX_RETRY = 3
HEARTBEAT_ATTR = "roofnas:heartbeat_s"  # time.time() of the last heartbeat (journal storage)
WORKER_ATTR = "roofnas:worker"  # "host:pid" of the process that ran the trial
SURPLUS_ATTR = "roofnas:surplus"  # a trial past the global budget, pruned before any work
# Test-only: seconds each trial sleeps before its objective, so that a test can SIGKILL a worker
# in the middle of a trial. Never set it in real runs.
TEST_SLEEP_ENV = "ROOFNAS_TEST_TRIAL_SLEEP_S"

_RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite", "oracle", "mssql")


def is_rdb_url(url: str) -> bool:
    """True for an SQLAlchemy URL (``postgresql://...``, ``sqlite:///...``); else a journal file."""
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    return scheme in _RDB_SCHEMES


def _with_driver(url: str) -> str:
    """``postgresql://`` with a driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; the ``postgres`` extra installs
    psycopg2, so name it when psycopg 3 is missing. ``postgres://`` (Heroku style) is accepted.
    """
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return f"postgresql+psycopg2{sep}{rest}"
    return f"postgresql{sep}{rest}"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} must be a positive integer (seconds)") from None
    if value < 1:
        raise ValueError(f"{name}={raw!r} must be a positive integer (seconds)")
    return value


class JournalHeartbeat(BaseHeartbeat):
    """Optuna's heartbeat protocol for a ``JournalStorage`` (workers on one host).

    Mixed into the class of a journal storage by ``enable_heartbeat``: the search's own
    ``search._storage.BatchingJournalStorage`` writes a system attribute at once, so a
    heartbeat is one append, and it carries the trial's held writes out with it.
    """

    heartbeat_interval: int
    grace_period: int | None
    heartbeat_stale_trial_callback: Callable[[Study, FrozenTrial], None] | None

    def record_heartbeat(self, trial_id: int) -> None:
        # Another worker may have failed this trial already (it was stale): then stay quiet.
        with contextlib.suppress(UpdateFinishedTrialError, KeyError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())  # type: ignore[attr-defined]

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        grace_s = self.grace_period or 2 * self.heartbeat_interval
        now = time.time()
        stale = []
        running = self.get_all_trials(  # type: ignore[attr-defined]
            study_id, deepcopy=False, states=(TrialState.RUNNING,)
        )
        for t in running:
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            # No heartbeat yet: like RDBStorage, never stale (its thread writes one at once).
            if beat is not None and now - float(beat) > grace_s:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[Study, FrozenTrial], None] | None:
        return self.heartbeat_stale_trial_callback


_HEARTBEAT_CLASSES: dict[type, type] = {}


def _heartbeat_settings(
    heartbeat_interval_s: int | None, grace_period_s: int | None, max_retry: int | None
) -> tuple[int, int, RetryStaleTrial]:
    interval = heartbeat_interval_s or _env_int(
        "ROOFNAS_HEARTBEAT_INTERVAL_S", DEFAULT_HEARTBEAT_INTERVAL_S
    )
    grace = grace_period_s or _env_int(
        "ROOFNAS_GRACE_PERIOD_S", max(DEFAULT_GRACE_PERIOD_S, 3 * interval)
    )
    if grace <= interval:
        raise ValueError(f"grace_period_s={grace} must exceed heartbeat_interval_s={interval}")
    retries = max_retry
    if retries is None:
        retries = _env_int("ROOFNAS_MAX_RETRY", DEFAULT_MAX_RETRY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # experimental in Optuna 5.0
        retry = RetryStaleTrial(max_retry=retries)
    return interval, grace, retry


def enable_heartbeat(
    storage: JournalStorage,
    *,
    heartbeat_interval_s: int | None = None,
    grace_period_s: int | None = None,
    max_retry: int | None = None,
) -> JournalStorage:
    """``storage`` (any ``JournalStorage``) with heartbeats and retries of stale trials.

    Returns the storage to use from now on (the same state in a subclass that mixes in
    ``JournalHeartbeat``). Defaults as in ``open_storage``. Idempotent: a storage that has
    heartbeats keeps its settings unless new ones are given.
    """
    if not isinstance(storage, JournalStorage):
        raise TypeError(f"storage={storage!r} must be a JournalStorage")
    given = (heartbeat_interval_s, grace_period_s, max_retry) != (None, None, None)
    if isinstance(storage, JournalHeartbeat) and not given:
        return storage
    interval, grace, retry = _heartbeat_settings(heartbeat_interval_s, grace_period_s, max_retry)
    cls = type(storage)
    if not isinstance(storage, JournalHeartbeat):
        if cls not in _HEARTBEAT_CLASSES:
            _HEARTBEAT_CLASSES[cls] = type(f"Heartbeat{cls.__name__}", (JournalHeartbeat, cls), {})
        # The same state in the subclass (its layout differs, so __class__ cannot be set).
        moved = object.__new__(_HEARTBEAT_CLASSES[cls])
        moved.__dict__.update(storage.__dict__)
        storage = moved
    hb: Any = storage
    hb.heartbeat_interval = interval
    hb.grace_period = grace
    hb.heartbeat_stale_trial_callback = retry
    return storage


def open_rdb_storage(
    url: str,
    *,
    heartbeat_interval_s: int | None = None,
    grace_period_s: int | None = None,
    max_retry: int | None = None,
) -> RDBStorage:
    """``RDBStorage`` for an SQLAlchemy URL, with heartbeats and retries of stale trials."""
    interval, grace, retry = _heartbeat_settings(heartbeat_interval_s, grace_period_s, max_retry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval
        try:
            return RDBStorage(
                _with_driver(url),
                heartbeat_interval=interval,
                grace_period=grace,
                heartbeat_stale_trial_callback=retry,
                # A worker may wait a long time in a trial: re-check pooled connections.
                engine_kwargs={"pool_pre_ping": True},
            )
        except Exception as exc:  # sqlalchemy/psycopg2 errors name no field: add one
            raise ValueError(f"storage={_redact(url)!r}: cannot open: {exc}") from exc


def open_storage(
    url: str | Path,
    *,
    heartbeat_interval_s: int | None = None,
    grace_period_s: int | None = None,
    max_retry: int | None = None,
) -> BaseStorage:
    """The study storage for ``url``, with heartbeats and retries of stale trials.

    ``url``: an SQLAlchemy URL (``postgresql://user@host:port/db`` for workers on several
    machines) or a journal file path (workers on one host; the search's own batching journal,
    ``search._storage``). Defaults come from the environment (ROOFNAS_HEARTBEAT_INTERVAL_S,
    ROOFNAS_GRACE_PERIOD_S, ROOFNAS_MAX_RETRY), else 10 s, 30 s and 3 retries.
    """
    kw: dict[str, Any] = dict(
        heartbeat_interval_s=heartbeat_interval_s, grace_period_s=grace_period_s,
        max_retry=max_retry,
    )  # fmt: skip
    url = str(url)
    if is_rdb_url(url):
        return open_rdb_storage(url, **kw)
    _heartbeat_settings(heartbeat_interval_s, grace_period_s, max_retry)  # bad values first
    if Path(url).is_dir():
        raise ValueError(f"storage={url!r} is a directory; give a journal file path")
    from search._storage import open_storage as open_search_storage

    try:
        storage = open_search_storage(url)
    except RuntimeError as exc:  # search._storage.StorageError names the path already
        raise ValueError(str(exc)) from exc
    assert isinstance(storage, JournalStorage)
    return enable_heartbeat(storage, **kw)


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


# ---------------------------------------------------------------------------------------------
# The global budget


def worker_id() -> str:
    """This process as a worker: "host:pid" (kept in each trial's ``roofnas:worker``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def other_workers(study: Study, since: datetime.datetime) -> set[str]:
    """Workers other than this process that ran trials of ``study`` finishing after ``since``.

    When there are any, a final MLflow sync from this worker could race with theirs (two
    processes logging the same missing trial), so ``run_study`` leaves it to ``sync-mlflow``.
    """
    me = worker_id()
    out = set()
    for t in study.get_trials(deepcopy=False):
        w = t.system_attrs.get(WORKER_ATTR)
        if w and w != me and (t.datetime_complete is None or t.datetime_complete >= since):
            out.add(str(w))
    return out


def is_surplus_trial(t: FrozenTrial) -> bool:
    """A trial a worker created past the global budget and pruned before any work."""
    return bool(t.system_attrs.get(SURPLUS_ATTR, False))


def counts_against_budget(t: FrozenTrial) -> bool:
    """Done (COMPLETE, PRUNED) or about to be (RUNNING, WAITING); FAIL and surplus do not."""
    if t.state == TrialState.PRUNED:
        return not is_surplus_trial(t)
    return t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


@dataclass(frozen=True)
class BudgetStatus:
    """Where a study stands against its global budget (counted over all workers)."""

    total: int
    counted: int  # trials that count against the budget (see counts_against_budget)
    done: int  # COMPLETE or PRUNED, surplus excluded
    running: int
    waiting: int

    @property
    def needs_trials(self) -> bool:
        """More trials should be asked for: budget left, or trials waiting (retries) to run."""
        return self.counted < self.total or self.waiting > 0

    @property
    def finished(self) -> bool:
        return not self.needs_trials and self.running == 0


class GlobalBudget:
    """``total`` trials for a study, shared by every worker (see the module docstring)."""

    def __init__(self, total: int) -> None:
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ValueError(f"trials={total!r} must be an integer >= 1")
        self.total = total

    def status(self, study: Study) -> BudgetStatus:
        counted = done = running = waiting = 0
        for t in study.get_trials(deepcopy=False):
            if counts_against_budget(t):
                counted += 1
            if t.state == TrialState.RUNNING:
                running += 1
            elif t.state == TrialState.WAITING:
                waiting += 1
            elif t.state == TrialState.COMPLETE or (
                t.state == TrialState.PRUNED and not is_surplus_trial(t)
            ):
                done += 1
        return BudgetStatus(self.total, counted, done, running, waiting)

    def is_surplus(self, study: Study, trial: Trial) -> bool:
        """True when ``total`` counted trials have smaller numbers than ``trial``."""
        if trial.number < self.total:
            # Numbers are dense from 0 (both storages number trials under a lock), so fewer
            # than ``total`` trials of any state come before this one: no read needed.
            return False
        earlier = 0
        for t in study.get_trials(deepcopy=False):
            if t.number < trial.number and counts_against_budget(t):
                earlier += 1
                if earlier >= self.total:
                    return True
        return False

    def callback(self, study: Study, trial: FrozenTrial) -> None:
        """An ``optimize`` callback: stop asking once the budget is handed out."""
        if not self.status(study).needs_trials:
            study.stop()

    def guard(self, objective: Callable[[Trial], Any]) -> Callable[[Trial], Any]:
        """``objective`` that first prunes surplus trials and records which worker ran it."""
        worker = worker_id()

        def guarded(trial: Trial) -> Any:
            trial.storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, worker)
            if self.is_surplus(trial.study, trial):
                trial.storage.set_trial_system_attr(trial._trial_id, SURPLUS_ATTR, True)
                with contextlib.suppress(RuntimeError):  # raised outside study.optimize
                    trial.study.stop()
                raise optuna.TrialPruned(f"past the global budget of {self.total} trials")
            sleep_s = os.environ.get(TEST_SLEEP_ENV)
            if sleep_s:  # test-only hook, see TEST_SLEEP_ENV
                time.sleep(float(sleep_s))
            return objective(trial)

        return guarded


def reseed_for_worker(sampler: optuna.samplers.BaseSampler, storage_url: str) -> bool:
    """Give this worker's sampler its own random stream; True when it did.

    Workers built from one config share its seed: with one stream each would propose the same
    random candidates (all of NSGA-II's first generation, TPE's startup trials) N times. So a
    local worker (``--workers``) and any process on an RDB storage (possibly one of several
    machines) reseed; a single process on the journal keeps the seed and stays reproducible.
    """
    if os.environ.get("ROOFNAS_WORKER_INDEX") is None and not is_rdb_url(storage_url):
        return False
    sampler.reseed_rng()
    return True


def optimize_shared(
    study: Study,
    objective: Callable[[Trial], Any],
    *,
    total_trials: int,
    callbacks: Sequence[Callable[[Study, FrozenTrial], None]] = (),
    catch: tuple[type[Exception], ...] = (),
    should_stop: Callable[[], bool] = lambda: False,
    poll_interval_s: float | None = None,
    on_wait: Callable[[BudgetStatus], None] | None = None,
) -> BudgetStatus:
    """Run trials of ``study`` until its global budget of ``total_trials`` is done.

    Safe to call from any number of processes on one storage. Returns early (the running trial
    finished) when ``should_stop()`` turns true, e.g. after Ctrl-C. While other workers still
    run trials this one waits, failing stale trials, so that a retry is never left behind.
    """
    budget = GlobalBudget(total_trials)
    guarded = budget.guard(objective)
    failed = 0

    def give_up(study: Study, trial: FrozenTrial) -> None:
        # An objective that fails every time (caught exceptions) must not loop for ever: stop
        # after as many failures as the budget has trials (a single run's bound on attempts).
        nonlocal failed
        if trial.state == TrialState.FAIL:
            failed += 1
            if failed >= total_trials:
                study.stop()

    all_callbacks = [*callbacks, budget.callback, give_up]
    storage = study._storage
    if poll_interval_s is None:
        interval = storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None
        poll_interval_s = float(min(interval or 2, 2))
    while not should_stop() and failed < total_trials:
        status = budget.status(study)
        if status.needs_trials:
            study.optimize(guarded, callbacks=all_callbacks, catch=catch, gc_after_trial=False)
            continue
        if status.running == 0:
            return status
        if on_wait is not None:
            on_wait(status)
        time.sleep(poll_interval_s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    return budget.status(study)


# ---------------------------------------------------------------------------------------------
# MLflow reachability


def mlflow_reachable(tracking_uri: str, timeout_s: float = 3.0) -> str | None:
    """None when ``tracking_uri`` can be used now; else why not.

    Only an HTTP tracking server is probed (GET /health): MLflow's client retries a refused
    connection for about four minutes per call (7 retries, backoff factor 2), so a run that
    starts while the server is down would wait that long before searching.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    import urllib.error
    import urllib.request

    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            if resp.status == 200:
                return None
            return f"MLflow server {tracking_uri} answered /health with HTTP {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"MLflow server {tracking_uri} is unreachable ({reason})"


# ---------------------------------------------------------------------------------------------
# Local worker processes


def _worker_main(cfg_dict: dict[str, Any], source: str, index: int) -> None:
    """One local worker (a spawned process): the same loop as a single ``search run``."""
    import logging

    from search._config import parse_config
    from search._run import run_study

    # A session of its own: Ctrl-C in the terminal reaches the parent only, which passes it on
    # once (a second one would abort this worker in the middle of its trial).
    with contextlib.suppress(OSError):
        os.setsid()
    os.environ["ROOFNAS_WORKER_INDEX"] = str(index)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = parse_config(cfg_dict, source=source)
    result = run_study(cfg, progress=False, write_artifacts=False, final_sync=False)
    sys.exit(130 if result.interrupted else 0)


def run_workers(cfg: Any, n_workers: int, *, progress: bool = True) -> Any:
    """``python -m search run --workers N``: N local processes on one study; a ``RunResult``.

    The study (fingerprint check included) and its MLflow parent run are made here, once,
    before any worker starts; then N spawned processes run ``run_study`` on the shared storage
    under the global budget; when all have exited this process writes the results, logs what
    MLflow lacks (no worker is writing any more, so this cannot log a trial twice) and closes
    the parent run. Ctrl-C stops every worker after its running trial.
    """
    import dataclasses
    import multiprocessing as mp

    from search import _mlflow as mlv
    from search._config import ConfigError
    from search._run import create_or_load_study, run_study

    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ConfigError(f"--workers={n_workers!r} must be an integer >= 1")
    if n_workers == 1:
        return run_study(cfg, progress=progress)
    study = create_or_load_study(cfg)
    mlflow_error: str | None = None
    if cfg.mlflow.enabled:
        uri = mlv.tracking_uri_for(Path(cfg.run_dir), cfg.mlflow.tracking_uri)
        mlflow_error = mlflow_reachable(uri)
        if mlflow_error is None:
            local = not uri.startswith(("http", "databricks"))
            root = Path(cfg.run_dir) / "mlartifacts" if local else None
            view = mlv.MlflowView(uri, mlv.default_experiment_name(cfg), cfg.study_name, root)
            try:
                view.ensure_parent(study, mlv.parent_params(cfg, cfg.storage_url))
            except Exception as exc:
                mlflow_error = f"MLflow at {uri} failed: {type(exc).__name__}: {exc}"
        if mlflow_error is not None:  # keep searching; `sync-mlflow` logs it all later
            cfg = cfg.with_overrides(mlflow=False)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(cfg.to_dict(), cfg.source, i), daemon=False)
        for i in range(n_workers)
    ]
    interrupted = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)  # each stops after its running trial

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        _watch(study, procs, cfg.trials, progress)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    codes = [p.exitcode for p in procs]
    bad = [(i, c) for i, c in enumerate(codes) if c not in (0, 130)]
    if bad:
        import logging

        logging.getLogger("search").warning(
            "workers %s exited abnormally (exit codes %s); their running trials are failed by "
            "the heartbeat and retried", [i for i, _ in bad], [c for _, c in bad]
        )
    # The finish, from this one process: results and parent artifacts, then what MLflow lacks
    # (trials a killed worker had not flushed); no worker writes any more, so nothing is logged
    # twice. It also runs what is left (the retry of a killed worker's trial) unless Ctrl-C.
    final_cfg = cfg
    if interrupted:  # run no more trials: a budget of what is there already
        done = GlobalBudget(cfg.trials).status(study).done
        final_cfg = cfg.with_overrides(trials=max(done, 1))
    result = run_study(final_cfg, progress=False, final_sync=False)
    if result.mlflow_parent_run_id is not None and result.mlflow_error is None:
        uri = mlv.tracking_uri_for(Path(cfg.run_dir), cfg.mlflow.tracking_uri)
        local = not uri.startswith(("http", "databricks"))
        try:
            mlv.sync(
                study,
                tracking_uri=uri,
                experiment_name=mlv.default_experiment_name(cfg),
                objective_names=[o.name for o in cfg.objectives],
                artifact_root=Path(cfg.run_dir) / "mlartifacts" if local else None,
            )
        except Exception as exc:
            mlflow_error = f"MLflow sync at {uri} failed: {type(exc).__name__}: {exc}"
    return dataclasses.replace(
        result,
        interrupted=interrupted or result.interrupted,
        mlflow_error=mlflow_error or result.mlflow_error,
    )


def _watch(study: Study, procs: Sequence[Any], total: int, progress: bool) -> None:
    """Wait for the workers, showing the study's progress (read from the shared storage)."""
    bar = None
    if progress:
        from tqdm import tqdm

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
