"""NAS-Bench-201 networks (Dong & Yang, ICLR 2020), named by NB201's own cell string.

The macro network and the cell are those of NB201's reference code
(D-X-Y/AutoDL-Projects, xautodl/models/cell_infers/tiny_network.py, cells.py
and xautodl/models/cell_operations.py), on which published latencies (HELP,
NeurIPS 2021) were measured:

- stem: 3x3 conv (no bias) to C = 16 channels, BatchNorm;
- three stages of N = 5 cells at C, 2C, 4C channels; between stages a
  ResNetBasicblock(stride 2): ReLU-Conv3x3/2-BN, ReLU-Conv3x3-BN, shortcut
  AvgPool2d(2, 2) then Conv1x1 (no bias, no BN), summed as ``residual + block``;
- ``lastact``: BatchNorm, ReLU; global average pool; ``view(N, -1)``; Linear.

A cell (``InferCell``) has nodes 0..3; node j sums one edge from every earlier
node, each edge one of:
- ``nor_conv_1x1`` / ``nor_conv_3x3``: ReLU, Conv (padding k // 2; ``bias=not
  affine`` with affine=True, so no bias), BatchNorm (affine);
- ``avg_pool_3x3``: AvgPool2d(3, stride 1, padding 1, count_include_pad=False)
  (input and output channels are equal in a cell, so no 1x1 preprocess);
- ``skip_connect``: Identity, which launches no kernel;
- ``none``: the ``Zero`` op. NB201's inference cell keeps it and runs it:
  ``Zero.forward`` returns ``x.mul(0.0)`` when C_in == C_out and stride is 1
  (always the case in a cell), a real element-wise kernel, and its zeros are
  then added into the node like any other edge. Only NB201's accuracy-side
  tools drop 'none' edges (``Structure.tolist('none')``); the network that runs
  does not, so they are lowered here as a ``mul`` by a scalar.

One difference from NB201's code is deliberate: ``InferCell`` sums a node with
Python's ``sum()``, which starts from the integer 0, so eager PyTorch runs one
extra ``0 + x`` scalar-add kernel per node (3 per cell, 45 per network, the
same count for every cell string), each reading and writing the node's tensor.
Adding zero is no arithmetic, so ``lower`` (and ``build``) start the node sum
from its first edge; ``eager_layers``, NB201's code as it runs, starts from 0
(``EAGER_SCALAR_ADDS`` more layers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from costmodel import LayerSpec
from searchspace._graph import NETWORK_INPUT, Layers, Tensor

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# The six edges (node, source node) in the order NB201's string lists them:
# |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
STEM_CHANNELS = 16  # NB201's C
CELLS_PER_STAGE = 5  # NB201's N
# Extra ``0 + x`` kernels NB201's eager InferCell runs beyond the lowered layers:
# one per node (3 nodes) per cell (3 stages of 5 cells).
EAGER_SCALAR_ADDS = 3 * 3 * CELLS_PER_STAGE
_DEFAULT_CLASSES, _DEFAULT_RESOLUTION = 10, 32  # NB201's CIFAR-10 setting
_SETTING = {key: re.compile(key + r"[1-9][0-9]*") for key in ("n", "r")}


def _macro() -> list[tuple[int, bool]]:
    """(channels, is a reduction block) for every cell, as TinyNetwork lays them out."""
    c, n = STEM_CHANNELS, CELLS_PER_STAGE
    return (
        [(c, False)] * n
        + [(2 * c, True)]
        + [(2 * c, False)] * n
        + [(4 * c, True)]
        + [(4 * c, False)] * n
    )


@dataclass(frozen=True)
class NB201Net:
    """A NAS-Bench-201 network: one cell (six edge ops in ``EDGES`` order) used 15 times."""

    ops: tuple[str, ...]
    num_classes: int = _DEFAULT_CLASSES  # CIFAR-10; CIFAR-100: 100, ImageNet16-120: 120
    resolution: int = _DEFAULT_RESOLUTION  # CIFAR: 32, ImageNet16-120: 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if len(self.ops) != len(EDGES):
            raise ValueError(f"ops={self.ops!r} must name {len(EDGES)} edges, one per {EDGES}")
        for (node, src), op in zip(EDGES, self.ops, strict=True):
            if op not in OPS:
                raise ValueError(f"edge {node}<-{src}: op={op!r} is not one of {list(OPS)}")
        for key, v in (("num_classes", self.num_classes), ("resolution", self.resolution)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{key}={v!r} must be an int >= 1")
        if self.resolution < 4:
            raise ValueError(f"resolution={self.resolution} must be >= 4 (two stride-2 blocks)")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.resolution, self.resolution)

    # -- encoding -------------------------------------------------------------
    def cell_string(self) -> str:
        """NB201's own string: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        nodes = []
        for j in (1, 2, 3):
            edges = [
                f"{op}~{src}" for (node, src), op in zip(EDGES, self.ops, strict=True) if node == j
            ]
            nodes.append("|" + "|".join(edges) + "|")
        return "+".join(nodes)

    def to_string(self) -> str:
        """The cell string; a non-CIFAR-10 setting appends ``:n<classes>:r<resolution>``."""
        s = self.cell_string()
        if (self.num_classes, self.resolution) != (_DEFAULT_CLASSES, _DEFAULT_RESOLUTION):
            s += f":n{self.num_classes}:r{self.resolution}"
        return s

    __str__ = to_string

    @classmethod
    def from_string(cls, s: str) -> NB201Net:
        if not isinstance(s, str):
            raise ValueError(f"NAS-Bench-201 string must be a str, got {s!r}")
        cell, *setting = s.split(":")
        kw: dict[str, int] = {}
        if setting:
            if len(setting) != 2 or not (
                _SETTING["n"].fullmatch(setting[0]) and _SETTING["r"].fullmatch(setting[1])
            ):
                raise ValueError(
                    f"NAS-Bench-201 string {s!r}: the setting after the cell must "
                    f"be ':n<classes>:r<resolution>', got {':'.join(setting)!r}"
                )
            kw = {"num_classes": int(setting[0][1:]), "resolution": int(setting[1][1:])}
        ops = _parse_cell(cell, s)
        net = cls(ops, **kw)
        if net.to_string() != s:
            raise ValueError(
                f"NAS-Bench-201 string {s!r} is not canonical: write {net.to_string()!r}"
            )
        return net

    @classmethod
    def from_help_row(cls, row: Mapping[str, str]) -> NB201Net:
        """From a row of HELP's NAS-Bench-201 latency table (its ``arch_str`` column)."""
        if "arch_str" not in row:
            raise ValueError(f"row has no 'arch_str' column (columns: {sorted(row)})")
        return cls.from_string(row["arch_str"])

    # -- derived ----------------------------------------------------------------
    def lower(self, batch: int = 1) -> tuple[LayerSpec, ...]:
        """The layers in execution order, named as ``profile(self.build())`` names them."""
        return self._lower(batch, zero_start=False)

    def _lower(self, batch: int, zero_start: bool) -> tuple[LayerSpec, ...]:
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch={batch!r} must be an int >= 1")
        net = Layers()
        x = Tensor(NETWORK_INPUT, (batch, *self.input_shape))
        x = net.conv("stem.0", x, STEM_CHANNELS, 3)
        x = net.emit("stem.1", "batchnorm2d", x)
        for i, (c, reduction) in enumerate(_macro()):
            x = (
                _lower_resblock(net, f"cells.{i}", x, c)
                if reduction
                else _lower_cell(net, f"cells.{i}", x, self.ops, zero_start)
            )
        x = net.emit("lastact.0", "batchnorm2d", x)
        x = net.emit("lastact.1", "relu", x, inplace=True)
        x = net.emit("global_pooling", "global_avgpool2d", x)
        x = net.emit("flatten", "flatten", x)
        net.emit("classifier", "linear", x, out_channels=self.num_classes, bias=True)
        return tuple(net.specs)

    def build(self) -> nn.Module:
        """The network as NB201 defines it (PyTorch default init, training mode)."""
        return TinyNetwork(self.ops, self.num_classes)

    def eager_layers(self, batch: int = 1) -> tuple[LayerSpec, ...]:
        """The layers NB201's own eager code runs: ``lower``'s plus each node sum's ``0 + x``."""
        return self._lower(batch, zero_start=True)

    def eager_extra_kernels(self) -> int:
        """Kernels NB201's eager code launches that no layer of ``eager_layers`` stands for."""
        return 0

    def eager_kernels(self) -> int:
        """Kernels NB201's own eager code launches for one forward pass (see the module doc)."""
        return sum(1 for s in self.eager_layers(1) if s.op != "flatten")


