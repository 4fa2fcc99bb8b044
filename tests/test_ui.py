"""`python -m search ui` for real: it serves MLflow's page on the run store, and stops.

The UI (`mlflow ui`, a uvicorn server with workers) takes 10 to 30 s to answer here, so these
tests are slow. Each runs in a process group of its own, killed at the end whatever happened.
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
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
STARTUP_S = 120.0  # bound on the wait for the first answer (a loaded 2-core machine)
STOP_S = 20.0  # bound on the wait for the server to go (it takes about 2 s)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _group_alive(pgid: int) -> bool:
    """Some process of group ``pgid`` still runs (a zombie, dead but not reaped, does not)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():  # no procfs: any member, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc_dir.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ")"
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                return True
    return False


def _wait_until(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.3)
    return False


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode("utf-8", errors="replace")


def _as_a_terminal_starts_it() -> None:
    """A shell gives a foreground command the default SIGINT action. A test run launched in
    the background (``cmd &`` in a script, as some CI runners do) inherits SIGINT ignored,
    and Python would then not turn Ctrl-C into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def _ui(out_dir: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m search ui`` on a free loopback port, once it answers HTTP 200 on /."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    cmd = [sys.executable, "-m", "search", "ui", "--out-dir", str(out_dir),
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with open(log, "wb") as out:
        # A group of its own, as a terminal gives a command: Ctrl-C reaches every process in it.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=out_dir.parent, start_new_session=True,
                                preexec_fn=_as_a_terminal_starts_it)  # fmt: skip
    try:

        def answers() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"search ui exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                return _get(f"http://127.0.0.1:{port}/")[0] == 200
            except (urllib.error.URLError, OSError):
                return False

        assert _wait_until(answers, STARTUP_S), f"no answer in {STARTUP_S} s: {log.read_text()}"
        yield proc, port
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # whatever the test left running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            if _wait_until(lambda: not _group_alive(proc.pid), 10):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


@pytest.mark.slow
def test_ui_serves_mlflow_on_the_run_store_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    """GET / is MLflow's page, its API answers, the store is <out-dir>/mlflow.db; Ctrl-C ends all.

    Fails if _ui dropped ``--port``/``--host`` (nothing answers on the chosen port), pointed
    ``--backend-store-uri`` elsewhere than the out-dir's store (no mlflow.db appears there), or
    if on Ctrl-C it left the MLflow server running (e.g. ``mlflow ui`` started in a session of
    its own and not terminated: the port stays open).
    """
    out_dir = tmp_path / "runs"
    out_dir.mkdir()
    with _ui(out_dir, tmp_path / "ui.log") as (proc, port):
        status, page = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "<title>MLflow</title>" in page
        status, body = _get(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5"
        )
        assert status == 200 and '"name": "Default"' in body
        assert (out_dir / "mlflow.db").is_file()  # the store `run` logs to by default

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole group
        assert proc.wait(timeout=STOP_S) == 130  # the CLI's "interrupted" exit code
        assert _wait_until(lambda: not _group_alive(proc.pid), STOP_S), "a process stayed"
        assert not _port_open(port)


@pytest.mark.slow
def test_ui_sigterm_stops_the_mlflow_server_too(tmp_path: Path) -> None:
    """``kill PID`` (SIGTERM, what a process manager sends) stops the UI, not only its wrapper.

    Fails if ``_ui`` stopped ``mlflow ui`` only on KeyboardInterrupt: SIGTERM would end the
    wrapper and the orphaned server would keep the port.
    """
    out_dir = tmp_path / "runs"
    out_dir.mkdir()
    with _ui(out_dir, tmp_path / "ui.log") as (proc, port):
        proc.send_signal(signal.SIGTERM)  # the wrapper's pid only, as `kill PID` does
        assert proc.wait(timeout=STOP_S) == 128 + signal.SIGTERM
        assert _wait_until(lambda: not _port_open(port), STOP_S), "the MLflow server still serves"


def test_ctrl_c_handled_by_another_thread_still_stops_the_wait() -> None:
    """The OS may deliver Ctrl-C to any thread of the wrapper (MLflow's client starts some).
    A blocking ``proc.wait()`` then acts on it only when the server exits, that is never;
    the wait must raise KeyboardInterrupt soon anyway."""
    code = (
        "import signal, subprocess, threading, time\n"
        "from search._cli import _wait_interruptibly\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        "def poke():\n"
        "    time.sleep(0.5)\n"
        "    signal.pthread_kill(threading.get_ident(), signal.SIGINT)\n"
        "threading.Thread(target=poke).start()\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    _wait_interruptibly(child)\n"
        "except KeyboardInterrupt:\n"
        "    print(f'{time.monotonic() - t0:.2f}')\n"
        "child.kill()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        preexec_fn=_as_a_terminal_starts_it,
    ).stdout

    assert out.strip() and float(out) < 5.0, out  # a blocking wait takes the child's 30 s


@pytest.mark.slow
def test_a_server_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    """Ctrl-C must not hang on a server slow to act on SIGTERM: after the grace its group is
    killed, well inside the time the Ctrl-C test above allows (STOP_S)."""
    from search._cli import _stop_group

    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        t0 = time.monotonic()
        _stop_group(proc)
        assert proc.returncode == -signal.SIGKILL
        assert time.monotonic() - t0 < STOP_S / 2
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
