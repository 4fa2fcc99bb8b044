"""Every use of a private API of Optuna or MLflow, and the measured gain that pays for each.

tests/test_private_apis.py checks each one against the installed versions (signatures,
attributes, table columns) and fails loudly when an upgrade changes it. Figures are from
``python experiments/bench_private_apis.py`` on a 2-core machine (Optuna 5.0, MLflow 3.17,
sqlite and the journal file on local disk); the public alternative is named beside each.

Optuna
- Journal internals (``JournalStorage._write_log``, ``_sync_with_backend``, ``_replay_result``,
  ``_thread_lock``, ``_backend``; ``JournalFileBackend._file_path``, ``_lock``,
  ``_log_number_offset``; ``journal._file.get_lock_file``; ``journal._storage.JournalOperation``):
  a trial on a shared study makes about 30 storage calls, and Optuna's journal file appends and
  fsyncs each one. ``BatchingJournalStorage`` + ``GroupCommitFileBackend`` make it about three
  appends and at most one fsync a second: 3.1-3.5 ms a trial instead of 16-32 ms (shared
  study, 30 params), 0.6 ms instead of 1.1-2.9 ms for one ``add_trial``.
- ``optuna.storages._heartbeat.BaseHeartbeat``: ``study.optimize`` sends heartbeats and fails
  stale trials only for a storage that implements it, and Optuna 5.0's journal does not; without
  it a killed worker's trial would stay RUNNING for ever. No public alternative.
- ``Study._study_id``: the storage's id of a study, which tells a study from one deleted and made
  again under the same name; Optuna has no public study id.
- ``Trial._trial_id`` with ``Trial.storage``: Optuna 5 has no public way to set a system
  attribute of a running trial (``Trial.set_system_attr`` is gone); the budget marks which
  worker ran a trial and which trials were surplus there, where user code cannot overwrite them.

MLflow
- ``SqlAlchemyStore`` (``MlflowClient._tracking_client.store``, ``ManagedSessionMaker``) and its
  SQLAlchemy models (``SqlRun``, ``SqlTag``, ``SqlParam``, ``SqlMetric``, ``SqlLatestMetric``):
  finished child runs inserted with one executemany per table, 0.4-0.5 ms a run instead of
  17-21 ms through ``create_run`` + ``log_batch`` + ``set_terminated``, once per trial. Any
  error (another store, a schema this code does not know) falls back to the client calls.

Dropped for the public API, each within about 1 ms a trial: ``create_new_trial(template_trial=)``
(``study.add_trial``: 0.45 against 0.43 ms), SQL writes of the parent's step metrics
(``log_batch``: 1.1 against 0.02 ms a trial alone, 0.3 ms a trial more in a 1,000-trial run of
the default experiment), the SQL read of a parent's children
(``search_runs``: 1.4 s per 1,000 children, once per resumed run), the SQL correction of
Pareto tags (``log_batch`` per run, 7 ms each, about 90 per 1,000 trials: 0.6 ms a trial),
``optuna._hypervolume`` (``search._front.hypervolume``).

MLflow and SQLAlchemy are imported inside the functions that use them: importing MLflow costs
about 2.5 s of CPU, which every process of the search would pay, MLflow on or off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.storages.journal._file import get_lock_file
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

log = logging.getLogger("search")

# ============================================================================ Optuna

_DEFERRABLE = (JournalOperation.SET_TRIAL_PARAM, JournalOperation.SET_TRIAL_USER_ATTR)
_SYSTEM_ATTR = JournalOperation.SET_TRIAL_SYSTEM_ATTR
_USER_ATTR = JournalOperation.SET_TRIAL_USER_ATTR
_CONSTRAINT_PREFIX = "constraints:"  # optuna.trial.Trial.set_constraint's system-attr key
HEARTBEAT_ATTR = "roofnas:heartbeat_s"  # time.time() of a trial's last heartbeat (journal)


class GroupCommitFileBackend(JournalFileBackend):
    """A journal file whose appends are flushed at once and fsynced at most every interval.

    Every append reaches the operating system at once, so a killed process (Ctrl-C, SIGKILL)
    loses no finished trial; an operating-system crash or power cut can lose at most the last
    ``fsync_interval_s``. ``close`` of the storage fsyncs what is left.
    """

    def __init__(self, file_path: str, fsync_interval_s: float = 1.0) -> None:
        super().__init__(file_path)
        self.fsync_interval_s = fsync_interval_s
        self._last_fsync = time.monotonic()
        self._dirty = False
        self.appends = 0  # for tests and benchmarks: how many appends the journal took

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs)
        with get_lock_file(self._lock), open(self._file_path, "ab") as f:
            f.write(data.encode("utf-8"))
            f.flush()
            self.appends += 1
            now = time.monotonic()
            if now - self._last_fsync >= self.fsync_interval_s:
                os.fsync(f.fileno())
                self._last_fsync, self._dirty = now, False
            else:
                self._dirty = True

    def read_logs(self, log_number_from: int) -> Any:
        # JournalStorage re-reads the file before every read; skip the open when nothing new.
        offset = self._log_number_offset.get(log_number_from)
        if offset is not None:
            try:
                if os.stat(self._file_path).st_size == offset:
                    return iter(())
            except OSError:
                pass
        return super().read_logs(log_number_from)

    def sync(self) -> None:
        """fsync what was appended since the last fsync."""
        if self._dirty:
            with open(self._file_path, "ab") as f:
                os.fsync(f.fileno())
            self._last_fsync, self._dirty = time.monotonic(), False


class BatchingJournalStorage(JournalStorage):
    """A journal storage that writes a running trial's params and attributes in one append.

    A running trial's params, user attributes and constraint values are held in memory and
    appended together with the next write that must go out (the trial's end, a read of that
    trial, any other write): about three appends a trial instead of thirty. Only this process
    sees a running trial's params before it ends; a worker killed mid-trial leaves a RUNNING
    trial without params (its heartbeat fails it; the retry samples afresh).
    ``batch_trial_writes=False`` turns the holding off.
    """

    def __init__(self, backend: JournalFileBackend, batch_trial_writes: bool = True) -> None:
        super().__init__(backend)
        self.batch_trial_writes = batch_trial_writes
        self._pending: list[dict[str, Any]] = []
        self._pending_trials: set[int] = set()

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        entry = {"op_code": op_code, "worker_id": self._replay_result.worker_id, **extra_fields}
        deferrable = op_code in _DEFERRABLE or (
            op_code == _SYSTEM_ATTR
            and str(next(iter(extra_fields.get("system_attr", {})), "")).startswith(
                _CONSTRAINT_PREFIX
            )
        )
        if self.batch_trial_writes and deferrable:
            self._pending.append(entry)
            self._pending_trials.add(extra_fields["trial_id"])
            return
        entries, self._pending = [*self._pending, entry], []
        self._pending_trials.clear()
        self._backend.append_logs(entries)

    def flush(self) -> None:
        """Write what is held; the next read sees it."""
        if self._pending:
            with self._thread_lock:
                entries, self._pending = self._pending, []
                self._pending_trials.clear()
                self._backend.append_logs(entries)
                self._sync_with_backend()

    def _flush_for(self, trial_id: int) -> None:
        if trial_id in self._pending_trials:
            self.flush()

    # Reads of a trial with held writes see them: flush first.
    def get_trial(self, trial_id: int) -> FrozenTrial:
        self._flush_for(trial_id)
        return super().get_trial(trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        # Trial.set_constraint reads these before each write: overlay, do not flush.
        attrs = dict(super().get_trial(trial_id).system_attrs)  # the file's, unflushed
        for entry in self._pending:
            if entry["op_code"] == _SYSTEM_ATTR and entry["trial_id"] == trial_id:
                attrs.update(entry["system_attr"])
        return attrs

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        attrs = dict(super().get_trial(trial_id).user_attrs)
        for entry in self._pending:
            if entry["op_code"] == _USER_ATTR and entry["trial_id"] == trial_id:
                attrs.update(entry["user_attr"])
        return attrs

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        self._flush_for(trial_id)
        return super().get_trial_params(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> Any:
        if states is None or TrialState.RUNNING in states:  # held writes are of running trials
            self.flush()
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def close(self) -> None:
        """Write out what is held and fsync."""
        self.flush()
        backend = self._backend
        if isinstance(backend, GroupCommitFileBackend):
            backend.sync()


class HeartbeatJournalStorage(BatchingJournalStorage, BaseHeartbeat):
    """The batching journal with Optuna's heartbeat protocol (workers on one host).

    The heartbeat is a trial system attribute holding the wall-clock time (one host, one
    clock), written every ``heartbeat_interval`` seconds by ``study.optimize``; a system
    attribute is written at once, so a heartbeat is one append and carries the trial's held
    writes out with it. A trial whose last heartbeat is older than ``grace_period`` seconds is
    stale: the next worker to ask for a trial fails it and ``heartbeat_stale_trial_callback``
    (e.g. Optuna's ``RetryHeartbeatStaleTrialCallback``) enqueues a retry.
    """

    def __init__(
        self,
        backend: JournalFileBackend,
        *,
        heartbeat_interval: int,
        grace_period: int,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
        batch_trial_writes: bool = True,
    ) -> None:
        super().__init__(backend, batch_trial_writes=batch_trial_writes)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        # Another worker may have failed this trial already (it was stale): then stay quiet.
        with contextlib.suppress(UpdateFinishedTrialError, KeyError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        grace_s = self.grace_period or 2 * self.heartbeat_interval
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        stale = []
        for t in running:
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            # No heartbeat yet: like RDBStorage, never stale (its thread writes one at once).
            if beat is not None and now - float(beat) > grace_s:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.heartbeat_stale_trial_callback


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage behind ``study`` (``Study._storage``)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The storage's id of ``study`` (``Study._study_id``), stable for the study's life."""
    return study._study_id


def set_running_trial_system_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    """A system attribute of a running trial (``Trial.storage``, ``Trial._trial_id``)."""
    trial.storage.set_trial_system_attr(trial._trial_id, key, value)


# ============================================================================ MLflow

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"


class ChildRun(Protocol):
    """What a bulk insert needs of one finished child run (``search._mlflow.ChildRecord``)."""

    @property
    def trial_number(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def start_ms(self) -> int: ...
    @property
    def end_ms(self) -> int: ...
    @property
    def params(self) -> Mapping[str, str]: ...
    @property
    def metrics(self) -> Mapping[str, float]: ...
    @property
    def tags(self) -> Mapping[str, str]: ...


def sql_store(client: MlflowClient) -> SqlAlchemyStore | None:
    """MLflow's SQL store behind ``client``, or None (an HTTP server, other stores)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store
    return store if isinstance(store, SqlAlchemyStore) else None


def bulk_insert_child_runs(
    client: MlflowClient, experiment_id: str, parent_id: str, runs: Sequence[ChildRun]
) -> list[str] | None:
    """Insert finished child runs in one transaction on a SQL store; None elsewhere.

    Writes the rows ``SqlAlchemyStore.create_run`` + ``log_batch`` + ``set_terminated`` would
    (runs, tags, params, metrics, latest_metrics), one executemany per table.
    """
    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from mlflow.utils.uri import append_to_uri_path
    from sqlalchemy import insert

    store = sql_store(client)
    if store is None:
        return None
    exp = client.get_experiment(experiment_id)
    ids: list[str] = []
    rows: dict[str, list[dict[str, Any]]] = {"runs": [], "tags": [], "params": [], "metrics": []}
    for r in runs:
        rid = uuid.uuid4().hex
        ids.append(rid)
        name = f"trial-{r.trial_number}"
        rows["runs"].append(dict(
            run_uuid=rid, name=name, source_type="UNKNOWN", source_name="", entry_point_name="",
            user_id="unknown",  # what MlflowClient.create_run stores without a user tag
            status=r.status, start_time=r.start_ms, end_time=r.end_ms, deleted_time=None,
            source_version="", lifecycle_stage="active",
            artifact_uri=append_to_uri_path(exp.artifact_location, rid, "artifacts"),
            experiment_id=int(experiment_id),
        ))  # fmt: skip
        tags = {**r.tags, PARENT_TAG: parent_id, RUN_NAME_TAG: name}
        rows["tags"] += [dict(key=k, value=v, run_uuid=rid) for k, v in tags.items()]
        rows["params"] += [dict(key=k, value=v, run_uuid=rid) for k, v in r.params.items()]
        rows["metrics"] += [
            dict(key=k, value=v, timestamp=r.end_ms, step=0, is_nan=False, run_uuid=rid)
            for k, v in r.metrics.items()
        ]
    try:
        with store.ManagedSessionMaker() as session:
            session.execute(insert(SqlRun.__table__), rows["runs"])
            session.execute(insert(SqlTag.__table__), rows["tags"])
            if rows["params"]:
                session.execute(insert(SqlParam.__table__), rows["params"])
            if rows["metrics"]:
                session.execute(insert(SqlMetric.__table__), rows["metrics"])
                session.execute(insert(SqlLatestMetric.__table__), rows["metrics"])
    except Exception as e:  # a schema this code does not know: the caller uses the client
        log.debug("bulk insert failed (%s); using MlflowClient calls", e)
        return None
    return ids
