"""``costmodel.profile`` against PyTorch itself: params, MACs, shapes, names, fallbacks."""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from costmodel import CostReport, UnsupportedLayerError, load_factory, profile
from costmodel._trace import TraceInternalError, _Layer, _Site, _to_specs, trace_layers
from tests.reference_nets import CifarNet, MobileNetV2, OFAHswish, ResNet18, ShuffleNetV1Like

# Published networks as their public code writes them (FBNet, ShuffleNet V2).
FAMILIES = Path(__file__).resolve().parents[1] / "experiments" / "families" / "published_cnns.py"


def family(name: str) -> Any:
    return load_factory(f"{FAMILIES}:{name}")


def torch_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """FlopCounterMode counts conv, linear and matmul as 2 FLOPs per MAC, and nothing else."""
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shapes and counts only; avoids thread contention
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(shape))
    finally:
        torch.set_num_threads(threads)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_linear_macs(rep: CostReport) -> int:
    return sum(layer.macs for layer in rep.layers if layer.op in ("conv2d", "linear"))


# --- single layers, generated -------------------------------------------------------------


@st.composite
def conv_cases(draw: st.DrawFn) -> tuple[nn.Conv2d, tuple[int, ...]]:
    depthwise = draw(st.booleans())
    if depthwise:
        cin = draw(st.integers(1, 8))
        g, cout = cin, cin * draw(st.integers(1, 2))
    else:
        g = draw(st.integers(1, 3))
        cin, cout = g * draw(st.integers(1, 4)), g * draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dil = draw(st.integers(1, 2))
    pad = draw(st.integers(0, 2))
    h, w = draw(st.integers(1, 14)), draw(st.integers(1, 14))
    assume(h + 2 * pad >= dil * (kh - 1) + 1 and w + 2 * pad >= dil * (kw - 1) + 1)
    conv = nn.Conv2d(
        cin,
        cout,
        (kh, kw),
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=pad,
        dilation=dil,
        groups=g,
        bias=draw(st.booleans()),
    )
    return conv, (draw(st.integers(1, 2)), cin, h, w)


@settings(max_examples=20, deadline=None)
@given(conv_cases())
def test_conv_matches_pytorch(case: tuple[nn.Conv2d, tuple[int, ...]]) -> None:
    conv, shape = case
    rep = profile(conv, shape)
    (layer,) = rep.layers
    assert layer.op == "conv2d"
    assert layer.params == n_params(conv)
    assert layer.bias_params == (conv.out_channels if conv.bias is not None else 0)
    assert layer.macs == torch_macs(conv, shape)
    with torch.no_grad():
        assert layer.out_shape == tuple(conv(torch.zeros(shape)).shape)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 32),
    st.integers(1, 32),
    st.booleans(),
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
)
def test_linear_matches_pytorch(fin: int, fout: int, bias: bool, lead: list[int]) -> None:
    fc = nn.Linear(fin, fout, bias=bias)
    shape = (*lead, fin)  # 2-D, 3-D and 4-D inputs: every leading dim is a row
    (layer,) = profile(fc, shape).layers
    assert layer.params == n_params(fc)
    assert layer.macs == torch_macs(fc, shape) == math.prod(lead) * fin * fout
    assert layer.out_shape == (*lead, fout)


# --- whole networks -----------------------------------------------------------------------


@functools.cache
def _reference(name: str) -> tuple[CostReport, int, int]:
    """(report, sum of parameter numels, FlopCounterMode MACs), computed once per network."""
    factory, shape = {
        "mobilenet_v2": (MobileNetV2, (1, 3, 224, 224)),
        "resnet18": (ResNet18, (1, 3, 224, 224)),
        "cifar_net": (CifarNet, (2, 3, 32, 32)),
        "shufflenet_v1_like": (ShuffleNetV1Like, (1, 3, 96, 96)),
        "shufflenet_v2": (family("shufflenet_v2_x1_0"), (1, 3, 224, 224)),
    }[name]
    model = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every one of them traces with fx, nothing shared
        rep = profile(model, shape)
    return rep, n_params(model), torch_macs(model, shape)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("mobilenet_v2", 3_504_872),  # torchvision's published count
        ("resnet18", 11_689_512),  # torchvision's published count
        ("cifar_net", 94_762),  # 3*32*9 + 32*64*9 + 64*128*9 + 2*(32+64+128) + 128*10 + 10
        ("shufflenet_v1_like", None),
        ("shufflenet_v2", 2_278_604),  # torchvision's published count
    ],
)
def test_reference_nets_match_pytorch(name: str, params: int | None) -> None:
    rep, numel, macs = _reference(name)
    assert rep.unsupported == ()
    assert rep.total.params == numel
    if params is not None:
        assert rep.total.params == params
    assert conv_linear_macs(rep) == macs
    assert rep.total.flops == 2 * rep.total.macs


