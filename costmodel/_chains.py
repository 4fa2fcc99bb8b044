"""Op chains: one streaming op repeated, timed as a whole network by calibration.

A single kernel timed alone (``costmodel._measure.measure_in_context``) pays for cold
code, weights and inputs, and per call a clock read. For a conv that is a few percent; for
a BatchNorm or a ReLU on a small tensor, whose whole cost is a fixed one, it is most of
what is measured: on the 2-core EPYC development VM calibration's ReLU benchmarks took
22 us and more each, timed alone among other kernels, but a ReLU took 4-7 us inside a chain
of its own kind; the profile fitted without chains made NAS-Bench-201 cells, mostly such
ops, 10-35 % too slow. A chain of ``CHAIN_DEPTH`` ops, each
feeding the next as in a network, timed exactly as networks are, shows the fit what one of
them costs inside a network. Sizes are a fixed grid from 4 to 256 channels and 7 to 56
pixels a side, not the shapes of any network family the model is validated on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from costmodel._spec import LayerSpec
from costmodel._trace import trace_layers

CHAIN_DEPTH = 16  # ops per chain: the network's own fixed cost is shared by all of them
CHAIN_SIZES = ((4, 56), (16, 16), (32, 28), (128, 14), (256, 7))  # (channels, pixels a side)
CHAIN_BATCHES = (1, 32)


class _ResidualReLU(nn.Module):
    """``x + relu(x)``: an element-wise add of two tensors, as a residual adds them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(x)


_OPS: dict[str, Callable[[int], nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "relu": lambda c: nn.ReLU(),
    "residual_add": lambda c: _ResidualReLU(),
    "avgpool3x3": lambda c: nn.AvgPool2d(3, 1, 1),
    "maxpool3x3": lambda c: nn.MaxPool2d(3, 1, 1),
}
CHAIN_OPS = tuple(_OPS)


@dataclass(frozen=True)
class OpChain:
    """``CHAIN_DEPTH`` modules of one op on (channels, size, size) inputs: a ``Runnable``."""

    op: str
    channels: int
    size: int

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"op={self.op!r} is not one of {list(_OPS)}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def build(self) -> nn.Module:
        return nn.Sequential(*(_OPS[self.op](self.channels) for _ in range(CHAIN_DEPTH))).eval()

    def lower(self, batch: int) -> list[LayerSpec]:
        specs, unsupported = trace_layers(self.build(), (batch, *self.input_shape))
        if unsupported:  # every op above has a formula; this would be a tracer regression
            raise RuntimeError(f"{self}: layers without a formula: {unsupported}")
        return specs

    def __str__(self) -> str:
        return f"chain:{self.op}:{self.channels}x{self.size}x{self.size}"


def op_chains(quick: bool = False) -> list[OpChain]:
    """Every op at every grid size (``quick``: at one size)."""
    sizes = CHAIN_SIZES[1:2] if quick else CHAIN_SIZES
    return [OpChain(op, c, s) for op in CHAIN_OPS for c, s in sizes]
