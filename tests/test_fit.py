"""Fitting a profile to measured networks: costmodel._fit.fit_networks, `hw_profiles fit`."""

from __future__ import annotations

import csv
import dataclasses
import statistics
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest
import tomllib

import costmodel
import hw_profiles
from costmodel._fit import (
    HEAVY_HOST_CLASSES,
    SPLIT_GROUPS,
    MeasuredNetwork,
    _spearman,
    fit_networks,
    predict_networks,
)
from hw_profiles import HardwareProfile, ProfileError, RuntimeParams
from hw_profiles._schema import DATA_DIR
from searchspace import NB201Net, OFANet
from tests._scripts import blas_env

ROOT = Path(__file__).resolve().parents[1]
CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
    "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|avg_pool_3x3~1|none~2|",
    "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_3x3~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_1x1~2|",
    "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|",
    "|skip_connect~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|none~0|nor_conv_1x1~1|avg_pool_3x3~2|",
]
SCALED = {"dense_conv": 0.6, "pointwise_conv": 0.75, "pooling": 0.9}
STREAMING = ("batchnorm", "activation", "elementwise")


def _true_profile(base: HardwareProfile) -> HardwareProfile:
    """The base with known changes: host 2x, conv calls +50 us, device 4.2 us, efficiencies."""
    eager = RuntimeParams(
        kernel_overhead_s=4.2e-6,
        host_overhead_s=22e-6,
        class_host_overhead_s=MappingProxyType({c: 50e-6 for c in HEAVY_HOST_CLASSES}),
    )
    ce, me = dict(base.compute_efficiency), dict(base.memory_efficiency)
    for cls, f in SCALED.items():
        me[cls] = me[cls] * f
        if cls in ce:
            ce[cls] = ce[cls] * f
    for cls in STREAMING:  # the tied streaming group moves together
        me[cls] = me[cls] * 0.8
    return dataclasses.replace(
        base,
        runtimes=MappingProxyType({**base.runtimes, "eager": eager}),
        compute_efficiency=MappingProxyType(ce),
        memory_efficiency=MappingProxyType(me),
    )


def _rows(hw: HardwareProfile, batches: tuple[int, ...]) -> list[MeasuredNetwork]:
    out = []
    for cell in CELLS:
        for b in batches:
            specs = NB201Net.from_string(cell).lower(b)
            t = costmodel.analyze(list(specs), hw, "fp32", "eager").total.latency_s
            out.append(MeasuredNetwork(tuple(specs), t))
    return out


def test_noise_free_fit_recovers_the_generating_parameters() -> None:
    base = hw_profiles.load("rtx2080ti")
    true = _true_profile(base)
    fit = fit_networks(base, _rows(true, (1, 256)), prior_weight=1e-6, folds=2)
    p = fit.parameters
    assert p["host_other_s"] == pytest.approx(22e-6, rel=1e-3)
    assert p["host_conv_extra_s"] == pytest.approx(50e-6, rel=1e-3)
    assert p["kernel_overhead_s"] == pytest.approx(4.2e-6, rel=1e-3)
    # The generating efficiencies: the base's value x the factor (a group is named by and
    # reported as its first member: batchnorm for the streaming group).
    for cls, f in SCALED.items():
        # A tied conv group reports its compute side, a memory group its memory side.
        want = base.efficiency(cls, "fp32")[1 if cls == "pooling" else 0] * f
        assert p[f"efficiency_{cls}"] == pytest.approx(want, rel=1e-3), cls
    assert p["efficiency_streaming"] == pytest.approx(
        base.efficiency("batchnorm", "fp32")[1] * 0.8, rel=1e-3
    )
    assert fit.fit_mdape < 1e-4
    # The written profile reproduces the fit through the cost model itself.
    again = _rows(fit.profile, (1, 256))
    for a, b in zip(again, _rows(true, (1, 256)), strict=True):
        assert a.latency_s == pytest.approx(b.latency_s, rel=1e-3)
    activation = base.efficiency("activation", "fp32")[1] * 0.8  # tied to batchnorm's factor
    assert fit.profile.efficiency("activation", "fp32")[1] == pytest.approx(activation, rel=1e-3)


