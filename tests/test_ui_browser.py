"""From ``python -m search ui`` to a decision, in a real headless browser (Playwright).

Two studies in one store; the UI's experiment list shows the experiment, the printed URL
opens its runs table (not MLflow's GenAI overview) with the two parent runs, Compare shows
their params and metrics side by side, and a parent run's artifacts hold the Pareto plot.

Needs the ``playwright`` package (extra ``ui``) and a system Chromium (``/usr/bin/chromium``
or $ROOFNAS_CHROMIUM); the browser Playwright would download is never used. With
ROOFNAS_UI_SCREENSHOTS=DIR set, each step is saved as DIR/NN_step.png (1280x800).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_ui import ROOT, _ui

CHROMIUM = os.environ.get("ROOFNAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
STEP_MS = 60_000  # bound on one page's wait (the UI's first answers are slow on 2 loaded cores)

pytestmark = pytest.mark.slow


def _run(out_dir: Path, study: str, sampler: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "search", "run", "--study", study, "--sampler", sampler,
           "--trials", "20", "--estimator", "none", "--out-dir", str(out_dir),
           "--quiet"]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)


def test_ui_runs_page_compare_and_artifacts_in_a_browser(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install 'roofnas[ui]'")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no system Chromium at {CHROMIUM} (set ROOFNAS_CHROMIUM)")
    shots = os.environ.get("ROOFNAS_UI_SCREENSHOTS")
    out_dir = tmp_path / "runs"
    _run(out_dir, "nsga", "nsga2")
    _run(out_dir, "random", "random")
    log = tmp_path / "ui.log"
    with _ui(out_dir, log) as (_proc, port), sync_api.sync_playwright() as pw:
        runs_url = re.search(r"roofnas/default: (\S+)", log.read_text())
        assert runs_url, log.read_text()
        assert runs_url.group(1).startswith(f"http://127.0.0.1:{port}/#/experiments/")
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(STEP_MS)
        expect = sync_api.expect

        def shot(name: str) -> None:
            if shots:
                page.wait_for_timeout(1500)  # let scrolling and images settle
                Path(shots).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(shots) / f"{name}.png"))

        # 1. the experiment list (MLflow's home page) shows the experiment
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.get_by_role("link", name="roofnas/default")).to_be_visible()
        shot("01_experiment_list")

        # 2. the printed URL: the runs table with the two parent runs, not the GenAI overview
        page.goto(runs_url.group(1))
        for name in ("nsga", "random"):
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        expect(page.get_by_text("No data available")).to_have_count(0)
        shot("02_runs_page")

        # 3. select both parent runs, Compare: params and metrics side by side
        for name in ("nsga", "random"):
            row = page.get_by_role("row").filter(
                has=page.get_by_role("link", name=name, exact=True)
            )
            row.get_by_role("checkbox").first.check()
        page.get_by_role("button", name="Compare").click()
        expect(page.get_by_text(re.compile(r"Comparing 2 Runs"))).to_be_visible()
        for key in ("target.0", "constraint.latency_s/t4", "pareto_size", "hypervolume"):
            cell = page.get_by_text(key, exact=True).last
            cell.scroll_into_view_if_needed()
            expect(cell).to_be_visible()
        if shots:  # afresh: scrolling a cell into view scrolls the key column alone
            page.reload()
            page.get_by_text("target.0", exact=True).last.scroll_into_view_if_needed()
            shot("03_compare_params")
            page.reload()
            page.get_by_text("Metrics", exact=True).last.scroll_into_view_if_needed()
            shot("04_compare_metrics")

        # 4. a parent run's artifacts hold the Pareto plot
        page.goto(runs_url.group(1))
        page.get_by_role("link", name="nsga", exact=True).click()
        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("pareto.png", exact=True).click()
        expect(page.get_by_role("img", name="pareto.png")).to_be_visible()
        page.wait_for_function(  # the PNG itself arrived and decoded, not just its frame
            "() => [...document.images].some("
            "i => i.alt === 'pareto.png' && i.complete && i.naturalWidth > 0)"
        )
        shot("05_parent_artifacts_pareto_png")
        browser.close()
