"""Exact analytic costs (params, MACs, FLOPs, memory access) and roofline latency.

Conventions: ``macs`` are multiply-accumulates, which ZOMI's lecture on model
miniaturization calls "FLOPs"; ``flops = 2 * macs`` (``FLOPS_PER_MAC``) everywhere
in this package.

Two ways in: ``profile(module)`` traces any ``torch.nn.Module``; ``estimate(x)``
costs anything that lowers itself to layer specs (``Lowerable``, e.g. a
``searchspace.Architecture``), from cached per-segment sums when it is
``Segmented``; ``ModuleNetwork`` is a user's ``FILE.py:FACTORY`` module at an input
shape, which lowers by tracing. Measuring, calibration and validation live in private modules
(``_measure``, ``_calibrate``, ``_validate``) that the command lines drive.
"""

from costmodel._estimate import Lowerable, Segment, Segmented, estimate
from costmodel._formulas import Counts, UnsupportedLayerError, count, known_ops, output_shape
from costmodel._kinds import kernel_class
from costmodel._latency import KernelTime, LatencyModel, RooflineModel
from costmodel._plot import plot_roofline_layers, plot_roofline_networks
from costmodel._report import CostReport, LayerCost, Totals, analyze
from costmodel._spec import NETWORK_INPUT, LayerSpec
from costmodel._trace import profile
from costmodel._units import (
    BITS_PER_ELEMENT,
    FLOPS_PER_MAC,
    PRECISIONS,
    elements_to_bytes,
    macs_to_flops,
)
from costmodel._user_model import ModuleNetwork, import_file, load_factory

__all__ = [
    "BITS_PER_ELEMENT",
    "FLOPS_PER_MAC",
    "NETWORK_INPUT",
    "PRECISIONS",
    "CostReport",
    "Counts",
    "KernelTime",
    "LatencyModel",
    "LayerCost",
    "LayerSpec",
    "Lowerable",
    "ModuleNetwork",
    "RooflineModel",
    "Segment",
    "Segmented",
    "Totals",
    "UnsupportedLayerError",
    "analyze",
    "count",
    "elements_to_bytes",
    "estimate",
    "import_file",
    "kernel_class",
    "known_ops",
    "load_factory",
    "macs_to_flops",
    "output_shape",
    "plot_roofline_layers",
    "plot_roofline_networks",
    "profile",
]