def _parse_cell(cell: str, s: str) -> tuple[str, ...]:
    nodes = cell.split("+")
    if len(nodes) != 3:
        raise ValueError(
            f"NAS-Bench-201 string {s!r} must have 3 nodes separated by '+', got {len(nodes)}"
        )
    ops: list[str] = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"NAS-Bench-201 string {s!r}: node {j} {node!r} must be '|...|'")
        edges = node[1:-1].split("|")
        if len(edges) != j:
            raise ValueError(
                f"NAS-Bench-201 string {s!r}: node {j} needs {j} edges "
                f"(one from each earlier node), got {node!r}"
            )
        for src, edge in enumerate(edges):
            op, sep, idx = edge.rpartition("~")
            if not sep or idx != str(src):
                raise ValueError(
                    f"NAS-Bench-201 string {s!r}: edge {edge!r} of node {j} must be 'op~{src}'"
                )
            ops.append(op)
    return tuple(ops)


def _lower_edge(net: Layers, p: str, op: str, x: Tensor) -> Tensor:
    if op == "skip_connect":
        return x  # NB201's Identity: no kernel
    if op == "none":
        return net.emit(f"{p}.mul", "mul", x)  # Zero: x.mul(0.)
    if op == "avg_pool_3x3":
        return net.emit(f"{p}.op", "avgpool2d", x, kernel_size=3, stride=1, padding=1)
    k = 3 if op == "nor_conv_3x3" else 1
    x = net.emit(f"{p}.op.0", "relu", x)
    x = net.conv(f"{p}.op.1", x, x.shape[1], k)
    return net.emit(f"{p}.op.2", "batchnorm2d", x)