def test_mobilenet_v2_golden_macs() -> None:
    rep, _, _ = _reference("mobilenet_v2")
    # conv + linear: 300,774,272 MACs, torchvision's "0.30 GFLOPS" and the paper's 300M
    # multiply-adds; BatchNorm adds one MAC per element it normalizes (6,678,112).
    assert conv_linear_macs(rep) == 300_774_272
    assert rep.total.macs == 307_452_384
    assert rep.total.params == 3_504_872
    assert rep.total.bias_params == 1_000 + 17_056  # classifier bias + BN betas
    assert len([x for x in rep.layers if x.op == "add"]) == 10  # MobileNetV2 has 10 residuals


def test_batch_scales_macs_not_params() -> None:
    one = profile(CifarNet(), (1, 3, 32, 32))
    four = profile(CifarNet(), (4, 3, 32, 32))
    assert four.total.params == one.total.params
    assert four.total.macs == 4 * one.total.macs


# --- names and graph ----------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        z = self.conv2(y)
        return torch.relu(x + y + z)  # two adds in one owner: add, add_1


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = x.mean((2, 3))
        return self.head(torch.flatten(x, 1))


def test_residual_names_and_inputs_follow_the_agreed_rule() -> None:
    rep = profile(Residual(), (1, 3, 8, 8))
    specs, _ = trace_layers(Residual(), (1, 3, 8, 8))
    got = [(s.name, s.op, s.inputs) for s in specs]
    assert got == [
        ("stem", "conv2d", ("input",)),
        ("blocks.0.conv1", "conv2d", ("stem",)),
        ("blocks.0.bn1", "batchnorm2d", ("blocks.0.conv1",)),
        ("blocks.0.relu", "relu", ("blocks.0.bn1",)),
        ("blocks.0.conv2", "conv2d", ("blocks.0.relu",)),
        ("blocks.0.add", "add", ("stem", "blocks.0.relu")),
        ("blocks.0.add_1", "add", ("blocks.0.add", "blocks.0.conv2")),
        ("blocks.0.relu_1", "relu", ("blocks.0.add_1",)),
        ("blocks.1.conv1", "conv2d", ("blocks.0.relu_1",)),
        ("blocks.1.bn1", "batchnorm2d", ("blocks.1.conv1",)),
        ("blocks.1.relu", "relu", ("blocks.1.bn1",)),
        ("blocks.1.conv2", "conv2d", ("blocks.1.relu",)),
        ("blocks.1.add", "add", ("blocks.0.relu_1", "blocks.1.relu")),
        ("blocks.1.add_1", "add", ("blocks.1.add", "blocks.1.conv2")),
        ("blocks.1.relu_1", "relu", ("blocks.1.add_1",)),
        ("global_avgpool2d", "global_avgpool2d", ("blocks.1.relu_1",)),
        ("flatten", "flatten", ("global_avgpool2d",)),
        ("head", "linear", ("flatten",)),
    ]
    assert [x.name for x in rep.layers] == [g[0] for g in got]
    assert rep.by_name["blocks.0.add"].in_shape == (1, 8, 8, 8)


def test_shared_relu_module_gets_suffixed_names() -> None:
    specs, _ = trace_layers(ResNet18(num_classes=10), (1, 3, 32, 32))
    names = [s.name for s in specs]
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    i = names.index("layer1.0.add")
    assert names[i + 1] == "layer1.0.relu_1"
    assert specs[i].inputs == ("layer1.0.bn2", "maxpool")  # out += identity


def test_peak_activation_bytes_on_a_chain() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    )
    rep = profile(model, (1, 3, 8, 8))
    # elements live: input 192; conv writes 512 (192 + 512 = 704), input dies;
    # relu writes 512 while conv's 512 is read (1,024 = peak), conv's dies;
    # flatten is a view; linear writes 10 while relu's 512 is read (522).
    # peak 1,024 elements * 4 bytes (fp32) = 4,096; fp16 2,048
    assert rep.total.peak_activation_bytes == 4_096
    assert profile(model, (1, 3, 8, 8), precision="fp16").total.peak_activation_bytes == 2_048


