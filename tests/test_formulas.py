"""Golden numbers for the per-layer formulas (the seed's four first) and their properties.

The seed lecture (slides "典型结构对比") gives, with H x W the output size:
standard conv  Params kh*kw*cin*cout,    "FLOPs" kh*kw*cin*cout*H*W
group conv     Params kh*kw*cin*cout/g,  "FLOPs" kh*kw*cin*cout*H*W/g
depthwise      Params kh*kw*cout,        "FLOPs" kh*kw*cout*H*W
FC             Params cin*cout,          "FLOPs" cin*cout
Its "FLOPs" are multiply-accumulates: our ``macs``; our ``flops`` are 2 x that.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costmodel import (
    PRECISIONS,
    LayerSpec,
    UnsupportedLayerError,
    analyze,
    count,
    elements_to_bytes,
    known_ops,
    macs_to_flops,
)

# The running example: 16 -> 32 channels, 3x3, padding 1, on a 32x32 map (batch 1).
STD = LayerSpec("conv2d", (1, 16, 32, 32), out_channels=32, kernel_size=3, padding=1)


def test_seed_standard_conv() -> None:
    c = count(STD)
    assert c.out_shape == (1, 32, 32, 32)
    assert c.params == 3 * 3 * 16 * 32 == 4_608
    assert c.bias_params == 0
    # kh*kw*cin*cout*H*W = 3*3*16*32*32*32 = 4,718,592 (the seed's "FLOPs")
    assert c.macs == 4_718_592
    assert c.other_ops == 0
    # MAC (ShuffleNet V2): input 16*32*32 + output 32*32*32 + weights 4,608 = 53,760 elements
    assert (c.input_elements, c.output_elements, c.weight_elements) == (16_384, 32_768, 4_608)
    assert c.mac_elements == 53_760


def test_seed_group_conv() -> None:
    c = count(
        LayerSpec("conv2d", (1, 16, 32, 32), out_channels=32, kernel_size=3, padding=1, groups=4)
    )
    assert c.params == 3 * 3 * 16 * 32 // 4 == 1_152
    # kh*kw*cin*cout*H*W/g = 4,718,592 / 4 = 1,179,648
    assert c.macs == 1_179_648
    # weights read shrink by g, feature maps do not: 16,384 + 32,768 + 1,152 = 50,304
    assert c.mac_elements == 50_304


def test_seed_depthwise_conv() -> None:
    c = count(
        LayerSpec("conv2d", (1, 32, 32, 32), out_channels=32, kernel_size=3, padding=1, groups=32)
    )
    assert c.params == 3 * 3 * 32 == 288
    # kh*kw*cout*H*W = 3*3*32*32*32 = 294,912
    assert c.macs == 294_912
    assert c.out_shape == (1, 32, 32, 32)


def test_seed_pointwise_conv_is_the_k1_case() -> None:
    c = count(LayerSpec("conv2d", (1, 16, 32, 32), out_channels=32))
    assert c.params == 16 * 32 == 512
    assert c.macs == 16 * 32 * 32 * 32 == 524_288


def test_seed_fc() -> None:
    c = count(LayerSpec("linear", (1, 1024), out_channels=10))
    assert c.params == 1024 * 10 == 10_240
    assert c.macs == 10_240  # cin*cout per row, one row
    assert c.out_shape == (1, 10)
    # 3-D input: every leading dim is a row: 16 rows * 64 * 32 = 32,768 MACs
    c3 = count(LayerSpec("linear", (1, 16, 64), out_channels=32))
    assert c3.macs == 32_768
    assert c3.out_shape == (1, 16, 32)


def test_bias_is_counted_and_reported_apart() -> None:
    with_bias = LayerSpec(
        "conv2d", (1, 16, 32, 32), out_channels=32, kernel_size=3, padding=1, bias=True
    )
    c = count(with_bias)
    assert c.params == 4_608 + 32
    assert c.bias_params == 32
    assert c.macs == 4_718_592  # bias adds are not MACs...
    assert c.other_ops == 32 * 32 * 32 == 32_768  # ...but one add per output element
    fc = count(LayerSpec("linear", (2, 1024), out_channels=10, bias=True))
    assert (fc.params, fc.bias_params, fc.other_ops) == (10_250, 10, 2 * 10)


def test_batchnorm_counts() -> None:
    c = count(LayerSpec("batchnorm2d", (1, 32, 32, 32)))
    assert c.params == 2 * 32  # affine weight and bias; running stats are buffers
    assert c.bias_params == 32
    assert c.macs == 32 * 32 * 32 == 32_768  # folded y = a*x + b: one MAC per element
    assert c.weight_elements == 64
    assert count(LayerSpec("batchnorm2d", (1, 32, 32, 32), affine=False)).params == 0


@pytest.mark.parametrize(
    ("op", "ops_per_element"),
    [("relu", 1), ("relu6", 2), ("hardsigmoid", 3), ("hardswish", 4), ("sigmoid", 4), ("silu", 5)],
)
def test_activation_counts(op: str, ops_per_element: int) -> None:
    c = count(LayerSpec(op, (2, 8, 4, 4)))
    assert (c.params, c.macs) == (0, 0)
    assert c.other_ops == ops_per_element * 2 * 8 * 4 * 4  # 256 elements
    assert c.mac_elements == 2 * 256  # read + write


def test_pool_counts() -> None:
    mx = count(LayerSpec("maxpool2d", (1, 16, 32, 32), kernel_size=2, stride=2))
    assert mx.out_shape == (1, 16, 16, 16)
    assert mx.other_ops == 16 * 16 * 16 * (2 * 2 - 1) == 12_288  # 3 comparisons per output
    av = count(LayerSpec("avgpool2d", (1, 16, 32, 32), kernel_size=2, stride=2))
    assert av.other_ops == 4_096 * 4 == 16_384  # 3 adds + 1 divide per output
    # 3x3 stride 2 padding 1 on 112: floor((112 + 2 - 2 - 1) / 2) + 1 = 56 (ResNet stem)
    assert count(
        LayerSpec("maxpool2d", (1, 64, 112, 112), kernel_size=3, stride=2, padding=1)
    ).out_shape == (1, 64, 56, 56)
    gp = count(LayerSpec("global_avgpool2d", (1, 16, 8, 8)))
    assert gp.out_shape == (1, 16, 1, 1)
    assert gp.other_ops == 16 * 64 == 1_024
    assert (gp.input_elements, gp.output_elements) == (1_024, 16)


def test_add_shuffle_flatten_identity_counts() -> None:
    add = count(LayerSpec("add", (1, 16, 8, 8), num_inputs=2))
    assert add.other_ops == 1_024  # one add per element of 16*8*8
    assert (add.input_elements, add.output_elements) == (2_048, 1_024)  # ShuffleNet V2 G4
    sh = count(LayerSpec("channel_shuffle", (1, 12, 8, 8), groups=3))
    assert (sh.params, sh.macs, sh.other_ops) == (0, 0, 0)
    assert sh.mac_elements == 2 * 768  # a permutation copy: read and write 12*8*8
    fl = count(LayerSpec("flatten", (2, 16, 4, 4)))
    assert fl.out_shape == (2, 256)
    assert fl.alias and fl.mac_elements == 0
    ident = count(LayerSpec("identity", (2, 16, 4, 4)))
    assert ident.alias and ident.out_shape == (2, 16, 4, 4) and ident.mac_elements == 0


def test_concat_and_split_counts() -> None:
    # 5 + 3 channels of 2 x 4 x 4 joined: 8*32 = 256 elements read, 256 written, no arithmetic
    cat = count(LayerSpec("concat", (2, 5, 4, 4), num_inputs=2, out_channels=8))
    assert cat.out_shape == (2, 8, 4, 4)
    assert (cat.input_elements, cat.output_elements, cat.other_ops) == (256, 256, 0)
    assert not cat.alias
    split = count(LayerSpec("split", (2, 8, 4, 4)))
    assert split.alias and split.out_shape == (2, 8, 4, 4) and split.mac_elements == 0
    with pytest.raises(ValueError, match=r"num_inputs=1 must be >= 2"):
        count(LayerSpec("concat", (2, 5, 4, 4), num_inputs=1, out_channels=8))
    with pytest.raises(ValueError, match=r"out_channels=6 cannot hold the first input's 5"):
        count(LayerSpec("concat", (2, 5, 4, 4), num_inputs=3, out_channels=6))


def test_mul_counts() -> None:
    # equal operands: one multiply per element of 16*8*8 = 1,024; both read, one written
    eq = count(LayerSpec("mul", (1, 16, 8, 8), num_inputs=2))
    assert (eq.macs, eq.other_ops, eq.params) == (0, 1_024, 0)
    assert (eq.input_elements, eq.output_elements) == (2_048, 1_024)
    # squeeze-and-excitation gate (2, 16, 1, 1) over (2, 16, 8, 8): 2,048 multiplies,
    # reads 2,048 + 32 (the gate once), writes 2,048
    se = count(LayerSpec("mul", (2, 16, 8, 8), num_inputs=2, other_shape=(2, 16, 1, 1)))
    assert se.out_shape == (2, 16, 8, 8)
    assert (se.other_ops, se.input_elements, se.output_elements) == (2_048, 2_080, 2_048)
    # times a scalar (NAS-Bench-201's zero op x.mul(0.)): 1,024 multiplies, read + write
    sc = count(LayerSpec("mul", (1, 16, 8, 8)))
    assert (sc.other_ops, sc.mac_elements) == (1_024, 2_048)


def test_add_counts() -> None:
    # two equal operands of 16*8*8 = 1,024: 1,024 adds, 2,048 read, 1,024 written
    eq = count(LayerSpec("add", (1, 16, 8, 8), num_inputs=2))
    assert (eq.other_ops, eq.input_elements, eq.output_elements) == (1_024, 2_048, 1_024)
    # three operands: 2 adds per element; plus a Python scalar (x + 3): 1 add, x read once
    assert count(LayerSpec("add", (1, 16, 8, 8), num_inputs=3)).other_ops == 2_048
    sc = count(LayerSpec("add", (1, 16, 8, 8)))
    assert (sc.other_ops, sc.input_elements, sc.output_elements) == (1_024, 1_024, 1_024)
    # a per-channel bias (1, 16, 1, 1): read once, 16 values
    b = count(LayerSpec("add", (1, 16, 8, 8), num_inputs=2, other_shape=(1, 16, 1, 1)))
    assert (b.other_ops, b.input_elements) == (1_024, 1_040)


def test_mul_rejects_what_does_not_broadcast() -> None:
    with pytest.raises(ValueError, match=r"other_shape=\(1, 8, 1, 1\) does not broadcast"):
        count(LayerSpec("mul", (1, 16, 8, 8), num_inputs=2, other_shape=(1, 8, 1, 1)))
    with pytest.raises(ValueError, match=r"needs num_inputs=2, not 1"):
        count(LayerSpec("mul", (1, 16, 8, 8), other_shape=(1, 16, 1, 1)))
    with pytest.raises(ValueError, match=r"other_shape=\(0,\) must be positive"):
        LayerSpec("mul", (1, 16, 8, 8), num_inputs=2, other_shape=(0,))


def test_mac_bytes_per_precision_golden() -> None:
    rep = {p: analyze([STD], "t4", p) for p in ("fp32", "fp16", "int8", "int4")}
    # 53,760 elements * 4 / 2 / 1 / 0.5 bytes
    assert rep["fp32"].total.mac_bytes == 215_040
    assert rep["fp16"].total.mac_bytes == 107_520
    assert rep["int8"].total.mac_bytes == 53_760
    assert rep["int4"].total.mac_bytes == 26_880
    # intensity = FLOPs / bytes = 9,437,184 / 215,040 = 43.885...
    assert rep["fp32"].layers[0].intensity == pytest.approx(9_437_184 / 215_040)


def test_groups_must_divide_channels_names_both_numbers() -> None:
    with pytest.raises(ValueError, match=r"groups=3 must divide in_channels=16"):
        count(LayerSpec("conv2d", (1, 16, 8, 8), out_channels=24, groups=3))
    with pytest.raises(ValueError, match=r"groups=4 must divide out_channels=30"):
        count(LayerSpec("conv2d", (1, 16, 8, 8), out_channels=30, groups=4))


def test_unknown_op_raises_and_names_it() -> None:
    with pytest.raises(UnsupportedLayerError, match=r"op='conv3d'"):
        count(LayerSpec("conv3d", (1, 3, 8, 8, 8), out_channels=4))
    assert "conv3d" not in known_ops()


def test_too_small_input_names_the_axis() -> None:
    with pytest.raises(ValueError, match=r"height=2 is too small for kernel=3"):
        count(LayerSpec("conv2d", (1, 3, 2, 8), out_channels=4, kernel_size=3))


# --- properties -------------------------------------------------------------------------


@st.composite
def conv_specs(draw: st.DrawFn, groups: int | None = None) -> LayerSpec:
    g = groups if groups is not None else draw(st.integers(1, 4))
    cin = g * draw(st.integers(1, 4))
    cout = g * draw(st.integers(1, 4))
    k = draw(st.integers(1, 5))
    size = draw(st.integers(k, 20))
    return LayerSpec(
        "conv2d",
        (draw(st.integers(1, 3)), cin, size, size),
        out_channels=cout,
        kernel_size=k,
        stride=draw(st.integers(1, 3)),
        padding=draw(st.integers(0, 2)),
        groups=g,
        bias=draw(st.booleans()),
    )


@settings(max_examples=40, deadline=None)
@given(conv_specs())
def test_flops_are_twice_macs(spec: LayerSpec) -> None:
    layer = analyze([spec], "t4", "fp32").layers[0]
    assert layer.flops == 2 * layer.macs == macs_to_flops(count(spec).macs)


@settings(max_examples=40, deadline=None)
@given(conv_specs(groups=1), st.sampled_from([2, 3, 4]))
def test_group_conv_macs_are_standard_over_g(spec: LayerSpec, g: int) -> None:
    n, c, h, w = spec.in_shape
    std = LayerSpec(
        "conv2d",
        (n, c * g, h, w),
        out_channels=spec.out_channels * g,
        kernel_size=spec.kernel_size,
        stride=spec.stride,
        padding=spec.padding,
    )
    grouped = LayerSpec(
        "conv2d",
        std.in_shape,
        out_channels=std.out_channels,
        groups=g,
        kernel_size=spec.kernel_size,
        stride=spec.stride,
        padding=spec.padding,
    )
    assert count(grouped).macs * g == count(std).macs
    assert count(grouped).params * g == count(std).params
    assert count(grouped).out_shape == count(std).out_shape


@settings(max_examples=30, deadline=None)
@given(conv_specs())
def test_mac_bytes_scale_with_precision(spec: LayerSpec) -> None:
    """Fails if a precision's storage width is wrong, e.g. bf16 counted as 4 bytes an element
    (BITS_PER_ELEMENT["bf16"] = 32), int4 rounded down, or a precision added without a width here.
    """
    c = count(spec)
    by = {p: analyze([spec], "t4", p).layers[0].mac_bytes for p in ("fp32", "fp16", "int8")}
    assert by["fp32"] == 2 * by["fp16"] == 4 * by["int8"] == 4 * c.mac_elements
    int4 = analyze([spec], "t4", "int4").layers[0].mac_bytes
    # two int4 values per byte, each of the three tensors rounded up to a whole byte
    parts = (c.input_elements, c.output_elements, c.weight_elements)
    assert int4 == sum((e + 1) // 2 for e in parts)
    # Storage widths: fp32 (IEEE 754 binary32) 4 bytes, tf32 is stored as fp32, fp16 (binary16)
    # and bf16 (bfloat16) 2 bytes, int8 1 byte, int4 two per byte rounded up.
    n = c.mac_elements
    width = {"fp32": 4 * n, "tf32": 4 * n, "fp16": 2 * n, "bf16": 2 * n, "int8": n,
             "int4": (n + 1) // 2}  # fmt: skip
    assert {p: elements_to_bytes(n, p) for p in PRECISIONS} == width