def test_parameters_the_rows_cannot_see_stay_at_the_prior() -> None:
    # Batch 1 on this GPU is host-bound: the device efficiencies are not identifiable.
    base = hw_profiles.load("rtx2080ti")
    fit = fit_networks(base, _rows(_true_profile(base), (1,)), folds=2)
    for g, prior in fit.prior.items():
        if g.startswith("efficiency_"):
            assert fit.parameters[g] == pytest.approx(prior, rel=0.02), g
    # The host costs carry the fit (batch 1 is host-bound), so the rows are still matched.
    assert fit.fit_mdape < 0.01


def _cpu_with_class_costs() -> HardwareProfile:
    """A CPU whose calls cost the host per class (as calibrate writes) and that page-faults."""
    eager = RuntimeParams(
        kernel_overhead_s=0.0,
        host_overhead_s=9e-6,
        class_host_overhead_s=MappingProxyType(
            {
                "dense_conv": 70e-6,
                "pointwise_conv": 80e-6,
                "native_conv": 16e-6,
                "depthwise_conv": 61e-6,
                "linear": 15e-6,
                "batchnorm": 5.5e-6,
                "activation": 5.6e-6,
                "max_pooling": 24e-6,
            }
        ),
    )
    return dataclasses.replace(
        hw_profiles.load("rtx2080ti"),
        device_type="cpu",
        conv_dispatch="pytorch_cpu",
        runtimes=MappingProxyType({"eager": eager}),
        peak_ops_per_s=MappingProxyType({"fp32": 2e11}),
        bandwidth_bytes_per_s=1.3e10,
        mmap_threshold_bytes=64e3,
        page_fault_s_per_byte=6e-13,
    )


def test_fit_on_a_cpu_with_class_host_costs_is_the_cost_model() -> None:
    # Streaming classes' own host costs and page faults are fixed in the fit, and the conv /
    # linear classes the rows call keep their ratios: the prior predicts what analyze()
    # does, and the written profile predicts what the fit reported.
    base = _cpu_with_class_costs()
    rows = [MeasuredNetwork(r.specs, r.latency_s * 1.3) for r in _rows(base, (1, 32))]
    at_prior = predict_networks(base, rows)
    for row, p in zip(_rows(base, (1, 32)), at_prior, strict=True):
        assert p == pytest.approx(row.latency_s, rel=1e-9)
    fit = fit_networks(base, rows, folds=2)
    for row, p in zip(_rows(fit.profile, (1, 32)), fit.predicted_s, strict=True):
        assert row.latency_s == pytest.approx(p, rel=1e-9)
    extra = fit.profile.runtime("eager").class_host_overhead_s
    # 16 us / 80 us: the native conv's share of the fitted extra is the base's.
    assert extra["native_conv"] / extra["pointwise_conv"] == pytest.approx(0.2, rel=1e-9)
    assert extra["pointwise_conv"] == pytest.approx(fit.parameters["host_conv_extra_s"])
    assert extra["batchnorm"] == 5.5e-6  # not a parameter: kept
    assert extra["depthwise_conv"] == 61e-6  # no row calls a depthwise conv: kept


# OFA subnets at resolution 128, batch 64: depthwise and wide 1x1 convs on the device chain.
OFA_NETS = [
    OFANet(128, (3, 7, 5, 3, 7, 5, 3, 7, 5, 3), (3, 6, 4, 6, 3, 4, 6, 3, 4, 6), (2, 2, 2, 2, 2)),
    OFANet(128, (7,) * 10, (6,) * 10, (2, 2, 2, 2, 2)),
    OFANet(128, (3,) * 10, (3,) * 10, (2, 2, 2, 2, 2)),
    OFANet(160, (5, 3, 7) * 5, (4, 3, 6) * 5, (3, 3, 3, 3, 3)),
    OFANet(128, (7, 3) * 6, (3, 6) * 6, (2, 3, 2, 3, 2)),
    OFANet(144, (3, 5) * 8, (6, 4) * 8, (4, 4, 2, 4, 2)),
]
OFA_FREE = (
    "compute_efficiency_pointwise_conv",
    "compute_efficiency_depthwise_conv",
    "efficiency_depthwise_conv",
)


