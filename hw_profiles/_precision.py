"""Numeric precisions, defined once: their names, storage widths and kinds.

A profile's peaks are keyed by these names, and the cost model sizes tensors
with the storage widths (``costmodel`` re-exports them).
"""

from __future__ import annotations

from typing import Literal, get_args

Precision = Literal["fp32", "tf32", "fp16", "bf16", "int8", "int4"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

# Storage width of one element. tf32 is a tensor-core compute mode on fp32 storage.
BITS_PER_ELEMENT: dict[str, int] = {
    "fp32": 32,
    "tf32": 32,
    "fp16": 16,
    "bf16": 16,
    "int8": 8,
    "int4": 4,
}
# Peaks of these are quoted in FLOPS, of the integer ones in OPS.
FLOAT_PRECISIONS = frozenset({"fp32", "tf32", "fp16", "bf16"})
# Distinct storage formats, what a model's size is reported in (tf32 is stored as fp32).
STORAGE_PRECISIONS: tuple[str, ...] = tuple(p for p in PRECISIONS if p != "tf32")
