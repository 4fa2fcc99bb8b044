"""How long MLflow's UI takes to show a large study: the runs page and the parent run's page.

Makes a study the way the product does (``python -m search run``: default experiment,
random sampler, no accuracy estimator, MLflow on a local sqlite store, one child run per
trial), starts ``python -m search ui`` on a free loopback port and times, in headless
Chromium (Playwright, the system browser), from navigation until a known element shows:

- runs page (``#/experiments/<id>/runs``, the URL ``search ui`` prints): the parent run's
  name link in the runs table;
- parent run page (``#/experiments/<id>/runs/<run id>``): the ``target.0`` param.

Each page is loaded ``--repeats`` times, each in a fresh browser context (no cache), and
the median is reported. Target: <= 3 s each. Results: experiments/results/bench_ui_scale.*

    PYTHONPATH=. .venv/bin/python experiments/bench_ui_scale.py --trials 10000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
TARGET_S = 3.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def make_study(out_dir: Path, trials: int) -> tuple[float, dict[str, object]]:
    cmd = [sys.executable, "-m", "search", "run", "--study", "scale", "--sampler", "random",
           "--trials", str(trials), "--estimator", "none", "--out-dir", str(out_dir),
           "--quiet", "--json"]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, env=_env(), capture_output=True, text=True).stdout
    return time.perf_counter() - t0, json.loads(out[out.index("{") :])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def ui(out_dir: Path, log: Path) -> Iterator[tuple[int, str]]:
    """``search ui`` on a free port: (port, the runs-page URL it printed)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "search", "ui", "--out-dir", str(out_dir), "--port", str(port)]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(),
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3).status == 200:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"UI did not answer: {log.read_text()}")
        url = re.search(r": (http://\S+/runs\S*)", log.read_text())
        assert url, log.read_text()
        yield port, url.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def time_pages(runs_url: str, run_url: str, parent: str, repeats: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("ROOFNAS_CHROMIUM", "/usr/bin/chromium")
    out: dict[str, list[float]] = {"runs_page_s": [], "parent_run_page_s": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        for _ in range(repeats):
            for key, url, locate in (
                ("runs_page_s", runs_url, lambda p: p.get_by_role("link", name=parent, exact=True)),
                ("parent_run_page_s", run_url, lambda p: p.get_by_text("target.0", exact=True)),
            ):
                ctx = browser.new_context(viewport={"width": 1280, "height": 800})
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(url)
                locate(page).first.wait_for(state="visible", timeout=120_000)
                out[key].append(time.perf_counter() - t0)
                ctx.close()
        browser.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", help="directory for the run (default: a temporary one)")
    args = ap.parse_args()
    command = f"PYTHONPATH=. .venv/bin/python experiments/bench_ui_scale.py --trials {args.trials}"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.keep or tmp) / "runs"
        make_s, summary = make_study(out_dir, args.trials)
        parent = str(summary["mlflow_parent_run_id"])
        with ui(out_dir, Path(tmp) / "ui.log") as (port, runs_url):
            exp_id = re.search(r"experiments/(\d+)/", runs_url).group(1)  # type: ignore[union-attr]
            run_url = f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs/{parent}"
            times = time_pages(runs_url, run_url, "scale", args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "command": command,
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "trials": args.trials,
        "make_study_s": make_s,
        "repeats": times,
        "median_s": med,
        "target_s": TARGET_S,
        "met": all(v <= TARGET_S for v in med.values()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_ui_scale.json").write_text(json.dumps(res, indent=1) + "\n")
    rows = "\n".join(
        f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in times.items()
    )
    (RESULTS / "bench_ui_scale.md").write_text(
        f"# MLflow UI at scale: {args.trials:,} trials\n\n`{command}`\n\n"
        f"{res['date_utc']}, {res['machine']}, load average before "
        f"{', '.join(f'{x:.2f}' for x in load_before)} (after "
        f"{', '.join(f'{x:.2f}' for x in res['loadavg_after'])}).\n\n"
        f"Making the study (`search run`, random sampler, estimator none, MLflow on): "
        f"{make_s:.0f} s.\n\n| page (until its content shows) | median s | repeats s |\n"
        f"|---|---|---|\n{rows}\n\nTarget <= {TARGET_S:g} s each: "
        f"{'met' if res['met'] else 'NOT met'}.\n"
    )
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
