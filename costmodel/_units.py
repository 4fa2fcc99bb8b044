"""Units and counting conventions, defined once.

ZOMI's lecture on model miniaturization (推理系统-模型小型化, slides "典型结构对比",
comparison of typical structures) writes kh*kw*cin*cout*H*W and calls it "FLOPs";
that number is one multiply-accumulate per weight use, which the rest of the field
(and this package) calls MACs. FLOPs here always means ``FLOPS_PER_MAC * MACs`` (a
MAC is one multiply plus one add).

The precisions and their storage widths are hardware vocabulary, defined in
``hw_profiles`` (profiles key their peaks by them) and re-exported here.
"""

from __future__ import annotations

from hw_profiles import BITS_PER_ELEMENT, PRECISIONS, STORAGE_PRECISIONS, Precision

__all__ = [
    "BITS_PER_ELEMENT",
    "FLOPS_PER_MAC",
    "PRECISIONS",
    "STORAGE_PRECISIONS",
    "Precision",
    "check_precision",
    "elements_to_bytes",
    "macs_to_flops",
]

FLOPS_PER_MAC = 2


def macs_to_flops(macs: int) -> int:
    """The one place where FLOPs are derived from MACs."""
    return FLOPS_PER_MAC * macs


def check_precision(precision: str) -> str:
    if precision not in BITS_PER_ELEMENT:
        raise ValueError(f"precision={precision!r} is not one of {list(PRECISIONS)}")
    return precision


def elements_to_bytes(elements: int, precision: str) -> int:
    """Bytes to store ``elements`` values densely packed (int4: two per byte, rounded up)."""
    bits = BITS_PER_ELEMENT[check_precision(precision)]
    return (elements * bits + 7) // 8
