"""estimate(arch) == analyze(arch.lower()) == profile(build(arch)) on sampled architectures.

The three paths share nothing but the formulas: ``estimate`` composes cached
per-block sums, ``analyze`` walks the lowered layer list, ``profile`` traces
the real torch module with torch.fx.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

import costmodel
import searchspace as ss
from costmodel._estimate import clear_cache
from costmodel._trace import trace_layers

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)

INT_FIELDS = ("params", "bias_params", "macs", "other_ops", "mac_elements", "mac_bytes",
              "peak_activation_bytes", "model_size_bytes")  # fmt: skip
FLOAT_FIELDS = ("latency_s", "compute_s", "memory_s", "overhead_s")


def sampled(name: str, n: int, seed: int) -> list[ss.Architecture]:
    space = ss.load_space(ROOT / "searchspace" / "spaces" / f"{name}.toml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [ss.sample(study.ask(), space) for _ in range(n)]


def assert_estimate_equals_analyze(a: ss.Architecture, **kw: object) -> None:
    batch = kw.pop("batch", 1)
    est = costmodel.estimate(a, batch=batch, **kw)  # type: ignore[arg-type]
    ref = costmodel.analyze(a.lower(batch), **kw)  # type: ignore[arg-type]
    assert {f.name for f in dataclasses.fields(est.total)} == set(INT_FIELDS + FLOAT_FIELDS)
    for f in INT_FIELDS:
        assert getattr(est.total, f) == getattr(ref.total, f), (f, a.to_string())
    # Float totals are summed per block first: equal up to rounding (addition order).
    for f in FLOAT_FIELDS:
        assert getattr(est.total, f) == pytest.approx(getattr(ref.total, f), rel=1e-12, abs=0)
    assert est.layers == ref.layers  # computed lazily by analyze itself
    assert (est.hw, est.precision, est.runtime, est.input_shape, est.unsupported) == (
        ref.hw, ref.precision, ref.runtime, ref.input_shape, ref.unsupported,
    )  # fmt: skip
    assert est.to_dict()["total"].keys() == ref.to_dict()["total"].keys()


def assert_profile_agrees(a: ss.Architecture, batch: int = 1) -> None:
    model = ss.build(a)
    specs, unsupported = trace_layers(model, (batch, *a.input_shape))
    lowered = a.lower(batch)
    assert unsupported == ()
    assert specs == lowered
    assert [s.name for s in specs] == [s.name for s in lowered]
    assert [s.inputs for s in specs] == [s.inputs for s in lowered]
    est = costmodel.estimate(a, batch=batch).total
    prof = costmodel.profile(model, (batch, *a.input_shape)).total
    assert (est.params, est.macs, est.mac_bytes) == (prof.params, prof.macs, prof.mac_bytes)
    assert est.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "n"), [("cifar", 15), ("mobile", 2), ("seed_convs", 2)])
def test_estimate_equals_profile_of_build(name: str, n: int) -> None:
    for a in sampled(name, n, seed=7):
        assert_profile_agrees(a)


def test_fixed_architectures_agree() -> None:
    for a in (ss.mobilenet_v2(), ss.shufflenet_v1_like(3), ss.shufflenet_v1_like(8)):
        assert_profile_agrees(a)
        assert_estimate_equals_analyze(a)
    assert_profile_agrees(ss.mobilenet_v2(resolution=96, num_classes=10), batch=3)


@pytest.mark.parametrize("name", ["cifar", "mobile", "seed_convs"])
def test_estimate_equals_analyze(name: str) -> None:
    archs = sampled(name, 40, seed=3)
    for a in archs:
        assert_estimate_equals_analyze(a)
    # Other contexts: batch, precision (int4 packs two per byte), runtime, a loaded profile.
    hw = costmodel.estimate(archs[0]).hw
    from hw_profiles import load

    for a in archs[:5]:
        assert_estimate_equals_analyze(a, batch=4, precision="fp16", runtime="graph")
        assert_estimate_equals_analyze(a, precision="int4", hw=load(hw))
        assert_estimate_equals_analyze(a, runtime="fused")


def test_cache_does_not_change_results() -> None:
    archs = sampled("cifar", 20, seed=5)
    warm = [costmodel.estimate(a).total for a in archs]
    clear_cache()
    cold = [costmodel.estimate(a).total for a in reversed(archs)]
    assert warm == list(reversed(cold))


def test_estimate_errors_name_the_value() -> None:
    a = ss.mobilenet_v2()
    with pytest.raises(ValueError, match="batch=0"):
        costmodel.estimate(a, batch=0)
    with pytest.raises(ValueError, match="precision='fp64'"):
        costmodel.estimate(a, precision="fp64")
    with pytest.raises(ValueError, match="'nope'"):
        costmodel.estimate(a, hw="nope")
    with pytest.raises(ValueError, match="turbo"):
        costmodel.estimate(a, runtime="turbo")
    with pytest.raises(TypeError, match="arch='ir_k3'"):
        costmodel.estimate("ir_k3")


def test_report_pickles_as_a_plain_cost_report() -> None:
    import pickle

    rep = costmodel.estimate(ss.shufflenet_v1_like(4))
    back = pickle.loads(pickle.dumps(rep))
    assert type(back) is costmodel.CostReport
    assert back.total == rep.total and back.layers == rep.layers
    assert back.to_dict() == rep.to_dict()


@pytest.mark.slow
def test_estimate_agrees_on_hundreds_of_architectures() -> None:
    for name, n in (("cifar", 200), ("mobile", 80), ("seed_convs", 20)):
        for a in sampled(name, n, seed=2026):
            assert_profile_agrees(a)
            assert_estimate_equals_analyze(a)


class PlainNetwork:
    """Lowers itself, but has no segments: estimate takes analyze's path."""

    def __init__(self, arch: ss.Architecture) -> None:
        self.arch = arch
        self.input_shape = arch.input_shape

    def lower(self, batch: int) -> tuple[costmodel.LayerSpec, ...]:
        return self.arch.lower(batch)


def test_estimate_costs_anything_that_lowers_itself() -> None:
    a = ss.shufflenet_v1_like(4)
    plain = costmodel.estimate(PlainNetwork(a), batch=2, runtime="fused")
    segmented = costmodel.estimate(a, batch=2, runtime="fused")
    assert plain.layers == segmented.layers
    assert plain.total.macs == segmented.total.macs
    assert plain.total.peak_activation_bytes == segmented.total.peak_activation_bytes
    assert plain.total.latency_s == pytest.approx(segmented.total.latency_s, rel=1e-12)
    assert plain.input_shape == segmented.input_shape == (2, *a.input_shape)


def test_segments_chain_the_network() -> None:
    a = ss.mobilenet_v2(resolution=32, num_classes=10)
    parts = a.segments()
    assert len(parts) == len(a.blocks) + 2
    chw, n = a.input_shape, 0
    for part in parts:  # each segment's layers, lowered alone, are the network's in order
        specs = part.lower(3, chw)
        assert [s.op for s in specs] == [s.op for s in a.lower(3)[n : n + len(specs)]]
        n += len(specs)
        chw = costmodel.output_shape(specs[-1])[1:]
    assert n == len(a.lower(3))
