"""Rescaling a calibrated profile to the machine's speed now (costmodel/_rescale.py and
``python -m hw_profiles rescale``)."""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import searchspace
from costmodel import _rescale
from costmodel._chains import CHAIN_BATCHES, op_chains
from costmodel._report import analyze
from costmodel._rescale import STREAMING_CLASSES, fit_speed_change, measure_probes, scale_profile
from costmodel._validate import calibration_reference
from hw_profiles import HardwareProfile, ProfileError, calibration_table, load_fresh, parse_profile
from hw_profiles._cli import main
from hw_profiles._schema import _read_toml
from hw_profiles._toml import profile_to_toml

ROOT = Path(__file__).resolve().parents[1]
# A real calibration of the 2-core EPYC development VM: its [calibration] table records the
# reference network's times at batches 1, 8 and 32.
CALIBRATED = ROOT / "experiments" / "results" / "epyc_op_chains" / "calibrated_cpu.toml"
REFERENCE = searchspace.reference_architecture()
BATCHES = (1, 8, 32)


@pytest.fixture(scope="module")
def hw() -> HardwareProfile:
    return load_fresh(CALIBRATED)


@pytest.fixture(scope="module")
def layers() -> dict[int, list[Any]]:
    return {b: list(REFERENCE.lower(b)) for b in BATCHES}


def _latency(h: HardwareProfile, specs: Sequence[Any]) -> float:
    return analyze(specs, h, "fp32", "eager").total.latency_s


def _planted_rows(
    hw: HardwareProfile, nets: Sequence[Sequence[Any]], a: float, c: float
) -> list[tuple[Sequence[Any], float]]:
    """(layers, time) as a machine with fixed costs x a and throughput x c would time them."""
    moved = scale_profile(hw, a, c)
    return [(specs, _latency(moved, specs)) for specs in nets]


def test_scaling_multiplies_every_fixed_cost_and_every_seconds_per_op_and_byte(
    hw: HardwareProfile, layers: dict[int, list[Any]]
) -> None:
    moved = scale_profile(hw, 0.5, 3.0)
    assert moved.runtime("eager").host_s("dense_conv") == pytest.approx(
        0.5 * hw.runtime("eager").host_s("dense_conv")
    )
    assert moved.peak("fp32") == pytest.approx(hw.peak("fp32") / 3)
    assert moved.bandwidth_bytes_per_s == pytest.approx(hw.bandwidth_bytes_per_s / 3)
    assert moved.page_fault_s_per_byte == pytest.approx(3 * hw.page_fault_s_per_byte)
    before = analyze(layers[32], hw, "fp32", "eager").layers
    after = analyze(layers[32], moved, "fp32", "eager").layers
    for x, y in zip(before, after, strict=True):
        assert y.overhead_s == pytest.approx(0.5 * x.overhead_s, rel=1e-9), x.name
        assert y.compute_s == pytest.approx(3 * x.compute_s, rel=1e-9), x.name
        assert y.memory_s == pytest.approx(3 * x.memory_s, rel=1e-9), x.name
    assert scale_profile(hw, 1.0, 1.0).to_dict() == hw.to_dict()


@pytest.mark.parametrize("a, c, sa, sc", [(0.5, 3.0, 2.0, 1.5), (2.0, 0.7, 0.5, 1.3)])
def test_streaming_kernels_take_their_own_factors(
    hw: HardwareProfile,
    layers: dict[int, list[Any]],
    a: float,
    c: float,
    sa: float,
    sc: float,
    tmp_path: Path,
) -> None:
    moved = scale_profile(hw, a, c, streaming_overhead_factor=sa, streaming_throughput_factor=sc)
    for b in (1, 32):
        before = analyze(layers[b], hw, "fp32", "eager").layers
        after = analyze(layers[b], moved, "fp32", "eager").layers
        kinds = set()
        for x, y in zip(before, after, strict=True):
            fixed, rate = (sa, sc) if x.kernel_class in STREAMING_CLASSES else (a, c)
            kinds.add(x.kernel_class in STREAMING_CLASSES)
            assert y.overhead_s == pytest.approx(fixed * x.overhead_s, rel=1e-9), x.name
            assert y.compute_s == pytest.approx(rate * x.compute_s, rel=1e-9), x.name
            assert y.memory_s == pytest.approx(rate * x.memory_s, rel=1e-9), x.name
        assert kinds == {True, False}  # the reference network has both kinds
    # Efficiencies stay fractions and fixed costs non-negative: the profile writes and loads.
    path = tmp_path / "moved.toml"
    path.write_text(profile_to_toml(moved, calibration_table(CALIBRATED)))
    again = load_fresh(path)
    assert _latency(again, layers[1]) == pytest.approx(_latency(moved, layers[1]), rel=1e-5)
    same = scale_profile(hw, a, c, streaming_overhead_factor=a, streaming_throughput_factor=c)
    assert same.to_dict() == scale_profile(hw, a, c).to_dict()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_scaling_refuses_a_factor_that_is_not_a_positive_number(
    hw: HardwareProfile, bad: float
) -> None:
    with pytest.raises(ValueError, match="throughput_factor="):
        scale_profile(hw, 1.0, bad)


