"""What op chains and the cold-start constant do to a CPU calibration, on one set of timings.

Refits a calibration's recorded raw measurements (``calibrate --raw``) three ways and
predicts the development list (``validate --set dev-list``, timed in the same session):

- networks: the fit before op chains (single kernels + the 40 calibration networks);
- + op chains: the chains of one streaming op (``costmodel._chains``) as more networks;
- + cold start: also a constant each lone kernel pays and no network does (``fit_profile``'s
  ``cold_start``), what ``hw_profiles calibrate`` does now.

Nothing is timed: the same measurements are fitted three ways, so the differences are the
method's alone. Only development-list networks are predicted here (design decisions are
made on them); the held-out list and the unseen families are validated separately.

    python experiments/calibration_ablation.py experiments/results/epyc_op_chains/trial
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from costmodel import _calibrate as C  # noqa: E402
from costmodel._ceilings import Ceilings  # noqa: E402
from costmodel._cli import DEV_LIST_FILE, read_networks  # noqa: E402
from costmodel._fit import NetworkRow, fit_profile  # noqa: E402
from costmodel._report import analyze  # noqa: E402
from hw_profiles import HardwareProfile  # noqa: E402

VARIANTS = (("networks", False, False), ("+ op chains", True, False),
            ("+ op chains + cold start", True, True))  # fmt: skip


def _rows(items: list[dict[str, Any]]) -> list[NetworkRow]:
    return [(tuple(C.spec_from_dict(s) for s in n["layers"]), n["time_s"]) for n in items]


def _median_error(hw: HardwareProfile, rows: list[NetworkRow]) -> float:
    return statistics.median(
        abs(analyze(list(sp), hw, "fp32", "eager").total.latency_s / t - 1) for sp, t in rows
    )


def _devlist(hw: HardwareProfile, folder: Path, batch: int) -> dict[str, float]:
    doc = json.loads((folder / f"validation_cpu_devlist_b{batch}.json").read_text())
    measured = {p["arch"]: p["measured_s"] for p in doc["points"]}
    nets = read_networks(DEV_LIST_FILE)
    pred = np.array([analyze(list(n.lower(batch)), hw, "fp32", "eager").total.latency_s
                     for n in nets])  # fmt: skip
    meas = np.array([measured[str(n)] for n in nets])
    # The machine's speed then over now (the reference network, timed in both sessions): the
    # validation's times scaled to the machine calibration saw, as `validate` reports them.
    at_calibration_speed = meas * (doc["meta"]["speed_factor"] or 1.0)
    return {"spearman": float(spearmanr(pred, meas).statistic),
            "median_abs_error": float(np.median(np.abs(pred / meas - 1))),
            "median_ratio": float(np.median(pred / meas)),
            "speed_factor": doc["meta"]["speed_factor"],
            "median_abs_error_at_calibration_speed": float(
                np.median(np.abs(pred / at_calibration_speed - 1)))}  # fmt: skip


def ablation(folder: Path) -> list[dict[str, Any]]:
    raw = json.loads((folder / "calibration_cpu_raw.json").read_text())
    specs = [C.spec_from_dict(b["spec"]) for b in raw["benchmarks"]]
    times = [b["time_s"] for b in raw["benchmarks"]]
    nets, chains = _rows(raw["networks"]), _rows(raw.get("op_chains", []))
    base = C._base_profile("cpu", 1, None, "ablation", Ceilings(**raw["ceilings"]),
                           raw["overheads_s"])  # fmt: skip
    out = []
    for label, with_chains, cold in VARIANTS:
        if with_chains and not chains:
            continue
        fit = fit_profile(base, specs, times, nets=nets + (chains if with_chains else []),
                          cold_start=cold)  # fmt: skip
        hw = C._with_graph_class_costs(fit.profile)
        out.append({
            "variant": label,
            "benchmark_error": fit.fit_median_abs_error,
            "network_error": _median_error(hw, nets),
            "chain_error": _median_error(hw, chains) if chains else None,
            "cold_start_s": fit.cold_start_s,
            **{f"b{b}": _devlist(hw, folder, b) for b in (1, 32)},
        })  # fmt: skip
        print(out[-1], flush=True)
    return out


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| fit | benchmarks | calibration networks | op chains | cold start | "
             "dev b1 rho | MdAPE | at calibration speed | ratio | "
             "dev b32 rho | MdAPE | at calibration speed | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        chain = "-" if r["chain_error"] is None else f"{r['chain_error']:.1%}"
        cells = [r["variant"], f"{r['benchmark_error']:.1%}", f"{r['network_error']:.1%}",
                 chain, f"{r['cold_start_s'] * 1e6:.1f} us"]  # fmt: skip
        for b in ("b1", "b32"):
            d = r[b]
            cells += [f"{d['spearman']:.3f}", f"{d['median_abs_error']:.1%}",
                      f"{d['median_abs_error_at_calibration_speed']:.1%} "
                      f"(x{d['speed_factor'] or 1:.3f})", f"{d['median_ratio']:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "folder",
        type=Path,
        help="holds calibration_cpu_raw.json and "
        "validation_cpu_devlist_b{1,32}.json from one session",
    )
    args = p.parse_args(argv)
    rows = ablation(args.folder)
    (args.folder / "calibration_ablation.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = [f"# Calibration ablation: {args.folder}", "",
            f"Command: `python experiments/calibration_ablation.py {args.folder}` (no timing; "
            "refits the recorded measurements). Errors: median absolute error; ratio: median "
            "predicted / measured. 'at calibration speed': the validation's times scaled by "
            "the reference network's speed then over now (x factor), as `validate` reports "
            "them: on a shared VM whose speed drifts, that compares the fits on the machine "
            "state they were fitted in. Development list only.", "",
            *_table(rows)]  # fmt: skip
    (args.folder / "calibration_ablation.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
