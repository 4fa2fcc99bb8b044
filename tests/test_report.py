"""Network-level aggregation in ``costmodel.analyze``: totals, sizes, liveness, JSON."""

from __future__ import annotations

import json

import pytest

from costmodel import LayerSpec, analyze


def _chain() -> list[LayerSpec]:
    return [
        LayerSpec("conv2d", (1, 3, 8, 8), out_channels=4, kernel_size=3, padding=1, name="conv"),
        LayerSpec("relu", (1, 4, 8, 8), name="act"),
        LayerSpec("flatten", (1, 4, 8, 8), name="flat"),
        LayerSpec("linear", (1, 256), out_channels=10, bias=True, name="fc"),
    ]


def test_totals_are_sums_of_layers() -> None:
    rep = analyze(_chain(), "t4", "fp32")
    for field in ("params", "bias_params", "macs", "other_ops", "mac_elements", "mac_bytes"):
        assert getattr(rep.total, field) == sum(getattr(lay, field) for lay in rep.layers)
    assert rep.total.latency_s == pytest.approx(sum(lay.latency_s for lay in rep.layers))
    # conv 3*4*3*3 = 108 params, fc 256*10 + 10 = 2570
    assert rep.total.params == 108 + 2570
    assert rep.total.bias_params == 10
    assert rep.total.flops == 2 * rep.total.macs


def test_model_size_per_precision() -> None:
    rep = analyze(_chain(), "t4", "fp16")
    p = 2678
    assert rep.total.model_size_bytes == {
        "fp32": 4 * p,
        "fp16": 2 * p,
        "bf16": 2 * p,
        "int8": p,
        "int4": p // 2,  # 1,339 bytes: two 4-bit values per byte
    }


def test_peak_activation_chain() -> None:
    # input 3*8*8 = 192 live; conv writes 256 -> 448; input freed -> 256;
    # relu writes 256 -> 512 (peak); conv output freed; flatten is a view;
    # fc writes 10 -> 266. Peak 512 elements * 4 bytes = 2,048 bytes.
    assert analyze(_chain(), "t4", "fp32").total.peak_activation_bytes == 2048
    assert analyze(_chain(), "t4", "int8").total.peak_activation_bytes == 512


def test_peak_activation_keeps_skip_tensor_alive() -> None:
    e = 1 * 8 * 16 * 16  # 2,048 elements per tensor
    specs = [
        LayerSpec(
            "conv2d",
            (1, 8, 16, 16),
            out_channels=8,
            kernel_size=3,
            padding=1,
            name="conv",
            inputs=("input",),
        ),
        LayerSpec("relu", (1, 8, 16, 16), name="act", inputs=("conv",)),
        LayerSpec("add", (1, 8, 16, 16), num_inputs=2, name="add", inputs=("act", "input")),
    ]
    # input + conv = 2e; conv freed after act, act written: input + act + conv = 3e at act;
    # add writes a third tensor while input and act are live: 3e.
    assert analyze(specs, "t4", "fp32").total.peak_activation_bytes == 3 * e * 4


def test_report_json_roundtrip_and_conventions() -> None:
    rep = analyze(_chain(), "t4", "fp32", runtime="graph")
    d = json.loads(rep.to_json())
    assert d["hw"] == "t4" and d["runtime"] == "graph"
    assert d["total"]["flops"] == 2 * d["total"]["macs"]
    assert [lay["name"] for lay in d["layers"]] == ["conv", "act", "flat", "fc"]
    assert "seed" in d["conventions"]["macs"]


def test_views_are_free() -> None:
    rep = analyze(_chain(), "t4", "fp32")
    flat = rep.by_name["flat"]
    assert (flat.mac_bytes, flat.latency_s, flat.bound) == (0, 0.0, "free")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp64"}, "precision='fp64'"),
        ({"runtime": "jit"}, "runtime='jit'"),
        ({"hw": "t5"}, "unknown hardware profile 't5'"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        analyze(_chain(), **kwargs)


def test_empty_network_rejected() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        analyze([], "t4", "fp32")