@pytest.mark.parametrize("a, c", [(0.6, 1.1), (1.5, 0.8), (1.0, 1.0)])
def test_fit_recovers_planted_factors_from_networks_at_three_batches(
    hw: HardwareProfile, layers: dict[int, list[Any]], a: float, c: float
) -> None:
    change = fit_speed_change(hw, _planted_rows(hw, list(layers.values()), a, c))
    # The weak prior that ties the two factors costs a fraction of a percent.
    assert change.overhead_factor == pytest.approx(a, rel=0.01)
    assert change.throughput_factor == pytest.approx(c, rel=0.01)
    assert change.error_after < 0.005
    assert change.error_before == pytest.approx(
        statistics.median(
            abs(p / m - 1)
            for p, m in zip(change.predicted_before_s, change.measured_s, strict=True)
        )
    )


def test_fit_recovers_four_planted_factors_from_networks_and_op_chains(
    hw: HardwareProfile, layers: dict[int, list[Any]]
) -> None:
    nets = [*layers.values(), *(tuple(ch.lower(b)) for ch in op_chains() for b in CHAIN_BATCHES)]
    planted = {"streaming_overhead_factor": 1.5, "streaming_throughput_factor": 1.2}
    moved = scale_profile(hw, 1.1, 1.4, **planted)
    rows = [(specs, _latency(moved, specs)) for specs in nets]
    change = fit_speed_change(hw, rows, streaming=True)
    assert change.overhead_factor == pytest.approx(1.1, rel=0.02)
    assert change.throughput_factor == pytest.approx(1.4, rel=0.02)
    assert change.streaming_overhead_factor == pytest.approx(1.5, rel=0.02)
    assert change.streaming_throughput_factor == pytest.approx(1.2, rel=0.02)
    assert change.error_after < 0.01 < change.error_before
    two = fit_speed_change(hw, rows)  # one kind of kernel: cannot fit both
    assert two.streaming_overhead_factor is None
    assert two.error_after > 2 * change.error_after
    with pytest.raises(ValueError, match="scale must be None"):
        fit_speed_change(hw, rows, streaming=True, scale=scale_profile)


def test_one_network_gives_one_factor_for_everything(
    hw: HardwareProfile, layers: dict[int, list[Any]]
) -> None:
    before = _latency(hw, layers[1])
    change = fit_speed_change(hw, [(layers[1], 0.75 * before)])
    assert change.overhead_factor == pytest.approx(0.75, rel=1e-4)
    assert change.throughput_factor == pytest.approx(0.75, rel=1e-4)
    assert change.predicted_after_s[0] == pytest.approx(0.75 * before, rel=1e-4)


def test_fit_names_what_is_missing_or_wrong(
    hw: HardwareProfile, layers: dict[int, list[Any]]
) -> None:
    with pytest.raises(ValueError, match="rows is empty"):
        fit_speed_change(hw, [])
    with pytest.raises(ValueError, match=r"\(1, 0.0\)"):
        fit_speed_change(hw, [(layers[1], 1e-3), (layers[8], 0.0)])


def test_probes_and_the_reference_are_timed_at_their_batches() -> None:
    probes = searchspace.sample_architectures("cifar", 2, 1)
    rows, reference_s = measure_probes(probes, (1, 2), "cpu", reference=REFERENCE, rounds=2)
    assert [len(specs) for specs, _ in rows] == [len(p.lower(1)) for p in probes]
    assert rows[1][0][0].in_shape[0] == 2  # the second network at the second batch
    assert sorted(reference_s) == [1, 2]
    assert all(0 < t < 10 for t in [*reference_s.values(), *(t for _, t in rows)])