def _lower_cell(
    net: Layers, p: str, x: Tensor, ops: tuple[str, ...], zero_start: bool = False
) -> Tensor:
    """A cell; ``zero_start``: each node sum starts from 0, as NB201's ``sum()`` does."""
    nodes = [x]
    adds = 0
    for j in (1, 2, 3):
        acc: Tensor | None = None
        for e, ((node, src), op) in enumerate(zip(EDGES, ops, strict=True)):
            if node != j:
                continue
            y = _lower_edge(net, f"{p}.layers.{e}", op, nodes[src])
            name = f"{p}.add" + (f"_{adds}" if adds else "")  # as profile names repeats
            if acc is None and not zero_start:
                acc = y
                continue
            acc = (
                net.emit(name, "add", y)
                if acc is None
                else net.emit(name, "add", acc, y, num_inputs=2)
            )
            adds += 1
        assert acc is not None  # every node has at least one edge
        nodes.append(acc)
    return nodes[-1]


def _lower_resblock(net: Layers, p: str, x: Tensor, cout: int) -> Tensor:
    a = net.emit(f"{p}.conv_a.op.0", "relu", x)
    a = net.conv(f"{p}.conv_a.op.1", a, cout, 3, 2)
    a = net.emit(f"{p}.conv_a.op.2", "batchnorm2d", a)
    b = net.emit(f"{p}.conv_b.op.0", "relu", a)
    b = net.conv(f"{p}.conv_b.op.1", b, cout, 3)
    b = net.emit(f"{p}.conv_b.op.2", "batchnorm2d", b)
    r = net.emit(f"{p}.downsample.0", "avgpool2d", x, kernel_size=2, stride=2)
    r = net.conv(f"{p}.downsample.1", r, cout)
    return net.emit(f"{p}.add", "add", r, b, num_inputs=2)  # residual + basicblock


# --- the torch modules (NB201's definitions, names kept) ----------------------------------


class ReLUConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Pooling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.op = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Identity(nn.Module):
    """NB201's own Identity (not nn.Identity): traced through, it is no layer at all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _edge_module(op: str, c: int) -> nn.Module:
    if op == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1)
    if op == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1)
    if op == "avg_pool_3x3":
        return Pooling()
    if op == "skip_connect":
        return Identity()
    return Zero()


class InferCell(nn.Module):
    def __init__(self, ops: tuple[str, ...], c: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_edge_module(op, c) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in (1, 2, 3):
            acc: torch.Tensor | None = None
            for e, (node, src) in enumerate(EDGES):
                if node == j:
                    y = self.layers[e](nodes[src])
                    acc = y if acc is None else acc + y
            nodes.append(acc)  # type: ignore[arg-type]
        return nodes[-1]


class ResNetBasicblock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(cin, cout, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = self.conv_b(self.conv_a(x))
        return self.downsample(x) + block


class TinyNetwork(nn.Module):
    def __init__(self, ops: tuple[str, ...], num_classes: int) -> None:
        super().__init__()
        c = STEM_CHANNELS
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        cells: list[nn.Module] = []
        for cout, reduction in _macro():
            cells.append(ResNetBasicblock(c, cout) if reduction else InferCell(ops, cout))
            c = cout
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(x.view(x.size(0), -1))