def _ofa_rows(hw: HardwareProfile) -> list[MeasuredNetwork]:
    out = []
    for net in OFA_NETS:
        specs = net.lower(64)
        out.append(MeasuredNetwork(specs, costmodel.analyze(list(specs), hw).total.latency_s))
    return out


def test_split_fit_recovers_compute_and_memory_efficiencies_apart() -> None:
    # Depthwise compute at 0.4x its prior but memory at 1.5x, pointwise compute at 1/3:
    # one tied factor per conv kind could not produce this profile.
    # The base: its own values, so the truth below differs from it.
    v100 = hw_profiles.load("v100")
    ce, me = dict(v100.compute_efficiency), dict(v100.memory_efficiency)
    # Depthwise starts compute-bound (compute 0.1) and stays so; the test below starts
    # it memory-bound.
    ce["pointwise_conv"] = me["pointwise_conv"] = me["depthwise_conv"] = 0.5
    ce["depthwise_conv"] = 0.1
    base = dataclasses.replace(
        v100,
        compute_efficiency=MappingProxyType(dict(ce)),
        memory_efficiency=MappingProxyType(dict(me)),
    )
    ce["depthwise_conv"] *= 0.4
    me["depthwise_conv"] *= 1.5
    ce["pointwise_conv"] /= 3
    true = dataclasses.replace(
        base, compute_efficiency=MappingProxyType(ce), memory_efficiency=MappingProxyType(me)
    )
    fit = fit_networks(
        base, _ofa_rows(true), prior_weight=1e-6, folds=2, free=OFA_FREE, split=SPLIT_GROUPS
    )
    p = fit.parameters
    assert p["compute_efficiency_depthwise_conv"] == pytest.approx(ce["depthwise_conv"], rel=0.02)
    assert p["efficiency_depthwise_conv"] == pytest.approx(me["depthwise_conv"], rel=0.02)
    assert p["compute_efficiency_pointwise_conv"] == pytest.approx(ce["pointwise_conv"], rel=0.02)
    # Not free: exactly the prior, the pointwise memory efficiency and host costs included.
    for name in set(p) - set(OFA_FREE):
        assert p[name] == fit.prior[name], name
    # The written profile carries the two sides apart and reproduces the rows.
    assert fit.profile.efficiency("depthwise_conv", "fp32") == pytest.approx(
        (ce["depthwise_conv"], me["depthwise_conv"]), rel=0.02
    )
    assert (
        fit.profile.efficiency("pointwise_conv", "fp32")[1]
        == base.memory_efficiency["pointwise_conv"]
    )
    for a, b in zip(_ofa_rows(fit.profile), _ofa_rows(true), strict=True):
        assert a.latency_s == pytest.approx(b.latency_s, rel=0.01)