def _fake_measure(
    hw: HardwareProfile, a: float, c: float, asked: list[Any], **streaming: float
) -> Any:
    """measure_probes on a machine whose speed moved by the factors ``scale_profile`` takes."""
    moved = scale_profile(hw, a, c, **streaming)

    def fake(
        networks: Sequence[Any], batches: Sequence[int], device: str, **kw: Any
    ) -> tuple[list[tuple[Sequence[Any], float]], dict[int, float]]:
        reference = kw.get("reference")
        asked.append(
            (len(networks), list(batches), device, kw["threads"], reference and str(reference))
        )
        at = [batches[i % len(batches)] for i in range(len(networks))]
        # Grouped by batch, in the order measure_networks times them.
        nets = [
            tuple(n.lower(b))
            for b in sorted(set(at))
            for n, nb in zip(networks, at, strict=True)
            if nb == b
        ]
        ref = {b: _latency(moved, REFERENCE.lower(b)) for b in set(batches)} if reference else {}
        return [(specs, _latency(moved, specs)) for specs in nets], ref

    return fake


def test_rescale_writes_a_profile_at_the_speed_it_measured(
    tmp_path: Path,
    hw: HardwareProfile,
    layers: dict[int, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asked: list[Any] = []
    monkeypatch.setattr(_rescale, "measure_probes", _fake_measure(hw, 0.5, 1.2, asked))
    base = tmp_path / "calibrated.toml"
    shutil.copy(CALIBRATED, base)
    out = tmp_path / "sub" / "now.toml"
    raw = tmp_path / "probes.json"
    argv = [
        "rescale",
        "--hw",
        str(base),
        "--out",
        str(out),
        "--json",
        "--min-error",
        "0",
        "--raw",
        str(raw),
    ]
    assert main(argv) == 0
    probes = json.loads(raw.read_text())["probes"]
    assert len(probes) == 12 + 2 * len(op_chains()) + 3
    for p in probes:  # each name's batch is its layers' batch
        assert p["probe"].endswith(f" b{p['layers'][0]['in_shape'][0]}"), p["probe"]
    assert [p["probe"].split(" ")[0] for p in probes[-3:]] == ["reference"] * 3
    chains = len(op_chains())
    assert asked == [
        (12, [1, 32, 1, 32, 8], "cpu", hw.threads, str(REFERENCE)),
        (chains, [1], "cpu", hw.threads, None),
        (chains, [32], "cpu", hw.threads, None),
    ]
    doc = json.loads(capsys.readouterr().out)
    assert doc["rescale"]["overhead_factor"] == pytest.approx(0.5, rel=0.01)
    assert doc["rescale"]["throughput_factor"] == pytest.approx(1.2, rel=0.01)
    assert doc["rescale"]["streaming_overhead_factor"] == pytest.approx(0.5, rel=0.01)
    assert doc["rescale"]["streaming_throughput_factor"] == pytest.approx(1.2, rel=0.01)
    assert doc["rescale"]["median_abs_error_after"] < 0.005
    # Validation compares a session's speed with the speed the profile now describes.
    planted = {b: _latency(scale_profile(hw, 0.5, 1.2), layers[b]) for b in BATCHES}
    assert calibration_reference(str(out), str(REFERENCE)) == pytest.approx(planted, rel=1e-5)
    assert calibration_table(out)["date"] == calibration_table(base)["date"]
    rescaled = load_fresh(out)
    for b in BATCHES:
        assert _latency(rescaled, layers[b]) == pytest.approx(planted[b], rel=0.01), b


def test_rescale_prints_what_moved(
    tmp_path: Path,
    hw: HardwareProfile,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(_rescale, "measure_probes", _fake_measure(hw, 1.4, 1.4, []))
    out = tmp_path / "now.toml"
    assert main(["rescale", "--hw", str(CALIBRATED), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # 12 probes, the reference at its three batches and 25 op chains at each of two batches;
    # every one 40% slower than predicted: off by 1 - 1 / 1.4 = 28.6%, over the default
    # --min-error of 25%.
    assert (
        "15 networks and 50 op chains timed: the profile was off by 28.6% (median), scaled by 0.0%"
    ) in text
    assert "convs and linear: fixed costs x1.400, seconds per op and byte x1.400" in text
    assert "activations, adds and pools: fixed costs x1.400, seconds per op and byte x1.400" in text
    assert f"wrote {out}\n" in text
    assert _read_toml(out)["rescale"]["applied"] is True


def test_no_chains_fits_two_factors_to_the_networks_alone(
    tmp_path: Path,
    hw: HardwareProfile,
    layers: dict[int, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asked: list[Any] = []
    monkeypatch.setattr(_rescale, "measure_probes", _fake_measure(hw, 0.8, 1.3, asked))
    out = tmp_path / "now.toml"
    argv = [
        "rescale",
        "--hw",
        str(CALIBRATED),
        "--out",
        str(out),
        "--no-chains",
        "--json",
        "--min-error",
        "0",
    ]
    assert main(argv) == 0
    assert [n for n, *_ in asked] == [12]  # no op chain timed
    table = json.loads(capsys.readouterr().out)["rescale"]
    assert "streaming_overhead_factor" not in table
    assert "op chains" not in table["networks"]
    assert table["overhead_factor"] == pytest.approx(0.8, rel=0.01)
    assert _latency(load_fresh(out), layers[8]) == pytest.approx(
        _latency(scale_profile(hw, 0.8, 1.3), layers[8]), rel=0.01
    )


def test_the_chains_tell_streaming_kernels_apart(
    tmp_path: Path,
    hw: HardwareProfile,
    layers: dict[int, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    planted = {"streaming_overhead_factor": 1.6, "streaming_throughput_factor": 1.2}
    monkeypatch.setattr(_rescale, "measure_probes", _fake_measure(hw, 1.2, 1.5, [], **planted))
    out = tmp_path / "now.toml"
    assert (
        main(["rescale", "--hw", str(CALIBRATED), "--out", str(out), "--json", "--min-error", "0"])
        == 0
    )
    table = json.loads(capsys.readouterr().out)["rescale"]
    assert table["streaming_overhead_factor"] == pytest.approx(1.6, rel=0.02)
    assert table["streaming_throughput_factor"] == pytest.approx(1.2, rel=0.02)
    assert "25 op chains (costmodel._chains) at batches [1, 32]" in table["networks"]
    moved = scale_profile(hw, 1.2, 1.5, **planted)
    for b in BATCHES:
        assert _latency(load_fresh(out), layers[b]) == pytest.approx(
            _latency(moved, layers[b]), rel=0.02
        ), b


def test_a_drift_within_min_error_writes_the_profile_unscaled(
    tmp_path: Path,
    hw: HardwareProfile,
    layers: dict[int, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(_rescale, "measure_probes", _fake_measure(hw, 1.1, 1.1, []))
    out = tmp_path / "now.toml"
    assert main(["rescale", "--hw", str(CALIBRATED), "--out", str(out)]) == 0
    # Off by 1 - 1 / 1.1 = 9.1%: under 25%, so nothing is scaled and the speed recorded
    # for validation stays the calibration's.
    assert "off by 9.1% (median)" in capsys.readouterr().out
    doc = _read_toml(out)
    assert doc["rescale"]["applied"] is False
    assert doc["rescale"]["overhead_factor"] == pytest.approx(1.1, rel=1e-3)  # recorded
    assert _latency(load_fresh(out), layers[1]) == pytest.approx(_latency(hw, layers[1]))
    assert calibration_reference(str(out), str(REFERENCE)) == calibration_reference(
        str(CALIBRATED), str(REFERENCE)
    )


@pytest.mark.parametrize(
    "case, message",
    [
        ("builtin", "--hw='t4' is not a file"),
        ("bad_space", "--space"),
        ("bad_out", "must end in .toml"),
        ("rounds", "--rounds=0 must be >= 1"),
        ("min_error", "--min-error=1.0 must be in [0, 1)"),
        ("raw", "--raw='x.csv' must end in .json"),
    ],
)
def test_rescale_usage_errors_exit_2_before_measuring(
    case: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(_rescale, "measure_probes", lambda *a, **k: pytest.fail("measured"))
    hw, out, extra = str(CALIBRATED), str(tmp_path / "x.toml"), []
    if case == "builtin":
        hw = "t4"
    elif case == "bad_space":
        extra = ["--space", str(tmp_path / "missing.toml")]
    elif case == "bad_out":
        out = str(tmp_path / "x.json")
    elif case == "rounds":
        extra = ["--rounds", "0"]
    elif case == "raw":
        extra = ["--raw", "x.csv"]
    else:
        extra = ["--min-error", "1"]
    assert main(["rescale", "--hw", hw, "--out", out, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err


def test_schema_rejects_an_unknown_rescale_key() -> None:
    data = {
        "name": "x",
        "source": "test",
        "device_type": "cpu",
        "memory_bytes": 1,
        "bandwidth_bytes_per_s": 1e9,
        "peak_ops_per_s": {"fp32": 1e9},
        "rescale": {"overhead_factr": 1.0},
    }
    with pytest.raises(ProfileError, match="did you mean 'overhead_factor'"):
        parse_profile(data, "test")
