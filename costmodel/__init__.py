"""Exact analytic costs (params, MACs, FLOPs, memory access) and roofline latency.

Conventions: ``macs`` are multiply-accumulates, which the seed lecture calls
"FLOPs"; ``flops = 2 * macs`` (``FLOPS_PER_MAC``) everywhere in this package.
"""

from costmodel._estimate import estimate
from costmodel._formulas import Counts, UnsupportedLayerError, count, known_ops, output_shape
from costmodel._kinds import kernel_class
from costmodel._latency import KernelTime, LatencyModel, RooflineModel
from costmodel._plot import plot_roofline_layers, plot_roofline_networks
from costmodel._profile import profile
from costmodel._report import CostReport, LayerCost, Totals, analyze
from costmodel._spec import LayerSpec
from costmodel._units import (
    BITS_PER_ELEMENT,
    FLOPS_PER_MAC,
    PRECISIONS,
    elements_to_bytes,
    macs_to_flops,
)

__all__ = [
    "BITS_PER_ELEMENT",
    "FLOPS_PER_MAC",
    "PRECISIONS",
    "CostReport",
    "Counts",
    "KernelTime",
    "LatencyModel",
    "LayerCost",
    "LayerSpec",
    "RooflineModel",
    "Totals",
    "UnsupportedLayerError",
    "analyze",
    "count",
    "elements_to_bytes",
    "estimate",
    "kernel_class",
    "known_ops",
    "macs_to_flops",
    "output_shape",
    "plot_roofline_layers",
    "plot_roofline_networks",
    "profile",
]