# --- what cannot be costed ----------------------------------------------------------------


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.adapt = nn.AdaptiveAvgPool2d(2)
        self.soft = nn.Softmax(dim=1)
        self.ok = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ok(self.pool(self.conv(x)))
        y = torch.stack([x, x], 1)
        x = self.adapt(x) + 1.0  # costed: a scalar add reads the unsupported pool's output
        return self.soft(x.flatten(1)), y


def test_unsupported_modules_are_reported_by_name_and_type() -> None:
    rep = profile(Odd(), (1, 3, 9, 9))
    assert rep.unsupported == (
        "conv (Conv2d: padding_mode='reflect')",
        "pool (MaxPool2d: ceil_mode=True)",
        "stack (stack)",
        "adapt (AdaptiveAvgPool2d: output_size=2 (only 1 is costed))",
        "soft (Softmax)",
    )
    assert [x.name for x in rep.layers] == ["ok", "add", "flatten"]  # never counted as zero
    assert rep.to_dict()["unsupported"] == list(rep.unsupported)


def test_strict_raises_naming_the_modules() -> None:
    with pytest.raises(UnsupportedLayerError, match=r"pool \(MaxPool2d: ceil_mode=True\)"):
        profile(Odd(), (1, 3, 9, 9), strict=True)


def test_functional_pool_and_mean_variants() -> None:
    class Fn(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(F.hardswish(x), 2)
            x = F.avg_pool2d(F.silu(x), 3, 1, 1)
            x = F.adaptive_avg_pool2d(F.relu6(x), 1)
            return x.mean((-2, -1), keepdim=True).view(x.size(0), -1)

    specs, unsupported = trace_layers(Fn(), (2, 4, 8, 8))
    assert unsupported == ()
    assert [s.name for s in specs] == [
        "hardswish",
        "maxpool2d",
        "silu",
        "avgpool2d",
        "relu6",
        "global_avgpool2d",
        "global_avgpool2d_1",
        "flatten",
    ]
    assert specs[1].kernel_size == (2, 2) and specs[1].stride == (2, 2)
    assert specs[3].padding == (1, 1) and specs[3].stride == (1, 1)


def test_products_trace_to_mul() -> None:
    class Se(nn.Module):
        """A squeeze-and-excitation gate (Hu et al., CVPR 2018), a zero op and a square."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            g = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))
            y = x * g
            z = g * y  # the gate written first
            return torch.mul(z, z) + x.mul(0.0)

    specs, unsupported = trace_layers(Se(), (2, 4, 8, 8))
    assert unsupported == ()
    muls = [s for s in specs if s.op == "mul"]
    assert [s.name for s in muls] == ["mul", "mul_1", "mul_2", "mul_3"]
    assert [(s.in_shape, s.num_inputs, s.other_shape) for s in muls] == [
        ((2, 4, 8, 8), 2, (2, 4, 1, 1)),
        ((2, 4, 8, 8), 2, (2, 4, 1, 1)),
        ((2, 4, 8, 8), 2, ()),
        ((2, 4, 8, 8), 1, ()),
    ]
    assert muls[0].inputs == ("input", "sigmoid") and muls[1].inputs == ("sigmoid", "mul")
    rep = profile(Se(), (2, 4, 8, 8))
    # 2*4*8*8 = 512 multiplies each; gate reads 512 + 8, the square 1,024, the scalar 512
    assert [rep.by_name[s.name].other_ops for s in muls] == [512] * 4
    assert [rep.by_name[s.name].mac_elements for s in muls] == [1_032, 1_032, 1_536, 1_024]


def test_product_that_broadcasts_both_ways_is_unsupported() -> None:
    class Outer(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(3, keepdim=True) * x.mean(2, keepdim=True)

    _, unsupported = trace_layers(Outer(), (1, 2, 4, 4))
    assert any("mul" in u and "broadcasting mul" in u for u in unsupported), unsupported


def test_scalar_arithmetic_is_one_kernel_per_operator() -> None:
    specs, unsupported = trace_layers(OFAHswish(), (2, 4, 8, 8))
    assert unsupported == ()
    assert [(s.name, s.op, s.num_inputs) for s in specs] == [
        ("add", "add", 1),
        ("relu6", "relu6", 1),
        ("mul", "mul", 2),
        ("truediv", "mul", 1),
    ]
    assert specs[2].inputs == ("input", "relu6") and specs[3].inputs == ("mul",)
    rep = profile(OFAHswish(), (2, 4, 8, 8))
    # 2*4*8*8 = 512 elements: each operator one op per element; the scalar ones read and
    # write 512 each, the product reads x and relu6's output (1,024) and writes 512.
    assert [lc.other_ops for lc in rep.layers] == [512, 1_024, 512, 512]  # relu6: 2 per elem
    assert [lc.mac_elements for lc in rep.layers] == [1_024, 1_024, 1_536, 1_024]
    # nn.Hardswish is one kernel over the same tensor: 4x fewer launches, 1/3 the traffic
    fused = profile(nn.Hardswish(), (2, 4, 8, 8))
    assert rep.total.mac_elements == 4_608 and fused.total.mac_elements == 1_024


def test_differences_quotients_and_broadcast_sums() -> None:
    class Arith(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(1, 4, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = 1.0 - x  # rsub with a scalar
            z = torch.sub(x, y) / y  # tensor difference, tensor quotient
            return -(z + self.bias)  # broadcast sum, negation

    specs, unsupported = trace_layers(Arith(), (2, 4, 8, 8))
    assert unsupported == ()
    assert [(s.name, s.op, s.num_inputs, s.other_shape) for s in specs] == [
        ("sub", "add", 1, ()),
        ("sub_1", "add", 2, ()),
        ("truediv", "mul", 2, ()),
        ("add", "add", 2, (1, 4, 1, 1)),
        ("neg", "mul", 1, ()),
    ]
    rep = profile(Arith(), (2, 4, 8, 8))
    # 512 elements; the broadcast bias (4 values) is read once: 512 + 4 + 512 written
    assert rep.by_name["add"].mac_elements == 1_028
    assert [lc.other_ops for lc in rep.layers] == [512] * 5


def test_sum_with_alpha_or_outer_broadcast_is_unsupported() -> None:
    class Odd2(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            outer = x.mean(3, keepdim=True) + x.mean(2, keepdim=True)  # (N,C,H,1) + (N,C,1,W)
            return torch.sub(x, x, alpha=2), outer

    _, unsupported = trace_layers(Odd2(), (1, 2, 4, 4))
    assert "sub (sub: alpha=2)" in unsupported
    assert any(
        u.startswith("add (add: broadcasting add: operands of shapes [(1, 2, 4, 1), (1, 2, 1, 4)]")
        for u in unsupported
    ), unsupported


def test_fx_failure_falls_back_to_hooks_with_a_warning() -> None:
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() >= 0:  # data-dependent control flow: fx cannot trace it
                x = self.conv(x)
            return self.act(x)

    with pytest.warns(UserWarning, match="falling back to forward hooks"):
        rep = profile(Dynamic(), (1, 3, 6, 6))
    assert [(x.name, x.op) for x in rep.layers] == [("conv", "conv2d"), ("act", "relu")]
    assert rep.total.params == 3 * 4 * 9 + 4


def test_training_flags_are_restored() -> None:
    model = CifarNet()
    model.train()
    model.features[1].eval()  # a mixed state survives too
    profile(model, (1, 3, 32, 32))
    assert model.training and model.fc.training
    assert not model.features[1].training


def test_formula_shape_mismatch_is_an_internal_error() -> None:
    site = _Site(
        "node:x",
        "conv",
        (1, 3, 8, 8),
        (1, 4, 7, 7),
        ("input",),
        (),
        _Layer("conv2d", {"out_channels": 4, "kernel_size": (3, 3), "padding": (1, 1)}),
        "Conv2d",
    )
    with pytest.raises(TraceInternalError, match=r"out_shape=\(1, 4, 8, 8\).*\(1, 4, 7, 7\)"):
        _to_specs([site])


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"input_shape=\(1, 0, 8\)"):
        profile(nn.Conv2d(3, 4, 1), (1, 0, 8))
    with pytest.raises(ValueError, match=r"input_shape=\(1, 5, 8, 8\).*channels"):
        profile(nn.Conv2d(3, 4, 1), (1, 5, 8, 8))
    with pytest.raises(TypeError, match=r"must be a torch\.nn\.Module"):
        profile("resnet18", (1, 3, 8, 8))  # type: ignore[arg-type]


# --- the hand-written channel shuffle -----------------------------------------------------


class ShuffleBy(nn.Module):
    """Conv, then a channel shuffle written as ``how``, then a conv."""

    def __init__(self, how: str, groups: int = 2, channels: int = 12) -> None:
        super().__init__()
        self.how, self.groups = how, groups
        self.a = nn.Conv2d(channels, channels, 1, groups=groups)
        self.b = nn.Conv2d(channels, channels, 1, groups=groups)
        self.module = nn.ChannelShuffle(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, g = self.a(x), self.groups
        n, c, h, w = y.shape
        if self.how == "module":
            y = self.module(y)
        elif self.how == "functional":
            y = F.channel_shuffle(y, g)
        elif self.how == "view":  # ShuffleNet V1/V2, FBNet (HW-NAS-Bench) code
            y = y.view(n, g, c // g, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        elif self.how == "permute_reshape":
            y = y.reshape(n, g, -1, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
        elif self.how == "flatten":
            y = torch.transpose(y.view(n, g, c // g, h, w), 2, 1).contiguous().flatten(1, 2)
        elif self.how == "not_a_shuffle":  # swaps H and W inside groups: not a shuffle
            y = y.view(n, g, c // g, h, w).transpose(3, 4).contiguous().view(n, c, h, w)
        elif self.how == "branch_reads_inside":  # the 5-D view is read twice
            v = y.view(n, g, c // g, h, w)
            y = v.transpose(1, 2).contiguous().view(n, c, h, w) + v.reshape(n, c, h, w)
        return self.b(y)


@pytest.mark.parametrize("how", ["functional", "view", "permute_reshape", "flatten"])
def test_written_out_channel_shuffles_cost_as_channel_shuffle(how: str) -> None:
    shape = (2, 12, 5, 5)
    ref = profile(ShuffleBy("module", groups=3), shape)
    rep = profile(ShuffleBy(how, groups=3), shape)
    assert rep.unsupported == ()
    assert [(lc.op, lc.in_shape, lc.out_shape) for lc in rep.layers] == [
        (lc.op, lc.in_shape, lc.out_shape) for lc in ref.layers
    ]
    shuffle = next(lc for lc in rep.layers if lc.op == "channel_shuffle")
    # one permutation copy: read and write 2*12*5*5 = 600 elements each
    assert shuffle.mac_elements == 1200
    assert rep.total == ref.total
    specs, _ = trace_layers(ShuffleBy(how, groups=3), shape)
    sh = next(s for s in specs if s.op == "channel_shuffle")
    assert sh.groups == 3 and sh.inputs == ("a",)
    assert next(s for s in specs if s.name == "b").inputs == (sh.name,)


@pytest.mark.parametrize("how", ["not_a_shuffle", "branch_reads_inside"])
def test_lookalike_reshapes_stay_unsupported(how: str) -> None:
    rep = profile(ShuffleBy(how), (1, 12, 4, 4))
    assert not any(lc.op == "channel_shuffle" for lc in rep.layers)
    assert any("(1, 12, 4, 4) -> (1, 2, 6, 4, 4)" in u for u in rep.unsupported), rep.unsupported


def test_shufflenet_v2_split_concat_and_shuffle() -> None:
    rep = profile(family("shufflenet_v2_x1_0")(), (1, 3, 224, 224))
    unit = {
        lc.name.removeprefix("stages.0.1."): lc
        for lc in rep.layers
        if lc.name.startswith("stages.0.1.")
    }
    assert [unit[k].op for k in ("split", "concat", "channel_shuffle")] == [
        "split",
        "concat",
        "channel_shuffle",
    ]
    # chunk is a view: no kernel, no traffic
    assert (unit["split"].mac_elements, unit["split"].kernel_class) == (0, "view")
    # concat and shuffle each read and write the unit's 116 x 28 x 28 = 90,944 elements
    assert unit["concat"].out_shape == (1, 116, 28, 28)
    assert unit["concat"].mac_elements == unit["channel_shuffle"].mac_elements == 2 * 90_944
    specs, _ = trace_layers(family("shufflenet_v2_x1_0")(), (1, 3, 224, 224))
    by_name = {s.name: s for s in specs}
    cat = by_name["stages.0.1.concat"]
    # x1 comes straight from the split's view, the other half from branch2's last ReLU
    assert cat.inputs == ("stages.0.1.split", "stages.0.1.branch2.7")
    assert (cat.num_inputs, cat.out_channels) == (2, 116)


class Joins(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "cat_batch":
            return torch.cat([x, F.relu(x)], 0)
        if self.how == "chunk_height":
            a, b = x.chunk(2, dim=2)
            return a + b
        a, b = torch.split(x, [4, 8], dim=1)
        return torch.cat([b, a, F.relu(a)], dim=-3)


def test_concat_and_split_other_than_channels_are_unsupported() -> None:
    rep = profile(Joins("cat_batch"), (2, 12, 4, 4))
    assert rep.unsupported == (
        "cat (cat: dim=0 (only the channel dim 1 of (N, C, H, W) is costed))",
    )
    rep = profile(Joins("chunk_height"), (2, 12, 4, 4))
    assert any("chunk: dim=2" in u for u in rep.unsupported), rep.unsupported
    rep = profile(Joins("split_channels"), (2, 12, 4, 4))
    assert rep.unsupported == ()
    cat = rep.by_name["concat"]
    # 8 + 4 + 4 channels of 2 x 4 x 4: 512 elements read, 512 written
    assert (cat.out_shape, cat.mac_elements) == ((2, 16, 4, 4), 1024)


class Halve(nn.Module):
    """Parameter-free, data-dependent (untraceable), and neither identity nor shuffle."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 2 if x.sum() > 0 else x


class Same(nn.Module):
    """Untraceable, and the identity on the probe's tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > -1 else -x


class ResidualWith(nn.Module):
    def __init__(self, middle: nn.Module) -> None:
        super().__init__()
        self.a = nn.Conv2d(12, 12, 1, groups=3)
        self.middle = middle
        self.b = nn.Conv2d(12, 12, 1, groups=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.middle(self.a(x)))


def test_untraceable_channel_shuffle_module_is_recognised_by_what_it_does() -> None:
    """FBNet's ChannelShuffle (an assert and int(C / g) on traced sizes: torch.fx fails)."""
    shape = (2, 12, 5, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to hooks: the rest is still traced
        rep = profile(ResidualWith(family("ChannelShuffle")(3)), shape)
    ref = profile(ResidualWith(nn.ChannelShuffle(3)), shape)
    assert rep.unsupported == ()
    assert [(lc.name, lc.op) for lc in rep.layers] == [
        ("a", "conv2d"),
        ("middle", "channel_shuffle"),
        ("b", "conv2d"),
        ("add", "add"),
    ]
    assert rep.total == ref.total
    specs, _ = trace_layers(ResidualWith(family("ChannelShuffle")(3)), shape)
    assert next(s for s in specs if s.name == "middle").groups == 3


def test_untraceable_parameter_free_module_that_is_no_shuffle_is_unsupported() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = profile(ResidualWith(Halve()), (1, 12, 4, 4))
    assert rep.unsupported == ("middle (Halve)",)
    # the residual add, a functional op, is still seen: only the module is kept whole
    assert [lc.name for lc in rep.layers] == ["a", "b", "add"]
    rep = profile(ResidualWith(Same()), (1, 12, 4, 4))
    assert rep.unsupported == () and rep.by_name["middle"].op == "identity"


class SliceSplitUnit(nn.Module):
    """A ShuffleNet V2 unit as CIFAR code often writes it: channels split by slicing,
    shuffled with reshape / permute / reshape."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        half = channels // 2
        self.conv = nn.Conv2d(half, half, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1) // 2
        x1, x2 = x[:, :c, :, :], x[:, c:]
        out = torch.cat([x1, F.relu(self.conv(x2))], 1)
        n, ch, h, w = out.size()
        return out.reshape(n, 2, ch // 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, ch, h, w)


def test_channel_slices_are_free_views() -> None:
    rep = profile(SliceSplitUnit(), (2, 16, 4, 4))
    assert rep.unsupported == ()
    assert [lc.op for lc in rep.layers] == [
        "split",
        "split",
        "conv2d",
        "relu",
        "concat",
        "channel_shuffle",
    ]
    assert [lc.mac_elements for lc in rep.layers if lc.op == "split"] == [0, 0]
    specs, _ = trace_layers(SliceSplitUnit(), (2, 16, 4, 4))
    by_op = {s.op: s for s in specs}
    assert by_op["concat"].inputs == ("split", "relu")  # x1 straight from its slice

    # a slice of anything but whole channels stays unsupported
    class Rows(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(x[:, :, 1:])

    assert profile(Rows(), (1, 4, 4, 4)).unsupported == ("getitem (getitem)",)
