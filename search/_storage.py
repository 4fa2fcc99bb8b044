"""Optuna storages for a search: a journal file by default, RDB URLs otherwise.

Why a custom journal: Optuna's ``JournalFileBackend`` takes a file lock,
appends and ``fsync``s once per storage call, and a trial here makes about 30
calls (one per sampled architecture choice, constraints, attributes, state).
At 6 ms per fsync on this machine's disk that alone is 200 ms a trial. So:

- ``BatchingJournalStorage`` holds a running trial's params, user attributes
  and constraint values in memory and appends them together with the next
  write that must go out (the trial's end, or a read of that trial): about
  three appends a trial instead of thirty. Other system attributes (e.g. a
  worker's heartbeat) are written at once.
- ``GroupCommitFileBackend`` writes and flushes every append to the OS at
  once (so a killed process, Ctrl-C or SIGKILL, loses no finished trial) and
  ``fsync``s at most every ``fsync_interval_s`` and on ``close()`` (so an
  operating-system crash or power cut can lose at most that last interval).

Only this process sees a running trial's params before it ends; a worker
killed mid-trial leaves a RUNNING trial without params (heartbeats turn it
into FAIL; a retry samples afresh). ``batch_trial_writes=False`` turns the
batching off.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.storages.journal._file import get_lock_file
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

from search import _workers

_DEFERRABLE = (JournalOperation.SET_TRIAL_PARAM, JournalOperation.SET_TRIAL_USER_ATTR)
_SYSTEM_ATTR = JournalOperation.SET_TRIAL_SYSTEM_ATTR
_USER_ATTR = JournalOperation.SET_TRIAL_USER_ATTR
_CONSTRAINT_PREFIX = "constraints:"  # optuna.trial.Trial.set_constraint's system-attr key


class GroupCommitFileBackend(JournalFileBackend):
    """A journal file whose appends are flushed at once and fsynced at most every interval."""

    def __init__(self, file_path: str, fsync_interval_s: float = 1.0) -> None:
        super().__init__(file_path)
        self.fsync_interval_s = fsync_interval_s
        self._last_fsync = time.monotonic()
        self._dirty = False
        self.appends = 0  # for the overhead benchmark

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        import json

        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
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
    """Journal storage that writes a running trial's params and attributes in one append."""

    def __init__(self, backend: JournalFileBackend, batch_trial_writes: bool = True) -> None:
        super().__init__(backend)
        self.batch_trial_writes = batch_trial_writes
        self._pending: list[dict[str, Any]] = []
        self._pending_trials: set[int] = set()

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        log = {"op_code": op_code, "worker_id": self._replay_result.worker_id, **extra_fields}
        deferrable = op_code in _DEFERRABLE or (
            op_code == JournalOperation.SET_TRIAL_SYSTEM_ATTR
            and str(next(iter(extra_fields.get("system_attr", {})), "")).startswith(
                _CONSTRAINT_PREFIX
            )
        )
        if self.batch_trial_writes and deferrable:
            self._pending.append(log)
            self._pending_trials.add(extra_fields["trial_id"])
            return
        logs, self._pending = [*self._pending, log], []
        self._pending_trials.clear()
        self._backend.append_logs(logs)

    def flush(self) -> None:
        """Write what is held; the next read sees it."""
        if self._pending:
            with self._thread_lock:
                logs, self._pending = self._pending, []
                self._pending_trials.clear()
                self._backend.append_logs(logs)
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
        for log in self._pending:
            if log["op_code"] == _SYSTEM_ATTR and log["trial_id"] == trial_id:
                attrs.update(log["system_attr"])
        return attrs

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        attrs = dict(super().get_trial(trial_id).user_attrs)
        for log in self._pending:
            if log["op_code"] == _USER_ATTR and log["trial_id"] == trial_id:
                attrs.update(log["user_attr"])
        return attrs

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        self._flush_for(trial_id)
        return super().get_trial_params(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> Any:
        if states is None or TrialState.RUNNING in states:  # held writes are of running trials
            self.flush()
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def close(self) -> None:
        self.flush()
        backend = self._backend
        if isinstance(backend, GroupCommitFileBackend):
            backend.sync()


class StorageError(RuntimeError):
    """The Optuna storage cannot be opened or written."""


def _check_writable_dir(d: Path, what: str) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{what}: cannot create directory {str(d)!r}: {e.strerror}") from None
    probe = d / f".roofnas-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StorageError(f"{what}: directory {str(d)!r} is not writable: {e.strerror}") from None


def open_storage(url: str, *, batch_trial_writes: bool = True) -> optuna.storages.BaseStorage:
    """``sqlite:///``, ``postgresql://``, ``mysql://`` URLs, or a journal file path."""
    if "://" in url:
        if url.startswith("sqlite:///"):
            _check_writable_dir(Path(url[len("sqlite:///") :]).parent, f"storage={url!r}")
        try:
            # heartbeats + retry of a killed worker's trial (issue 6)
            return _workers.open_rdb_storage(url)
        except Exception as e:
            raise StorageError(f"storage={url!r} cannot be opened: {e}") from None
    path = Path(url)
    _check_writable_dir(path.parent, f"storage={url!r}")
    if path.exists() and not path.is_file():
        raise StorageError(f"storage={url!r} is not a file")
    try:
        backend = GroupCommitFileBackend(str(path))
        storage = BatchingJournalStorage(backend, batch_trial_writes=batch_trial_writes)
        return _workers.enable_heartbeat(storage)  # issue 6: a killed worker's trial is retried
    except OSError as e:
        raise StorageError(f"storage={url!r} cannot be written: {e.strerror}") from None


def close_storage(storage: Any) -> None:
    """Write out held trial data and fsync (journal); a no-op for other storages."""
    close = getattr(storage, "close", None)
    if isinstance(storage, BatchingJournalStorage) and close is not None:
        close()
