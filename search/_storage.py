"""The study storage: one opener for journal files and SQL databases, heartbeats on both.

``open_storage(url)`` takes an SQLAlchemy URL (``postgresql://user@host:port/db`` for workers
on several machines, ``sqlite:///file.db``) or a journal file path (workers on one host; the
default). Both come with heartbeats, so a SIGKILLed worker's trial is failed and retried:
Optuna's ``RDBStorage`` has them built in, the journal gets them from
``HeartbeatJournalStorage``. Settings come from the arguments, else the environment
(ROOFNAS_HEARTBEAT_INTERVAL_S, ROOFNAS_GRACE_PERIOD_S, ROOFNAS_MAX_RETRY), else 10 s, 30 s
and 3 retries. Every mistake (a bad setting, an unwritable path, a directory, a database
that refuses) raises ``StorageError`` naming the storage and the value.

Why a journal of our own: Optuna's journal file fsyncs once per storage call, about thirty
calls a trial (one per sampled architecture choice); ``search._private_apis`` has the batching
journal that writes a trial in about three appends and fsyncs at most once a second.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStaleTrial

from search._private_apis import (
    HEARTBEAT_ATTR,
    BatchingJournalStorage,
    GroupCommitFileBackend,
    HeartbeatJournalStorage,
)

__all__ = [
    "DEFAULT_GRACE_PERIOD_S",
    "DEFAULT_HEARTBEAT_INTERVAL_S",
    "DEFAULT_MAX_RETRY",
    "HEARTBEAT_ATTR",
    "HeartbeatJournalStorage",
    "HeartbeatSettings",
    "StorageError",
    "close_storage",
    "is_rdb_url",
    "open_storage",
]

DEFAULT_HEARTBEAT_INTERVAL_S = 10
DEFAULT_GRACE_PERIOD_S = 30  # three missed heartbeats
DEFAULT_MAX_RETRY = 3
_RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite", "oracle", "mssql")


class StorageError(ValueError):
    """The Optuna storage cannot be opened or written; the message names it and the value."""


def is_rdb_url(url: str) -> bool:
    """True for an SQLAlchemy URL (``postgresql://...``, ``sqlite:///...``); else a journal file."""
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    return scheme in _RDB_SCHEMES


@dataclass(frozen=True)
class HeartbeatSettings:
    """How often a running trial says it is alive, and when a silent one is failed and retried."""

    interval_s: int = DEFAULT_HEARTBEAT_INTERVAL_S
    grace_period_s: int = DEFAULT_GRACE_PERIOD_S
    max_retry: int = DEFAULT_MAX_RETRY

    def __post_init__(self) -> None:
        if self.grace_period_s <= self.interval_s:
            raise StorageError(
                f"grace_period_s={self.grace_period_s} must exceed "
                f"heartbeat_interval_s={self.interval_s}"
            )

    @classmethod
    def resolve(
        cls,
        interval_s: int | None = None,
        grace_period_s: int | None = None,
        max_retry: int | None = None,
    ) -> HeartbeatSettings:
        """The given values, else the environment's, else the defaults."""
        interval = interval_s or _env_int(
            "ROOFNAS_HEARTBEAT_INTERVAL_S", DEFAULT_HEARTBEAT_INTERVAL_S
        )
        grace = grace_period_s or _env_int(
            "ROOFNAS_GRACE_PERIOD_S", max(DEFAULT_GRACE_PERIOD_S, 3 * interval)
        )
        retries = max_retry if max_retry is not None else _env_int(
            "ROOFNAS_MAX_RETRY", DEFAULT_MAX_RETRY
        )  # fmt: skip
        return cls(interval, grace, retries)

    def retry_callback(self) -> RetryStaleTrial:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # experimental in Optuna 5.0
            return RetryStaleTrial(max_retry=self.max_retry)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StorageError(f"{name}={raw!r} must be a positive integer (seconds)") from None
    if value < 1:
        raise StorageError(f"{name}={raw!r} must be a positive integer (seconds)")
    return value


def open_storage(
    url: str | Path,
    *,
    heartbeat_interval_s: int | None = None,
    grace_period_s: int | None = None,
    max_retry: int | None = None,
    batch_trial_writes: bool = True,
) -> BaseStorage:
    """The study storage for ``url`` (see the module docstring), with heartbeats."""
    url = str(url)
    heartbeat = HeartbeatSettings.resolve(heartbeat_interval_s, grace_period_s, max_retry)
    if is_rdb_url(url):
        return _open_rdb(url, heartbeat)
    if "://" in url:
        raise StorageError(
            f"storage={url!r}: unknown URL scheme; give one of {list(_RDB_SCHEMES)} or a "
            "journal file path"
        )
    return _open_journal(Path(url), heartbeat, batch_trial_writes)


def _open_rdb(url: str, heartbeat: HeartbeatSettings) -> RDBStorage:
    if url.startswith("sqlite:///"):
        _check_writable_dir(Path(url[len("sqlite:///") :]).parent, url)
    driver_url = _with_driver(url)  # outside the try: its error names the missing extra
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval
        try:
            return RDBStorage(
                driver_url,
                heartbeat_interval=heartbeat.interval_s,
                grace_period=heartbeat.grace_period_s,
                heartbeat_stale_trial_callback=heartbeat.retry_callback(),
                # A worker may wait a long time in a trial: re-check pooled connections.
                engine_kwargs={"pool_pre_ping": True},
            )
        except Exception as e:  # sqlalchemy/psycopg2 errors name no field: add one
            raise StorageError(f"storage={_redact(url)!r} cannot be opened: {e}") from e


def _open_journal(
    path: Path, heartbeat: HeartbeatSettings, batch_trial_writes: bool
) -> HeartbeatJournalStorage:
    url = str(path)
    if path.is_dir():
        raise StorageError(f"storage={url!r} is a directory; give a journal file path")
    _check_writable_dir(path.parent, url)
    if path.exists() and not path.is_file():
        raise StorageError(f"storage={url!r} is not a file")
    try:
        return HeartbeatJournalStorage(
            GroupCommitFileBackend(url),
            heartbeat_interval=heartbeat.interval_s,
            grace_period=heartbeat.grace_period_s,
            heartbeat_stale_trial_callback=heartbeat.retry_callback(),
            batch_trial_writes=batch_trial_writes,
        )
    except OSError as e:
        raise StorageError(f"storage={url!r} cannot be written: {e.strerror}") from None


def close_storage(storage: BaseStorage) -> None:
    """Write out held trial data and fsync (journal); a no-op for other storages."""
    if isinstance(storage, BatchingJournalStorage):
        storage.close()


def _check_writable_dir(d: Path, url: str) -> None:
    what = f"storage={url!r}"
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


def _with_driver(url: str) -> str:
    """``postgresql://`` with a driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; the ``postgres`` extra installs
    psycopg2, so name it when psycopg 3 is missing. ``postgres://`` (Heroku style) is accepted.
    """
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return f"postgresql+psycopg2{sep}{rest}"
    if importlib.util.find_spec("psycopg") is None:
        raise StorageError(
            f"storage={_redact(url)!r} needs a PostgreSQL driver and none is installed: "
            "pip install 'roofnas[postgres]' (psycopg2-binary)"
        )
    return f"postgresql{sep}{rest}"


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
