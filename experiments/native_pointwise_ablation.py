"""PyTorch's native 1x1 convs as a kernel class of their own, refitted on recorded CPU
calibrations and predicting their sessions' development sets (nothing is timed).

PyTorch's native CPU conv (``slow_conv2d``, which it picks for small single-image convs)
unfolds its input into a column buffer before its GEMM, except for a 1x1, unstrided,
unpadded conv, whose input already is the matrix. The model prices both with one
"native_conv" class: one fixed cost per call and one pair of efficiencies. On the Intel
Xeon VM the split shows in networks with one operation on every edge (NAS-Bench-201 with
3x3 convs everywhere predicted at 0.82x its time, with 1x1 convs at 1.34x, session c).
Variant "split": such 1x1 convs become the class "native_pointwise_conv", which takes
native_conv's values where a profile sets none (so shipped profiles price them as
before) and gets its own fixed cost and efficiencies where calibration fits them.
Everything else is fitted exactly as ``hw_profiles calibrate`` fits.

    python experiments/native_pointwise_ablation.py \\
        --calibration experiments/results/xeon_2026-12-03_d \\
        --out experiments/results/xeon_2026-12-03_d/native_pointwise_ablation

Each calibration's own validations are predicted, of the development sets only
(``--sets``): sets kept for reports are not predicted.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance_finish, provenance_start, write_record  # noqa: E402
from im2col_l2_ablation import (  # noqa: E402
    Variant,
    ablation_parser,
    column_elements,
    development_table,
    refit_all,
)

from costmodel import _allocator, _estimate, _fit, _kinds, _latency  # noqa: E402
from costmodel._spec import LayerSpec  # noqa: E402
from hw_profiles import HardwareProfile, _schema  # noqa: E402

TITLE = "Native 1x1 convs as their own kernel class, refitted"
NEW_CLASS = "native_pointwise_conv"


def split_class(spec: LayerSpec, conv_dispatch: str = "none", threads: int = 1) -> str:
    """``latency_class`` with PyTorch's native convs that unfold no columns told apart."""
    cls = _kinds.latency_class(spec, conv_dispatch, threads)
    if cls == "native_conv" and column_elements(spec) == 0:
        return NEW_CLASS
    return cls


@contextlib.contextmanager
def native_pointwise_split() -> Iterator[None]:
    """The model, profile schema and fit with the new class, parented to native_conv."""
    patches = [
        (_schema, "KERNEL_CLASSES", (*_schema.KERNEL_CLASSES, NEW_CLASS)),
        (_fit, "KERNEL_CLASSES", (*_fit.KERNEL_CLASSES, NEW_CLASS)),
        (_schema, "PARENT_CLASS",
         MappingProxyType({**_schema.PARENT_CLASS, NEW_CLASS: "native_conv"})),
        (_fit, "HEAVY_HOST_CLASSES", _fit.HEAVY_HOST_CLASSES | {NEW_CLASS}),
        *((_latency, name, getattr(_latency, name) | {NEW_CLASS})
          for name in ("REDUCTION_CLASSES", "GEMM_CLASSES", "TENSOR_CORE_CLASSES")),
        *((mod, "latency_class", split_class) for mod in (_latency, _fit, _allocator)),
    ]  # fmt: skip
    originals = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    for mod, name, value in patches:
        setattr(mod, name, value)
    _estimate.clear_cache()
    try:
        yield
    finally:
        for mod, name, value in originals:
            setattr(mod, name, value)
        _estimate.clear_cache()


VARIANTS = {"shipped": Variant({}), "split": Variant({}, native_pointwise_split)}


def fitted_terms(hw: HardwareProfile) -> dict[str, float]:
    """What each refit makes of the native conv classes."""
    eager = hw.runtime("eager")
    terms = {}
    for cls in ("native_conv", NEW_CLASS):
        ce, me = hw.efficiency(cls, "fp32") if cls in _schema.KERNEL_CLASSES else (0.0, 0.0)
        terms[f"{cls}_compute_efficiency"], terms[f"{cls}_memory_efficiency"] = ce, me
        terms[f"{cls}_host_s"] = eager.class_host_overhead_s.get(cls, float("nan"))
    return terms


def _class_cell(terms: dict[str, float], cls: str) -> str:
    ce, me = terms[f"{cls}_compute_efficiency"], terms[f"{cls}_memory_efficiency"]
    return f"{ce:.2f} / {me:.2f} / {terms[f'{cls}_host_s'] * 1e6:.1f}"


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    lines = [f"# {TITLE}", "", *header, "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "## What the fits make of it", "",
             "| calibration | variant | native conv ce / me / host us | native 1x1 ce / me / "
             "host us |", "|---|---|---|---|"]  # fmt: skip
    for cal, by_variant in res["terms"].items():
        for v, t in by_variant.items():
            cells = [_class_cell(t, c) for c in ("native_conv", NEW_CLASS)]
            lines.append(f"| {cal} | {v} | {cells[0]} | {cells[1]} |")
    return "\n".join([*lines, *development_table(res)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = ablation_parser(__doc__).parse_args(argv)
    script = "experiments/native_pointwise_ablation.py"
    prov = provenance_start(script, argv)
    res = refit_all(args, VARIANTS, script, terms_of=fitted_terms)
    print(f"wrote {write_record(args.out, provenance_finish(prov), res, to_markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