def test_split_fit_finds_a_compute_roof_that_does_not_bind_at_the_prior() -> None:
    # Depthwise at the prior: 0.5 / 0.5, memory-bound (a 3x3-7x7 depthwise conv does
    # k^2 / 4 flop per fp32 byte, far below the V100's ridge of 15.7e12 / 900e9 = 17).
    # The truth computes at 0.02, so every depthwise layer binds on compute
    # (ridge 15.7e12 * 0.02 / (900e9 * 0.5) = 0.7). A roofline max has no gradient on
    # the side that does not bind: only a start on the compute side finds it.
    v100 = hw_profiles.load("v100")
    ce, me = dict(v100.compute_efficiency), dict(v100.memory_efficiency)
    ce["pointwise_conv"] = me["pointwise_conv"] = 0.5
    ce["depthwise_conv"] = me["depthwise_conv"] = 0.5
    base = dataclasses.replace(
        v100,
        compute_efficiency=MappingProxyType(dict(ce)),
        memory_efficiency=MappingProxyType(dict(me)),
    )
    ce["depthwise_conv"] = 0.02
    true = dataclasses.replace(base, compute_efficiency=MappingProxyType(ce))
    rows = _ofa_rows(true)
    assert [r.latency_s for r in rows] != [r.latency_s for r in _ofa_rows(base)]
    fit = fit_networks(base, rows, prior_weight=1e-6, folds=2, free=OFA_FREE, split=SPLIT_GROUPS)
    assert fit.parameters["compute_efficiency_depthwise_conv"] == pytest.approx(0.02, rel=0.02)
    assert fit.fit_mdape < 1e-3
    for a, b in zip(_ofa_rows(fit.profile), rows, strict=True):
        assert a.latency_s == pytest.approx(b.latency_s, rel=0.01)


def test_split_is_opt_in_and_adds_one_compute_parameter_per_group() -> None:
    base = hw_profiles.load("rtx2080ti")
    rows = _rows(base, (1,))[:4]
    tied = fit_networks(base, rows, folds=2)
    split = fit_networks(base, rows, folds=2, split=("pointwise_conv",))
    assert not any(k.startswith("compute_efficiency_") for k in tied.parameters)
    assert set(split.parameters) - set(tied.parameters) == {"compute_efficiency_pointwise_conv"}
    # At the prior both parametrisations predict the same times (the rows are the base's own).
    assert split.fit_mdape == pytest.approx(tied.fit_mdape, abs=1e-3)


def test_unknown_free_parameter_or_split_group_is_refused() -> None:
    base = hw_profiles.load("rtx2080ti")
    rows = _rows(base, (1,))[:3]
    with pytest.raises(ValueError, match="efficiency_depthwise_conv"):
        fit_networks(base, rows, free=("efficiency_depthwise_conv",))  # NB201 has none
    with pytest.raises(ValueError, match="free=\\[\\] must name"):
        fit_networks(base, rows, free=())
    with pytest.raises(ValueError, match="'winograd'"):
        fit_networks(base, rows, split=("winograd",))


def test_mixed_precisions_are_refused() -> None:
    base = hw_profiles.load("rtx2080ti")
    rows = _rows(base, (1,))[:3]
    rows[1] = dataclasses.replace(rows[1], precision="fp16")
    with pytest.raises(ValueError, match="one precision and runtime"):
        fit_networks(base, rows)


def test_fit_table_keys_are_checked(tmp_path: Path) -> None:
    text = (DATA_DIR / "t4.toml").read_text()
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(text + '\n[fit]\nmeasurements = "m.csv"\nrows = 10\n')
    bad.write_text(text + '\n[fit]\nmeasurement = "m.csv"\n')
    assert hw_profiles.load(good).name == "t4"
    with pytest.raises(ProfileError, match="unknown key 'measurement'"):
        hw_profiles.load(bad)


MODEL_PY = """
import torch.nn as nn


def small(width=8):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(width, 10),
    )


def wide():
    return small(32)


NOT_CALLABLE = 3
"""
HEADER = ["model", "input_shape", "batch", "precision", "runtime", "latency_s"]


