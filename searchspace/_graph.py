"""Lowering a network with branches to ``costmodel.LayerSpec``s, one layer at a time.

A value is a ``Tensor``: the name of the layer that produced it (``"input"`` for
the network input) and its shape. ``Layers.emit`` appends one layer reading
one or more values and returns its output value, so a DAG (NAS-Bench-201
cells, residual adds, squeeze-and-excitation gates) is written as straight
Python code in execution order.
"""

from __future__ import annotations

from typing import NamedTuple

from costmodel import LayerSpec, output_shape

NETWORK_INPUT = "input"


class Tensor(NamedTuple):
    name: str  # the producing layer; NETWORK_INPUT for the network input
    shape: tuple[int, ...]


class Layers:
    """The layer list of one network, in execution order."""

    __slots__ = ("specs",)

    def __init__(self) -> None:
        self.specs: list[LayerSpec] = []

    def emit(self, name: str, op: str, x: Tensor, *more: Tensor, **kw: object) -> Tensor:
        """Append layer ``name`` reading ``x`` (and ``more``) and return its output."""
        spec = LayerSpec(op, x.shape, name=name, inputs=(x.name, *(m.name for m in more)), **kw)  # type: ignore[arg-type]
        self.specs.append(spec)
        return Tensor(name, output_shape(spec))

    def conv(
        self,
        name: str,
        x: Tensor,
        cout: int,
        k: int = 1,
        s: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> Tensor:
        """A convolution with "same" padding k // 2, as NAS-Bench-201 and OFA pad."""
        return self.emit(
            name,
            "conv2d",
            x,
            out_channels=cout,
            kernel_size=k,
            stride=s,
            padding=k // 2,
            groups=groups,
            bias=bias,
        )
