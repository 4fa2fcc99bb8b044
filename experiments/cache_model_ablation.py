"""Refit recorded CPU calibrations with each cache model, with and without spilled
benchmarks, and predict every recorded validation again (nothing is timed here).

Calibration's single-kernel sweep stays mostly inside the last-level cache, and its
pooling and group-conv benchmarks never leave it, so how those classes slow once their
bytes come from DRAM is extrapolated by the model's form. Two forms
(``hw_profiles`` ``cache_model``): "blend" scales one blended cache / DRAM bandwidth by
the class's memory efficiency; "ceilings" scales the cache bandwidth by it and caps the
missed traffic at DRAM's (a hierarchical roofline). ``spill_benchmarks.json``
(``experiments/spill_benchmarks.py``, timed in the same session) adds layers of every
class with 16-128 MiB working sets to the fit.

Each calibration folder is refitted as ``hw_profiles calibrate`` fits (four variants, two
at a time), and each refitted profile predicts the validations of every session folder
given. Predicted times are scaled to the session's speed where both the session and the
calibration timed the reference network (``reference_s``), so that sessions an hour
apart compare; the unscaled error is beside it.

    python experiments/cache_model_ablation.py \\
        --calibration experiments/results/epyc_2026-12-02_night \\
        --session experiments/results/epyc_2026-12-02_night \\
        --out experiments/results/epyc_2026-12-02_night/cache_model_ablation

Sets named in ``--report`` are printed last and kept apart in the record: read them only
after the choice is made on the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402
from allocator_refit import _scores as refit_scores  # noqa: E402
from allocator_refit import refit  # noqa: E402

from costmodel import estimate  # noqa: E402
from costmodel._cli import parse_network  # noqa: E402
from hw_profiles import calibration_table, load  # noqa: E402
from hw_profiles._toml import profile_to_toml  # noqa: E402

VARIANTS = [("blend", False), ("ceilings", False), ("blend", True), ("ceilings", True)]


def _variant_name(cache_model: str, spill: bool) -> str:
    return f"{cache_model}{'+spill' if spill else ''}"


def _refit_one(job: tuple[Path, str, bool, Path]) -> tuple[str, str]:
    folder, cache_model, spill, out = job
    extra = []
    if spill:
        extra = json.loads((folder / "spill_benchmarks.json").read_text())["benchmarks"]
    hw = refit(folder, cache_model=cache_model, extra_benchmarks=extra)
    name = _variant_name(cache_model, spill)
    path = out / f"{folder.name}_{name.replace('+', '_')}.toml"
    method = f"{folder.name}/calibration_cpu_raw.json refitted, cache_model={cache_model}"
    method += ", with spill_benchmarks.json" if spill else ""
    header = "Written by experiments/cache_model_ablation.py."
    path.write_text(profile_to_toml(hw, {"method": method}, header))
    return name, str(path)


def _reference_s(path: Path) -> dict[str, float]:
    return dict(calibration_table(path).get("reference_s", {}))


def _scores(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    within_25 = float(np.mean(np.abs(pred / meas - 1) <= 0.25))
    return {**refit_scores(pred, meas), "within_25": within_25}


def predict_session(
    session: Path,
    profiles: dict[str, str],
    cal_ref: dict[str, float],
    sets: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """Each recorded validation in ``session`` (of ``sets`` only, when given) predicted by
    every profile in ``profiles``."""
    cells = []
    hws = {variant: load(prof) for variant, prof in profiles.items()}
    for path in sorted(session.glob("validation_cpu_*_b*.json")):
        name, batch = path.stem.removeprefix("validation_cpu_").rsplit("_b", 1)
        if sets is not None and name not in sets:
            continue
        doc = json.loads(path.read_text())
        pts = doc["points"]
        meas = np.array([p["measured_median_s"] for p in pts])
        ref, cal = doc["meta"].get("reference_s"), cal_ref.get(f"b{batch}")
        speed = ref / cal if ref and cal else float("nan")
        cell: dict[str, Any] = {"session": session.name, "set": name, "batch": int(batch),
                                "n": len(pts), "speed": speed, "variants": {}}  # fmt: skip
        nets = [parse_network(p["arch"], ROOT / "experiments") for p in pts]
        for variant, hw in hws.items():
            pred = np.array([estimate(n, hw=hw, batch=int(batch)).total.latency_s for n in nets])
            scaled = pred * speed if speed == speed else pred
            cell["variants"][variant] = {"wall": _scores(pred, meas),
                                         "at_speed": _scores(scaled, meas),
                                         "predicted_s": pred.tolist()}  # fmt: skip
        cell["measured_s"] = meas.tolist()
        cell["archs"] = [p["arch"] for p in pts]
        cells.append(cell)
    return cells


def _row(c: dict[str, Any], variants: list[str]) -> str:
    cols = []
    for v in variants:
        a, w = c["variants"][v]["at_speed"], c["variants"][v]["wall"]
        err, wall = a["median_abs_error"], w["median_abs_error"]
        cols.append(f"{a['spearman']:.3f} / {err:.1%} ({wall:.1%})")
    speed = f"x{c['speed']:.2f}" if c["speed"] == c["speed"] else "-"
    where = f"| {c['calibration']} | {c['session']} | {c['set']} | {c['batch']} | {c['n']} |"
    return f"{where} {speed} | " + " | ".join(cols) + " |"


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    variants = [_variant_name(*v) for v in VARIANTS if _variant_name(*v) in res["variants"]]
    head = ("| calibration | session | set | batch | n | speed | "
            + " | ".join(variants) + " |\n|" + "---|" * (6 + len(variants)))  # fmt: skip
    lines = ["# Cache models and spilled benchmarks, refitted from recorded calibrations", "",
             *header, "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "Each cell: Spearman / median absolute error at the calibration's speed "
             "(the unscaled wall-clock error in brackets). Measured: the median of the "
             "recorded samples.", ""]  # fmt: skip
    for title, rows in (("Development sets", res["development"]),
                        ("Report sets (read after the choice)", res["report"])):  # fmt: skip
        lines += [f"## {title}", "", head, *(_row(c, variants) for c in rows), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calibration", type=Path, action="append", required=True,
                   help="folder with calibration_cpu_raw.json and calibrated_cpu.toml "
                   "(spill variants need its spill_benchmarks.json); repeatable")  # fmt: skip
    p.add_argument("--session", type=Path, action="append", required=True,
                   help="folder with validation_cpu_SET_bN.json files; repeatable")  # fmt: skip
    p.add_argument("--report", action="append",
                   help="a set kept for the report; repeatable, replaces the default "
                   "(cifar_classics)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="record path, without suffix")
    p.add_argument("--jobs", type=int, default=2, help="refits at a time (default 2)")
    args = p.parse_args(argv)
    args.report = args.report or ["cifar_classics"]
    prov = provenance_start("experiments/cache_model_ablation.py", argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    prof_dir = args.out.parent / (args.out.name + "_profiles")
    prof_dir.mkdir(exist_ok=True)
    jobs = [(f, m, s, prof_dir) for f in args.calibration for m, s in VARIANTS
            if not s or (f / "spill_benchmarks.json").exists()]  # fmt: skip
    with ProcessPoolExecutor(args.jobs) as pool:
        done = list(pool.map(_refit_one, jobs))
    dev, rep = [], []
    for f in args.calibration:
        profiles = {n: path for (ff, *_), (n, path) in zip(jobs, done, strict=True) if ff == f}
        ref = _reference_s(f / "calibrated_cpu.toml")
        for s in args.session:
            for c in predict_session(s, profiles, ref):
                c["calibration"] = f.name
                (rep if c["set"] in args.report else dev).append(c)
                if c["set"] not in args.report:
                    print(_row(c, list(profiles)), flush=True)
    res = {"variants": sorted({n for _, (n, _) in zip(jobs, done, strict=True)}),
           "profiles": [p for _, p in done], "development": dev, "report": rep}  # fmt: skip
    print(f"wrote {write_record(args.out, provenance_finish(prov), res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