def _fit(
    tmp_path: Path, rows: list[list[object]], base: str = "rtx2080ti"
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "nets.py").write_text(MODEL_PY)
    with (tmp_path / "m.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    cmd = [
        sys.executable,
        "-m",
        "hw_profiles",
        "fit",
        "--base",
        base,
        "--measurements",
        str(tmp_path / "m.csv"),
        "--out",
        str(tmp_path / "out.toml"),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_contract_end_to_end_with_factory_rows(tmp_path: Path) -> None:
    true = _true_profile(hw_profiles.load("rtx2080ti"))
    rows: list[list[object]] = []
    for cell in CELLS[:6]:
        t = costmodel.analyze(list(NB201Net.from_string(cell).lower(1)), true).total.latency_s
        rows.append([cell, "3x32x32", 1, "fp32", "eager", t])
    (tmp_path / "nets.py").write_text(MODEL_PY)
    sys.path.insert(0, str(tmp_path))
    try:
        import nets  # the very factories the CSV names
    finally:
        sys.path.remove(str(tmp_path))
    for name, factory in (("small", nets.small), ("wide", nets.wide)):
        for b in (1, 64):
            t = costmodel.profile(factory(), (b, 3, 32, 32), true).total.latency_s
            rows.append([f"nets.py:{name}", "3x32x32", b, "fp32", "eager", t])
    done = _fit(tmp_path, rows)
    assert done.returncode == 0, done.stderr
    for what in ("MdAPE", "Spearman", "cross-validation"):
        assert what in done.stdout
    out = tmp_path / "out.toml"
    hw = hw_profiles.load(out)
    fit_table = hw_profiles.calibration_table(out)  # no [calibration]: the fit is in [fit]
    assert fit_table == {}
    recorded = tomllib.loads(out.read_text())["fit"]
    assert recorded["rows"] == 10 and recorded["measurements"] == "m.csv"
    assert len(recorded["sha256"]) == 64 and recorded["fit_mdape"] < 0.01
    rep = costmodel.profile(nets.wide(), input_shape=(64, 3, 32, 32), hw=str(out), runtime="eager")
    assert rep.total.latency_s == pytest.approx(rows[-1][5], rel=0.01)
    assert hw.runtime("eager").host_s("dense_conv") > hw.runtime("eager").host_s("activation")


def test_contract_on_a_cpu_base_writes_what_it_fitted(tmp_path: Path) -> None:
    # A built-in Xeon with per-class host costs; its "measured" twin pays 1.4x per call.
    base = hw_profiles.load("xeon-silver-4210r")
    rt = base.runtime("eager")
    slower = dataclasses.replace(rt, host_overhead_s=rt.host_overhead_s * 1.4)
    true = dataclasses.replace(base, runtimes=MappingProxyType({**base.runtimes, "eager": slower}))
    (tmp_path / "nets.py").write_text(MODEL_PY)
    sys.path.insert(0, str(tmp_path))
    try:
        import nets
    finally:
        sys.path.remove(str(tmp_path))
    cases = [(name, b) for name in ("small", "wide") for b in (1, 2, 4, 8, 16)]
    rows: list[list[object]] = []
    for name, b in cases:
        t = costmodel.profile(getattr(nets, name)(), (b, 3, 32, 32), true).total.latency_s
        rows.append([f"nets.py:{name}", "3x32x32", b, "fp32", "eager", t])
    done = _fit(tmp_path, rows, base="xeon-silver-4210r")
    assert done.returncode == 0, done.stderr
    # Native convs at batch 1, oneDNN ones above it (threads > 1); no grouped conv is called.
    assert "moves dense_conv, linear, native_conv, pointwise_conv (" in done.stdout
    out = tmp_path / "out.toml"
    recorded = tomllib.loads(out.read_text())["fit"]
    errors = []
    for (name, b), row in zip(cases, rows, strict=True):
        p = costmodel.profile(getattr(nets, name)(), (b, 3, 32, 32), str(out)).total.latency_s
        errors.append(abs(p / float(row[5]) - 1))
    # The written file predicts what the fit reported (its TOML keeps 6 digits).
    assert statistics.median(errors) == pytest.approx(recorded["fit_mdape"], abs=1e-5)
    assert hw_profiles.load(out).runtime("eager").class_extra_s("batchnorm") == 5.51e-6


def test_unusable_rows_are_refused_by_line_and_too_few_exit_2(tmp_path: Path) -> None:
    cell = CELLS[0]
    rows: list[list[object]] = [
        [cell, "3x32x32", 1, "fp32", "eager", 0.004],  # line 2: good
        [cell, "3x32", 1, "fp32", "eager", 0.004],  # line 3
        [cell, "3x32x32", 1, "fp99", "eager", 0.004],  # line 4
        ["missing.py:net", "3x32x32", 1, "fp32", "eager", 0.004],  # line 5
        [cell, "3x32x32", 1, "fp32", "eager", 0],  # line 6
        ["nets.py:NOT_CALLABLE", "3x32x32", 1, "fp32", "eager", 0.004],  # line 7
        [cell, "3x64x64", 1, "fp32", "eager", 0.004],  # line 8: NB201 runs at 3x32x32
        [cell, "3x32x32", 0, "fp32", "eager", 0.004],  # line 9
    ]
    done = _fit(tmp_path, rows)
    assert done.returncode == 2
    err = done.stderr
    for line, what in [
        (3, "input_shape='3x32'"),
        (4, "precision='fp99'"),
        (5, "'missing.py' does not exist"),
        (6, "latency_s='0'"),
        (7, "factory 'NOT_CALLABLE' is not a callable"),
        (8, "differs from the network's 3x32x32"),
        (9, "batch='0'"),
    ]:
        assert f"m.csv:{line}: refused: " in err and what in err, (line, what, err)
    assert "m.csv:2:" not in err
    assert "1 usable row(s), need at least 3" in err
    assert not (tmp_path / "out.toml").exists()


def test_fit_cli_costs_family_strings_as_their_own_code_runs(tmp_path: Path) -> None:
    from hw_profiles._cli import ModelResolver

    resolver = ModelResolver(tmp_path)
    ofa = OFANet(128, (3,) * 10, (3,) * 10, (2,) * 5)
    low = resolver.lower(ofa.to_string(), (3, 128, 128), 4)
    # OFA's h_swish is four element-wise layers (x + 3, relu6, x * ., / 6), not one
    assert low.specs == ofa.eager_layers(4) and len(low.specs) > len(ofa.lower(4))
    assert any(s.name.endswith(".act.truediv") for s in low.specs)
    # what no layer stands for: the second mean of each global pool (6 SE blocks + head)
    assert low.extra_kernels == 7
    nb = NB201Net.from_string(CELLS[0])
    low = resolver.lower(nb.to_string(), (3, 32, 32), 2)
    # NAS-Bench-201's node sums start from 0 (Python's sum()): 45 `0 + x` layers more
    assert low.specs == nb.eager_layers(2) and low.extra_kernels == 0
    assert len(low.specs) == len(nb.lower(2)) + 45


@pytest.mark.filterwarnings("error")
def test_spearman_is_undefined_without_an_order_on_either_side() -> None:
    # Rank correlation needs three rows and two distinct values on each side; scipy would
    # warn and give nan, the fit report says nan without the warning.
    assert _spearman([1.0, 2.0, 3.0], [2.0, 4.0, 9.0]) == pytest.approx(1.0)
    assert _spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    for pred, meas in [([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0], [5.0] * 3),
                       ([1.0, 2.0], [1.0, 2.0])]:  # fmt: skip
        assert _spearman(pred, meas) != _spearman(pred, meas)  # nan


def test_blas_kernels_names_the_kernels_openblas_was_told_to_use() -> None:
    """A fit's record names its BLAS kernels (other kernels stop the fit a little apart).
    OPENBLAS_CORETYPE, read as numpy loads, picks them: Haswell's (AVX2) run on any x86-64
    CPU with AVX2, whatever OpenBLAS would have picked there."""
    env = {**blas_env("Haswell", frozenset({"avx2"})), "PYTHONPATH": str(ROOT)}
    code = "from costmodel._fit import blas_kernels; print(blas_kernels())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert "(Haswell kernels)" in out and "?" not in out, out
