"""Two CPU memory corrections tried on recorded calibrations: PyTorch's im2col column buffer
and an L2 cache ceiling. Refits and predicts; only the L2 copy rate is timed here.

On the Intel Xeon VM the fitted profile leaves two classes visibly wrong. (1) PyTorch's
native CPU conv (``slow_conv2d``, batch 1, small inputs) unfolds every input window into a
column buffer before its GEMM unless the conv is 1x1, unstrided and unpadded: on torch
2.13 a 16 -> 16 3x3 conv on 32x32 allocates 589,824 bytes more than the 1x1 conv of the
same tensors and takes 65-70 us against 11-16 us, and NAS-Bench-201 with 3x3 convs on
every edge is predicted at 0.82x its time, with 1x1 convs at 1.34x. (2) Calibration
measures the cache ceiling with copies of a quarter of the last-level cache, which on a
260 MiB shared L3 is an L3 rate (18-22 GB/s), while a layer's tensors at batch 1 sit in
the 2 MiB private L2 (75 GB/s); the element-wise classes' memory efficiencies then stop
at their bound of 1 and the op chains of adds and ReLUs come out 1.5-3x too slow.
Variants, each fitted exactly as ``hw_profiles calibrate`` fits: "shipped" (the model as
it is), "columns" (the column buffer's write and read-back charged to native convs as
memory traffic), "L2 ceiling" (the cache ceiling replaced by a copy rate measured here
at half the private L2), "both".

    python experiments/im2col_l2_ablation.py \\
        --calibration experiments/results/xeon_2026-12-03_c \\
        --out experiments/results/xeon_2026-12-03_c/im2col_l2_ablation

Each calibration's own validations are predicted, of the development sets only
(``--sets``): sets kept for reports are not predicted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402
from allocator_refit import refit  # noqa: E402
from cache_model_ablation import _reference_s, _row, predict_session  # noqa: E402

from costmodel import _fit, _latency  # noqa: E402
from costmodel._ceilings import cpu_cache_levels  # noqa: E402
from costmodel._formulas import output_shape  # noqa: E402
from costmodel._kinds import latency_class  # noqa: E402
from costmodel._measure import make_timer  # noqa: E402
from costmodel._spec import LayerSpec  # noqa: E402
from costmodel._units import elements_to_bytes  # noqa: E402
from hw_profiles import HardwareProfile  # noqa: E402
from hw_profiles._toml import profile_to_toml  # noqa: E402

TITLE = "im2col column traffic and an L2 cache ceiling, refitted"
DEFAULT_SETS = ["heldout", "unseen_families", "pure_networks"]


def column_elements(spec: LayerSpec) -> int:
    """Elements of the column buffer ``slow_conv2d`` unfolds its input into (0 when the
    conv is 1x1, unstrided, unpadded and undilated: the input is then the matrix)."""
    kh, kw = spec.kernel_size
    plain = all(v == 1 for v in (kh, kw, *spec.stride, *spec.dilation))
    if plain and not any(spec.padding):
        return 0
    n, c = spec.in_shape[:2]
    _, _, h_out, w_out = output_shape(spec)
    return n * c * kh * kw * h_out * w_out


@contextlib.contextmanager
def columns_charged() -> Iterator[None]:
    """The latency model with each native conv's column buffer written and read back."""
    original = _latency.roofline_time

    def with_columns(spec: LayerSpec, counts: Any, mac_bytes: int, hw: HardwareProfile,
                     precision: str, runtime: str, **kw: Any) -> Any:  # fmt: skip
        if latency_class(spec, hw.conv_dispatch, hw.threads) == "native_conv":
            mac_bytes += 2 * elements_to_bytes(column_elements(spec), precision)
        return original(spec, counts, mac_bytes, hw, precision, runtime, **kw)

    _latency.roofline_time = _fit.roofline_time = with_columns
    try:
        yield
    finally:
        _latency.roofline_time = _fit.roofline_time = original


def l2_bytes() -> int:
    """The per-core mid-level (L2) cache; exits when sysfs does not give one."""
    l2 = cpu_cache_levels().get(2)
    if not l2:
        raise SystemExit("no L2 cache in /sys/devices/system/cpu/cpu0/cache")
    return l2


