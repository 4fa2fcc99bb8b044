"""Shared fixtures for the service-backed tests: a PostgreSQL server and an MLflow tracking server.

- `postgres_url`: a fresh, empty PostgreSQL database per test (created and dropped here) on the
  server named by ROOFNAS_TEST_POSTGRES_URL (.ci/run exports it via `source .ci/postgres.sh
  start`); without it a throwaway server is started with .ci/postgres.sh (no install) for the
  session; when none can be had, the test skips with the reason.
- `mlflow_server`: a real `mlflow server` (one worker) on 127.0.0.1 and a free port over a fresh
  sqlite store; yields its URL; SIGTERMs its process group at teardown.
  `start_mlflow_server(...)` is the same as a context manager for a store of your choice.

Service tests cannot pass by skipping in CI: when CI or ROOFNAS_REQUIRE_SERVICES is set (to
anything but "", 0, false, no or off), a skipped test marked `postgres` or `mlflow_server`, or
skipped because a service fixture could not have its service, is reported as an error naming the
test and the reason, unless ROOFNAS_ALLOW_SERVICE_SKIP lists that service (comma-separated,
e.g. "postgres,mlflow_server": CI was told on purpose that it is unavailable). Every run that
collects service tests ends with one line per service: how many passed, failed, skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_SH = REPO_ROOT / ".ci" / "postgres.sh"

SERVICES = ("postgres", "mlflow_server")  # pytest markers, one per external service
REQUIRE_ENVS = ("CI", "ROOFNAS_REQUIRE_SERVICES")
ALLOW_ENV = "ROOFNAS_ALLOW_SERVICE_SKIP"
_UNAVAILABLE = " unavailable: "  # skip_service's reasons: "<service> unavailable: <why>"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def skip_service(service: str, reason: str) -> NoReturn:
    """Skip the test because ``service`` cannot be had; the reason names the service."""
    assert service in SERVICES, service
    pytest.skip(f"{service}{_UNAVAILABLE}{reason}")


# ---------------------------------------------------------------------------------------------
# Skips of service tests: an error in CI unless allowed, and a summary line per service


def _is_set(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


@dataclass
class _ServiceLedger:
    required_by: list[str]  # the set variables of REQUIRE_ENVS; empty: skips are fine
    allowed: frozenset[str]  # services CI was told are unavailable
    # test id -> (its services, "passed" | "xfailed" | "skipped" | "failed": its worst phase)
    outcomes: dict[str, tuple[frozenset[str], str]] = field(default_factory=dict)
    deselected: Counter[str] = field(default_factory=Counter)  # service -> deselected tests


_LEDGER = pytest.StashKey[_ServiceLedger]()


def _allowed_services() -> frozenset[str]:
    raw = os.environ.get(ALLOW_ENV, "")
    names = frozenset(n.strip() for n in raw.split(",") if n.strip())
    unknown = sorted(names - set(SERVICES))
    if unknown:
        raise pytest.UsageError(
            f"{ALLOW_ENV}={raw!r}: {unknown[0]!r} is not a service; services: {', '.join(SERVICES)}"
        )
    return names


def pytest_configure(config: pytest.Config) -> None:
    required = [f"{k}={os.environ[k]}" for k in REQUIRE_ENVS if _is_set(os.environ.get(k))]
    config.stash[_LEDGER] = _ServiceLedger(required, _allowed_services())


def _services_of(item: pytest.Item) -> frozenset[str]:
    return frozenset(s for s in SERVICES if item.get_closest_marker(s) is not None)


def pytest_deselected(items: list[pytest.Item]) -> None:
    for item in items:
        for service in _services_of(item):
            item.config.stash[_LEDGER].deselected[service] += 1


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    ledger = item.config.stash[_LEDGER]
    services = _services_of(item)
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        cause = reason.split(_UNAVAILABLE, 1)[0] if _UNAVAILABLE in reason else None
        if cause in SERVICES:  # a service fixture skipped, maybe in an unmarked test
            services |= {cause}
            allowed = cause in ledger.allowed
        else:  # e.g. a skip mark: fine only if every service of the test may be missing
            allowed = services <= ledger.allowed
        if services and ledger.required_by and not allowed:
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid} needs {' and '.join(sorted(services))} and skipped: {reason}\n"
                f"A service test must not skip when {' and '.join(ledger.required_by)} is set; "
                f"start the service (source .ci/postgres.sh start) or, if it is unavailable on "
                f"purpose, say so: {ALLOW_ENV}={','.join(sorted(services))}"
            )
    if services:
        order = {"passed": 0, "xfailed": 1, "skipped": 2, "failed": 3}  # the worst phase counts
        _, before = ledger.outcomes.get(item.nodeid, (services, "passed"))
        now = "xfailed" if report.skipped and hasattr(report, "wasxfail") else report.outcome
        worst = max(before, now, key=order.__getitem__)
        ledger.outcomes[item.nodeid] = (services, worst)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ledger = terminalreporter.config.stash[_LEDGER]
    if not ledger.outcomes and not ledger.deselected:
        return
    if ledger.required_by:
        policy = f"a skip is an error ({' and '.join(ledger.required_by)})"
    else:
        policy = f"skips allowed (none of {', '.join(REQUIRE_ENVS)} is set)"
    terminalreporter.write_sep("-", f"service tests: {policy}")
    for service in SERVICES:
        counts = Counter(o for s, o in ledger.outcomes.values() if service in s)
        allowed = " (skips allowed by " + ALLOW_ENV + ")" if service in ledger.allowed else ""
        xfailed = f", {counts['xfailed']} xfailed" if counts["xfailed"] else ""
        terminalreporter.write_line(
            f"{service}: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped{allowed}{xfailed}, "
            f"{ledger.deselected[service]} deselected"
        )


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def _pg_connect(url: str):  # -> psycopg2 connection
    import psycopg2  # the `postgres` extra; imported here so that other tests never need it

    conn = psycopg2.connect(url, connect_timeout=5)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return conn


@pytest.fixture(scope="session")
def _postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a running PostgreSQL server's maintenance database, or a skip with the reason."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        skip_service("postgres", "psycopg2 is not installed (pip install -e '.[postgres]')")
    url = os.environ.get("ROOFNAS_TEST_POSTGRES_URL")
    started_env: dict[str, str] | None = None
    if not url:
        reason = os.environ.get("ROOFNAS_PG_SKIP_REASON")
        if reason:  # .ci/postgres.sh already tried and said why
            skip_service("postgres", f"no PostgreSQL server: {reason}")
        env_file = tmp_path_factory.mktemp("postgres") / "postgres.env"
        started_env = {
            **os.environ,
            "ROOFNAS_PG_NO_INSTALL": "1",
            "ROOFNAS_PG_ENV_FILE": str(env_file),
        }
        try:
            proc = subprocess.run(
                ["bash", str(POSTGRES_SH), "start"],
                env=started_env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            skip_service("postgres", f"no PostgreSQL server: .ci/postgres.sh start failed: {exc}")
        url = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if not url.startswith("postgresql://"):
            skip_service(
                "postgres",
                "no PostgreSQL server: ROOFNAS_TEST_POSTGRES_URL is unset "
                f"and .ci/postgres.sh start could not start one: "
                f"{proc.stderr.strip()[-400:]}",
            )
    try:
        _pg_connect(_with_database(url, "postgres")).close()
    except Exception as exc:
        skip_service("postgres", f"no PostgreSQL server: cannot connect to {url}: {exc}")
    try:
        yield url
    finally:
        if started_env is not None:
            subprocess.run(
                ["bash", str(POSTGRES_SH), "stop"],
                env=started_env,
                capture_output=True,
                timeout=60,
                check=False,
            )


@pytest.fixture
def postgres_url(_postgres_server: str) -> Iterator[str]:
    """A fresh empty database on the test server; dropped (connections forced off) afterwards."""
    admin_url = _with_database(_postgres_server, "postgres")
    dbname = f"roofnas_test_{uuid.uuid4().hex[:12]}"
    conn = _pg_connect(admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        conn.close()
    try:
        yield _with_database(_postgres_server, dbname)
    finally:
        conn = _pg_connect(admin_url)
        try:
            with conn.cursor() as cur:
                # WITH (FORCE): PostgreSQL >= 13; ends the connections a killed worker left.
                cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        finally:
            conn.close()


# ---------------------------------------------------------------------------------------------
# MLflow tracking server


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with code {proc.returncode}: "
                f"{log_path.read_text(errors='replace')[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(
        f"mlflow server at {url} not healthy after {timeout_s} s: "
        f"{log_path.read_text(errors='replace')[-2000:]}"
    )


def _stop_process_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def start_mlflow_server(
    backend_store_uri: str, artifact_root: Path, log_path: Path, timeout_s: float = 120.0
) -> Iterator[str]:
    """Runs `mlflow server` (one worker, no job execution) on 127.0.0.1; yields its URL."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--default-artifact-root",
        str(artifact_root),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log_path, "wb") as log:
        # Own process group: the server forks workers; SIGTERM to the group stops them all.
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=str(artifact_root.parent),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log_path, timeout_s)
        yield url
    finally:
        _stop_process_group(proc)


@pytest.fixture
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a fresh MLflow tracking server over its own sqlite store in a temporary dir."""
    root = tmp_path_factory.mktemp("mlflow_server")
    artifacts = root / "artifacts"
    artifacts.mkdir()
    with start_mlflow_server(
        f"sqlite:///{root / 'mlflow.db'}", artifacts, root / "server.log"
    ) as url:
        yield url
