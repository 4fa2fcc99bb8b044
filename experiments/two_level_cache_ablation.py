"""A second cache level on recorded CPU calibrations: the private L2 in front of the fitted
shared-cache / DRAM blend. Refits and predicts; only the L2 copy rate is timed here.

The shipped CPU model has one cache level. Calibration measures its ceiling with copies of
a quarter of the last-level cache, which on the Intel Xeon VM's 260 MiB shared L3 is an
L3 rate (16-22 GB/s), and fits the cache's effective size and fall-off. A layer's
tensors at batch 1 sit in the 2 MiB private L2 (77 GB/s). Putting the L2 rate in place
of the L3 rate (experiments/im2col_l2_ablation.py) helped batch 32 and hurt batch 1: one
blended level then had to span L2 to DRAM. Here the L2 serves a share
h2 = 1 / (1 + (bytes / L2)^p2) of a kernel's traffic at its copy rate and the rest comes
from the fitted blend, harmonically: 1 / bw = h2 / bw_L2 + (1 - h2) / bw_blend. L2 is
the size sysfs gives, p2 a fixed exponent per variant; everything else is fitted exactly
as ``hw_profiles calibrate`` fits, the blend's size and fall-off included.

    python experiments/two_level_cache_ablation.py \\
        --calibration experiments/results/xeon_2026-12-03_c \\
        --out experiments/results/xeon_2026-12-03_c/two_level_cache_ablation

Each calibration's own validations are predicted, of the development sets only
(``--sets``): sets kept for reports are not predicted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402
from allocator_refit import refit  # noqa: E402
from cache_model_ablation import _reference_s, _row, predict_session  # noqa: E402
from im2col_l2_ablation import fitted_terms, l2_bytes, l2_copy_rate  # noqa: E402

from costmodel import _latency  # noqa: E402
from costmodel._estimate import clear_cache  # noqa: E402
from hw_profiles import HardwareProfile  # noqa: E402
from hw_profiles._toml import profile_to_toml  # noqa: E402

# The L2's fall-off exponent per variant; None: the model as it ships.
VARIANTS: dict[str, float | None] = {"shipped": None, "L2 p=2": 2.0, "L2 p=4": 4.0,
                                     "L2 p=8": 8.0}  # fmt: skip
DEFAULT_SETS = ["heldout", "unseen_families", "pure_networks"]


def l2_hit_share(mac_bytes: int, l2: int, exponent: float) -> float:
    """The share of a kernel's traffic the private L2 serves."""
    return 1.0 / (1.0 + (mac_bytes / l2) ** exponent)


@contextlib.contextmanager
def l2_level(l2: int, rate: float, exponent: float) -> Iterator[None]:
    """The latency model with the L2 in front of the profile's cache / DRAM blend."""
    original = _latency.memory_bandwidth

    def two_levels(mac_bytes: int, hw: HardwareProfile) -> float:
        far = original(mac_bytes, hw)
        hit = l2_hit_share(mac_bytes, l2, exponent)
        return 1.0 / (hit / max(rate, far) + (1.0 - hit) / far)

    _latency.memory_bandwidth = two_levels
    clear_cache()
    try:
        yield
    finally:
        _latency.memory_bandwidth = original
        clear_cache()


def fit_and_predict(folder: Path, out: Path, l2: int, rate: float, sets: list[str]
                    ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Every variant refitted from ``folder``'s calibration and predicting its validations
    of ``sets``."""
    cal_ref = _reference_s(folder / "calibrated_cpu.toml")
    terms, cells = {}, {}
    for variant, exponent in VARIANTS.items():
        patch = contextlib.nullcontext() if exponent is None else l2_level(l2, rate, exponent)
        with patch:
            hw = refit(folder)
            path = out / f"{folder.name}_{variant.replace(' ', '_').replace('=', '')}.toml"
            header = ("Written by experiments/two_level_cache_ablation.py; the L2 level is "
                      f"not in the profile ({variant}).")  # fmt: skip
            path.write_text(profile_to_toml(hw, {"method": f"{variant} refit"}, header))
            terms[variant] = fitted_terms(hw)
            for c in predict_session(folder, {variant: str(path)}, cal_ref, sets):
                cells.setdefault((c["set"], c["batch"]), c)["variants"].update(c["variants"])
    return terms, list(cells.values())


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    names = list(VARIANTS)
    head = ("| calibration | session | set | batch | n | speed | " + " | ".join(names)
            + " |\n|" + "---|" * (6 + len(names)))  # fmt: skip
    lines = ["# A private L2 in front of the fitted cache blend, refitted", "", *header, "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"L2: {res['l2_bytes']} bytes per core, copied at "
             f"{res['l2_copy_bytes_per_s'] / 1e9:.1f} GB/s here (half the L2 as source and "
             "destination, best of 35); the same rate stands in for every calibration given.",
             "", "## What the fits make of it", "",
             "| calibration | variant | blend cache GB/s | MB | falloff | native conv ce / me | "
             "elementwise me | activation me |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for cal, by_variant in res["terms"].items():
        for v, t in by_variant.items():
            lines.append(
                f"| {cal} | {v} | {t['cache_bandwidth_bytes_per_s'] / 1e9:.1f} | "
                f"{t['cache_bytes'] / 1e6:.1f} | {t['cache_falloff_exponent']:.2f} | "
                f"{t['native_conv_compute_efficiency']:.2f} / "
                f"{t['native_conv_memory_efficiency']:.2f} | "
                f"{t['elementwise_memory_efficiency']:.2f} | "
                f"{t['activation_memory_efficiency']:.2f} |"
            )
    lines += ["", "## Development sets", "", "Each cell: Spearman / median absolute error at "
              "the calibration's speed (the unscaled wall-clock error in brackets). Measured: "
              "the median of the recorded samples.", "", head,
              *(_row(c, names) for c in res["cells"]), ""]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calibration", type=Path, action="append", required=True,
                   help="folder with calibration_cpu_raw.json, calibrated_cpu.toml and that "
                   "session's validation_cpu_SET_bN.json; repeatable")  # fmt: skip
    p.add_argument("--sets", action="append",
                   help=f"a development set to predict; repeatable (default: "
                   f"{', '.join(DEFAULT_SETS)})")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="record path, without suffix")
    args = p.parse_args(argv)
    sets = args.sets or DEFAULT_SETS
    prov = provenance_start("experiments/two_level_cache_ablation.py", argv)
    l2 = l2_bytes()
    rate = l2_copy_rate(l2)
    print(f"L2 {l2} B, copy rate {rate / 1e9:.1f} GB/s", flush=True)
    prof_dir = args.out.parent / (args.out.name + "_profiles")
    prof_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"l2_bytes": l2, "l2_copy_bytes_per_s": rate, "terms": {},
                           "cells": []}  # fmt: skip
    for folder in args.calibration:
        terms, cells = fit_and_predict(folder, prof_dir, l2, rate, sets)
        res["terms"][folder.name] = terms
        for c in cells:
            c["calibration"] = folder.name
            print(_row(c, list(VARIANTS)), flush=True)
        res["cells"] += cells
    print(f"wrote {write_record(args.out, provenance_finish(prov), res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
