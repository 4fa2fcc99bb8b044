"""Units and counting conventions, defined once.

The seed lecture (shared/seed, slides "典型结构对比") writes kh*kw*cin*cout*H*W and
calls it "FLOPs"; that number is one multiply-accumulate per weight use, which the
rest of the field (and this package) calls MACs. FLOPs here always means
``FLOPS_PER_MAC * MACs`` (a MAC is one multiply plus one add).
"""

from __future__ import annotations

from typing import Literal, get_args

FLOPS_PER_MAC = 2

Precision = Literal["fp32", "tf32", "fp16", "bf16", "int8", "int4"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

# Storage width of one element; tf32 is stored as fp32.
BITS_PER_ELEMENT: dict[str, int] = {
    "fp32": 32,
    "tf32": 32,
    "fp16": 16,
    "bf16": 16,
    "int8": 8,
    "int4": 4,
}


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
