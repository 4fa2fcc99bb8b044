"""Refit a recorded CPU calibration with and without its classifier heads, and predict every
recorded validation again (nothing is timed here).

Calibration's sweep ends with six classifier heads (``costmodel._bench.classifier_heads``:
512-2048 features to 10-1000 classes at batch 1-32). Before them the linear class's
efficiencies rested on one GEMM-bound linear among eight that mostly pay their fixed
cost, which the robust fit could discount as an outlier. This refits a calibration that
timed the heads, exactly as ``hw_profiles calibrate`` fits, twice: with every benchmark
("heads") and with the heads left out ("no heads", the sweep as it was), so that the
difference is theirs alone. Both profiles predict the validations of every session
folder given; the heads' own timings are predicted beside them.

    python experiments/linear_heads_ablation.py \\
        --calibration experiments/results/epyc_2026-12-03 \\
        --session experiments/results/epyc_2026-12-03 \\
        --out experiments/results/epyc_2026-12-03/linear_heads_ablation

Sets named in ``--report`` are printed last and kept apart in the record: read them only
after the choice is made on the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402
from allocator_refit import refit  # noqa: E402
from cache_model_ablation import _reference_s, _row, predict_session  # noqa: E402

from costmodel._bench import classifier_heads  # noqa: E402
from costmodel._calibrate import spec_from_dict  # noqa: E402
from costmodel._fit import predict_single  # noqa: E402
from hw_profiles import HardwareProfile, load  # noqa: E402
from hw_profiles._toml import profile_to_toml  # noqa: E402

VARIANTS = ("heads", "no heads")
DEFAULT_REPORT = ["cifar_classics", "torchvision_classics"]


def refit_variants(folder: Path, out: Path) -> dict[str, str]:
    """Both refits of ``folder``'s calibration, each written to ``out`` as soon as it ends."""
    paths = {}
    for name, leave_out in (("heads", ()), ("no heads", classifier_heads())):
        hw = refit(folder, leave_out=leave_out)
        path = out / f"{folder.name}_{name.replace(' ', '_')}.toml"
        method = f"{folder.name}/calibration_cpu_raw.json refitted"
        method += ", classifier heads left out" if leave_out else ", every benchmark"
        header = "Written by experiments/linear_heads_ablation.py."
        path.write_text(profile_to_toml(hw, {"method": method}, header))
        paths[name] = str(path)
    return paths


def linear_terms(hw: HardwareProfile) -> dict[str, float]:
    """What the fit gave the linear class: efficiencies and eager fixed cost."""
    ce, me = hw.efficiency("linear", "fp32")
    return {"compute_efficiency": ce, "memory_efficiency": me,
            "host_s": hw.runtime("eager").host_s("linear")}  # fmt: skip


def head_ratios(folder: Path, hws: dict[str, HardwareProfile]) -> list[dict[str, Any]]:
    """The calibration's own timings of its classifier heads, predicted by each refit."""
    raw = json.loads((folder / "calibration_cpu_raw.json").read_text())
    heads = set(classifier_heads())
    rows = []
    for b in raw["benchmarks"]:
        spec = spec_from_dict(b["spec"])
        if spec in heads:
            ratios = {v: predict_single(spec, hw, "fp32") / b["time_s"] for v, hw in hws.items()}
            rows.append({"in_shape": list(spec.in_shape), "out_features": spec.out_channels,
                         "measured_s": b["time_s"], "ratio": ratios})  # fmt: skip
    return rows


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    head = ("| calibration | session | set | batch | n | speed | "
            + " | ".join(VARIANTS) + " |\n|" + "---|" * (6 + len(VARIANTS)))  # fmt: skip
    lines = ["# Classifier heads in calibration's sweep, refitted with and without them", "",
             *header, "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "## The linear class as each refit has it", "",
             "| calibration | variant | compute efficiency | memory efficiency | fixed cost |",
             "|---|---|---|---|---|"]  # fmt: skip
    for cal, terms in res["linear"].items():
        for v in VARIANTS:
            ce, me, host = (terms[v][k] for k in ("compute_efficiency", "memory_efficiency",
                                                  "host_s"))  # fmt: skip
            lines.append(f"| {cal} | {v} | {ce:.3f} | {me:.3f} | {host * 1e6:.1f} us |")
    lines += ["", "Predicted / measured on the calibration's own heads:", "",
              "| calibration | input | out | measured | " + " | ".join(VARIANTS) + " |",
              "|---|---|---|---|" + "---|" * len(VARIANTS)]  # fmt: skip
    for cal, rows in res["heads"].items():
        for r in rows:
            ratios = " | ".join(f"{r['ratio'][v]:.2f}" for v in VARIANTS)
            lines.append(f"| {cal} | {r['in_shape']} | {r['out_features']} | "
                         f"{r['measured_s'] * 1e6:.0f} us | {ratios} |")  # fmt: skip
    lines += ["", "Each cell below: Spearman / median absolute error at the calibration's "
              "speed (the unscaled wall-clock error in brackets). Measured: the median of the "
              "recorded samples.", ""]  # fmt: skip
    for title, rows in (("Development sets", res["development"]),
                        ("Report sets (read after the choice)", res["report"])):  # fmt: skip
        lines += [f"## {title}", "", head, *(_row(c, list(VARIANTS)) for c in rows), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calibration", type=Path, action="append", required=True,
                   help="folder with calibration_cpu_raw.json (its sweep timed the heads) and "
                   "calibrated_cpu.toml; repeatable")  # fmt: skip
    p.add_argument("--session", type=Path, action="append", required=True,
                   help="folder with validation_cpu_SET_bN.json files; repeatable")  # fmt: skip
    p.add_argument("--report", action="append",
                   help="a set kept for the report; repeatable, replaces the default "
                   f"({', '.join(DEFAULT_REPORT)})")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="record path, without suffix")
    args = p.parse_args(argv)
    report = args.report or DEFAULT_REPORT
    prov = provenance_start("experiments/linear_heads_ablation.py", argv)
    prof_dir = args.out.parent / (args.out.name + "_profiles")
    prof_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"linear": {}, "heads": {}, "development": [], "report": []}
    for f in args.calibration:
        paths = refit_variants(f, prof_dir)
        hws = {v: load(path) for v, path in paths.items()}
        res["linear"][f.name] = {v: linear_terms(hw) for v, hw in hws.items()}
        res["heads"][f.name] = head_ratios(f, hws)
        for s in args.session:
            for c in predict_session(s, paths, _reference_s(f / "calibrated_cpu.toml")):
                c["calibration"] = f.name
                res["report" if c["set"] in report else "development"].append(c)
                if c["set"] not in report:
                    print(_row(c, list(VARIANTS)), flush=True)
    print(f"wrote {write_record(args.out, provenance_finish(prov), res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
