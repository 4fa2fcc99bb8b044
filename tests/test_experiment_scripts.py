"""Every experiment script runs end to end on a tiny budget and writes its result files.

Each script runs as a subprocess (as a user runs it), with its output sent to a
temporary folder so experiments/results/ is untouched; the test asserts exit 0
and the keys of the JSON it writes. A script that breaks (an import moved, an
argument renamed, a key dropped from its output) fails here. Most take more
than a few seconds, so they are marked slow. No figure is asserted: these
budgets are far too small to mean anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"


def run_script(name: str, *args: str, timeout: int = 600) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": ""}
    env.pop("MLFLOW_TRACKING_URI")
    proc = subprocess.run(
        [sys.executable, str(EXP / name), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}"


def keys(path: Path) -> set[str]:
    assert path.is_file(), f"{path} was not written"
    return set(json.loads(path.read_text()))


@pytest.mark.slow
def test_bench_estimate(tmp_path: Path) -> None:
    run_script("bench_estimate.py", "--spaces", "cifar", "--measure", "5", "--baseline", "2",
               "--warmup", "5", "--repeats", "1", "--out", str(tmp_path))
    assert {"command", "date", "loadavg_start", "loadavg_end", "spaces", "fixed"} <= keys(
        tmp_path / "bench_estimate.json")
    assert (tmp_path / "bench_estimate.md").read_text().startswith("# costmodel.estimate")


@pytest.mark.slow
def test_bench_search_overhead_and_its_markdown(tmp_path: Path) -> None:
    run_script("bench_search_overhead.py", "--trials", "5", "--out", str(tmp_path))
    doc = keys(tmp_path / "bench_search_overhead.json")
    assert {"command", "date", "load_avg_at_start", "load_avg_at_end", "journal, MLflow off",
            "journal, MLflow on"} <= doc
    md = (tmp_path / "bench_search_overhead.md").read_text()
    assert "Command: `PYTHONPATH=. python experiments/bench_search_overhead.py --trials 5" in md
    # --md-only regenerates the same report from the JSON alone.
    (tmp_path / "bench_search_overhead.md").unlink()
    run_script("bench_search_overhead.py", "--md-only", "--out", str(tmp_path))
    assert (tmp_path / "bench_search_overhead.md").read_text() == md


@pytest.mark.slow
def test_bench_workers(tmp_path: Path) -> None:
    run_script("bench_workers.py", "--trials", "4", "--proxy-trials", "2", "--train-trials", "1",
               "--workers", "1", "--storages", "journal", "--objectives", "analytic",
               "--out", str(tmp_path / "bench_workers"))
    assert {"meta", "rows"} <= keys(tmp_path / "bench_workers.json")


@pytest.mark.slow
def test_bench_private_apis(tmp_path: Path) -> None:
    run_script("bench_private_apis.py", "--trials", "5", "--children", "3", "--out", str(tmp_path))
    assert {"journal", "mlflow_sqlite", "load_avg_at_start"} <= keys(
        tmp_path / "bench_private_apis.json")


@pytest.mark.slow
def test_ranking_truth_and_its_timing_pass(tmp_path: Path) -> None:
    out = tmp_path / "ranking_truth"
    small = ("--archs", "3", "--pilot-archs", "3", "--epochs", "1", "--out", str(out))
    run_script("ranking_truth.py", *small, "--protocols", "n1000_e3_b64,n1000_e6_b64",
               "--workers", "1")
    doc = keys(out.with_suffix(".json"))
    assert {"command", "date_utc", "host", "torch", "loadavg_start", "loadavg_end", "workers",
            "pilot", "protocol", "truth", "correlations", "cifar10", "rows"} <= doc
    run_script("ranking_truth.py", *small, "--timing", "--timing-archs", "2")
    res = json.loads(out.with_suffix(".json").read_text())
    assert {"timing", "recommendation"} <= set(res)
    assert len(res["pilot"]["noise_ceiling"]) == 2 and len(res["rows"]) == 3
    timed = set(res["timing"]["per_estimator"])
    assert {c["estimator"] for c in res["correlations"]} | {"train_e1"} <= timed
    md = out.with_suffix(".md").read_text()
    assert md.startswith("# Ranking truth") and "## Recommendation" in md
    out.with_suffix(".md").unlink()  # --md-only rewrites the same report from the JSON alone
    run_script("ranking_truth.py", "--md-only", "--out", str(out))
    assert out.with_suffix(".md").read_text() == md


@pytest.mark.slow
def test_search_quality(tmp_path: Path) -> None:
    run_script("search_quality.py", "--trials", "6", "--seeds", "1", "--out", str(tmp_path))
    assert {"config", "trials", "seeds", "hypervolume", "curves"} <= keys(
        tmp_path / "search_quality.json")


@pytest.mark.slow
def test_compare_counters(tmp_path: Path) -> None:
    missing = [m for m in ("fvcore", "thop", "ptflops") if importlib.util.find_spec(m) is None]
    if len(missing) == 3:
        pytest.skip(f"no peer counter installed ({', '.join(missing)})")
    run_script("compare_counters.py", "--repeats", "1", "--out", str(tmp_path))
    assert {"command", "versions", "cases", "skipped_peers"} <= keys(
        tmp_path / "compare_counters.json")


@pytest.mark.slow
def test_timing_protocol(tmp_path: Path) -> None:
    out = tmp_path / "protocol"
    run_script("timing_protocol.py", "--n", "3", "--drift-s", "1", "--out", str(out))
    assert {"command", "date", "results", "drift"} <= keys(out.with_suffix(".json"))


@pytest.mark.slow
def test_shufflenet_guidelines(tmp_path: Path) -> None:
    run_script("shufflenet_guidelines.py", "--hw", "t4", "--size", "14", "--rounds", "2",
               "--out", str(tmp_path))
    assert {"hw", "rows", "command", "rounds"} <= keys(tmp_path / "shufflenet_guidelines.json")


def _help_data() -> Path | None:
    for d in (os.environ.get("ROOFNAS_LATENCY_DATA"), ROOT.parent / "shared" / "data" / "latency"):
        if d and Path(d).is_dir():
            return Path(d)
    return None


@pytest.mark.slow
def test_help_latency(tmp_path: Path) -> None:
    data = _help_data()
    if data is None:
        pytest.skip("HELP latency data not found (../shared/data/latency or ROOFNAS_LATENCY_DATA)")
    out = tmp_path / "help"
    run_script("help_latency.py", "--data", str(data), "--sample", "5", "--out", str(out))
    assert {"command", "date", "sample", "spaces"} <= keys(out.with_suffix(".json"))


def test_heldout_list_is_the_frozen_draw(tmp_path: Path) -> None:
    """experiments/heldout_networks.txt is what its seeded sampler draws: fails if the list
    is edited by hand or the sampler changes without the list being redrawn."""
    out = tmp_path / "heldout.txt"
    run_script("heldout_networks.py", "--out", str(out))
    assert out.read_text() == (EXP / "heldout_networks.txt").read_text()