def l2_copy_rate(l2: int) -> float:
    """Bytes per second copied with source and destination in half the L2 (best of 35:
    on a shared VM single rounds of 7 ranged 49-79 GB/s)."""
    torch.set_num_threads(1)
    src = torch.empty(l2 // 4 // 4).uniform_()
    dst = torch.empty_like(src)
    seconds = make_timer("cpu")(lambda: dst.copy_(src), repeats=35, min_s=2e-3, best=True)
    return 2 * src.numel() * 4 / seconds


# A variant: the recorded ceilings it replaces, the model patch it is fitted and predicts
# under and what it makes of the recorded benchmark records (all empty or None for the
# model and calibration as they ship).
@dataclass(frozen=True)
class Variant:
    ceilings: Mapping[str, float]
    patch: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    benchmarks: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None


def im2col_variants(rate: float) -> dict[str, Variant]:
    """This script's variants; ``rate``: the L2 copy rate in bytes per second."""
    l2 = {"cache_bandwidth_bytes_per_s": rate}
    return {"shipped": Variant({}), "columns": Variant({}, columns_charged),
            "L2 ceiling": Variant(l2), "both": Variant(l2, columns_charged)}  # fmt: skip


def fit_and_predict(
    folder: Path,
    out: Path,
    variants: Mapping[str, Variant],
    sets: list[str],
    script: str,
    terms_of: Callable[[HardwareProfile], dict[str, float]] | None = None,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Every variant refitted from ``folder``'s calibration and predicting its validations
    of ``sets``; each refitted profile written to ``out``, what it fitted summarised by
    ``terms_of`` (default ``fitted_terms``)."""
    terms_of = terms_of or fitted_terms
    cal_ref = _reference_s(folder / "calibrated_cpu.toml")
    terms, cells = {}, {}
    for name, variant in variants.items():
        with variant.patch():
            hw = refit(folder, ceilings=variant.ceilings, benchmarks=variant.benchmarks)
            slug = re.sub(r"[^A-Za-z0-9_.-]", "", name.replace(" ", "_"))
            path = out / f"{folder.name}_{slug}.toml"
            header = f"Written by {script} ({name}); a patched model is not in the profile."
            path.write_text(profile_to_toml(hw, {"method": f"{name} refit"}, header))
            terms[name] = terms_of(hw)
            for c in predict_session(folder, {name: str(path)}, cal_ref, sets):
                cells.setdefault((c["set"], c["batch"]), c)["variants"].update(c["variants"])
    return terms, list(cells.values())


def fitted_terms(hw: HardwareProfile) -> dict[str, float]:
    """What each refit makes of the classes these corrections touch."""
    terms = {
        "cache_bandwidth_bytes_per_s": hw.cache_bandwidth_bytes_per_s,
        "cache_bytes": hw.cache_bytes,
        "cache_falloff_exponent": hw.cache_falloff_exponent,
    }
    for cls in ("native_conv", "dense_conv", "elementwise", "activation"):
        ce, me = hw.efficiency(cls, "fp32")
        terms[f"{cls}_compute_efficiency"], terms[f"{cls}_memory_efficiency"] = ce, me
    return terms


def to_markdown(res: dict[str, Any], header: list[str], title: str, doc: str) -> str:
    lines = [f"# {title}", "", *header, "", doc.split("\n\n")[1].replace("\n", " "), "",
             f"L2: {res['l2_bytes']} bytes per core, copied at "
             f"{res['l2_copy_bytes_per_s'] / 1e9:.1f} GB/s here (half the L2 as source and "
             "destination, best of 35); the same rate stands in for every calibration given.",
             "", "## What the fits make of it", "",
             "| calibration | variant | cache GB/s | cache MB | falloff | native conv ce / me | "
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
    return "\n".join([*lines, *development_table(res)]) + "\n"


def development_table(res: dict[str, Any]) -> list[str]:
    """The record's "Development sets" section: a row per calibration, set and batch."""
    names = res["variants"]
    head = ("| calibration | session | set | batch | n | speed | " + " | ".join(names)
            + " |\n|" + "---|" * (6 + len(names)))  # fmt: skip
    return ["", "## Development sets", "", "Each cell: Spearman / median absolute error at "
            "the calibration's speed (the unscaled wall-clock error in brackets). Measured: "
            "the median of the recorded samples.", "", head,
            *(_row(c, names) for c in res["cells"]), ""]  # fmt: skip


def refit_all(args: argparse.Namespace, variants: Mapping[str, Variant], script: str,
              terms_of: Callable[[HardwareProfile], dict[str, float]] | None = None
              ) -> dict[str, Any]:  # fmt: skip
    """Every ``--calibration`` refitted under every variant, each cell printed as it comes:
    the record's "variants", "terms" (per calibration) and "cells"."""
    prof_dir = args.out.parent / (args.out.name + "_profiles")
    prof_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"variants": list(variants), "terms": {}, "cells": []}
    for folder in args.calibration:
        terms, cells = fit_and_predict(folder, prof_dir, variants, args.sets or DEFAULT_SETS,
                                       script, terms_of)  # fmt: skip
        res["terms"][folder.name] = terms
        for c in cells:
            c["calibration"] = folder.name
            print(_row(c, list(variants)), flush=True)
        res["cells"] += cells
    return res


def ablation_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a refit ablation: calibrations, development sets, record path."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--calibration", type=Path, action="append", required=True,
                   help="folder with calibration_cpu_raw.json, calibrated_cpu.toml and that "
                   "session's validation_cpu_SET_bN.json; repeatable")  # fmt: skip
    p.add_argument("--sets", action="append",
                   help=f"a development set to predict; repeatable (default: "
                   f"{', '.join(DEFAULT_SETS)})")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="record path, without suffix")
    return p


def run_ablation(argv: list[str] | None, script: str, doc: str, title: str,
                 variants_for: Callable[[int, float], dict[str, Variant]]) -> int:  # fmt: skip
    """The command line of an L2 ablation: measure the L2's copy rate, refit every
    calibration given under ``variants_for(l2_bytes, rate)``, write the record."""
    args = ablation_parser(doc).parse_args(argv)
    prov = provenance_start(script, argv)
    l2 = l2_bytes()
    rate = l2_copy_rate(l2)
    print(f"L2 {l2} B, copy rate {rate / 1e9:.1f} GB/s", flush=True)
    res = {"l2_bytes": l2, "l2_copy_bytes_per_s": rate,
           **refit_all(args, variants_for(l2, rate), script)}  # fmt: skip
    md = functools.partial(to_markdown, title=title, doc=doc)
    print(f"wrote {write_record(args.out, provenance_finish(prov), res, md)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_ablation(argv, "experiments/im2col_l2_ablation.py", __doc__, TITLE,
                        lambda _l2, rate: im2col_variants(rate))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
