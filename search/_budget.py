"""One trial budget for a study, shared by every worker on its storage.

Coordination is Optuna's own: every worker opens the same storage (PostgreSQL through
``RDBStorage`` across machines, the journal file on one host) and runs ``study.optimize``; a
SIGKILLed worker's trial stops sending heartbeats, the next worker to ask for a trial fails it
(``optuna.storages.fail_stale_trials``) and ``RetryHeartbeatStaleTrialCallback`` enqueues a
copy with the parameters it had stored (the journal holds a running trial's parameters until
its next write, so a retry may sample afresh).

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
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState

from search._private_apis import BaseHeartbeat, set_running_trial_system_attr, study_storage
from search._storage import is_rdb_url

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts as done
WORKER_ATTR = "roofnas:worker"  # "host:pid" of the process that ran the trial
SURPLUS_ATTR = "roofnas:surplus"  # a trial past the global budget, pruned before any work
# Test-only: seconds each trial sleeps before its objective, so that a test can SIGKILL a worker
# in the middle of a trial. Never set it in real runs.
TEST_SLEEP_ENV = "ROOFNAS_TEST_TRIAL_SLEEP_S"
WORKER_INDEX_ENV = "ROOFNAS_WORKER_INDEX"  # set in each process of `search run --workers N`


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


def is_done(t: FrozenTrial) -> bool:
    """COMPLETE, or PRUNED and not surplus: a trial the budget has paid for."""
    return t.state in DONE_STATES and not is_surplus_trial(t)


def done_trials(study: Study) -> list[FrozenTrial]:
    """The study's done trials (see ``is_done``), read from the storage."""
    return [t for t in study.get_trials(deepcopy=False) if is_done(t)]


def counts_against_budget(t: FrozenTrial) -> bool:
    """Done (COMPLETE, PRUNED) or about to be (RUNNING, WAITING); FAIL and surplus do not."""
    if t.state == TrialState.PRUNED:
        return not is_surplus_trial(t)
    return t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def budget_reached(study: Study, total: int) -> bool:
    """``total`` trials are COMPLETE or PRUNED in the storage (all workers' trials)."""
    return len(study.get_trials(deepcopy=False, states=DONE_STATES)) >= total


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
            elif is_done(t):
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
            set_running_trial_system_attr(trial, WORKER_ATTR, worker)
            if self.is_surplus(trial.study, trial):
                set_running_trial_system_attr(trial, SURPLUS_ATTR, True)
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
    if os.environ.get(WORKER_INDEX_ENV) is None and not is_rdb_url(storage_url):
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
    run trials this one waits, failing stale trials, so that a retry is never left behind. An
    objective that fails every time stops after as many failures as the budget has trials.
    """
    budget = GlobalBudget(total_trials)
    failures = _FailureLimit(total_trials)
    all_callbacks = [*callbacks, budget.callback, failures.callback]
    if poll_interval_s is None:
        storage = study_storage(study)
        interval = storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None
        poll_interval_s = float(min(interval or 2, 2))
    guarded = budget.guard(objective)
    while not should_stop() and not failures.reached:
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


class _FailureLimit:
    """Stops a study after ``limit`` FAIL trials (a single run's bound on attempts)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failed = 0

    @property
    def reached(self) -> bool:
        return self.failed >= self.limit

    def callback(self, study: Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            self.failed += 1
            if self.reached:
                study.stop()
