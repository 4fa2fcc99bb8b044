"""Rescaling a calibrated profile to the machine's speed now (costmodel/_rescale.py and
``python -m hw_profiles rescale``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import searchspace
from costmodel import _rescale
from costmodel._report import analyze
from costmodel._rescale import fit_speed_change, measure_reference, scale_profile
from costmodel._validate import calibration_reference
from hw_profiles import HardwareProfile, ProfileError, calibration_table, load_fresh, parse_profile
from hw_profiles._cli import main

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


def _planted_now(hw: HardwareProfile, layers: Mapping[int, Sequence[Any]],
                 then: Mapping[int, float], a: float, c: float) -> dict[int, float]:
    """The reference times a machine with fixed costs x a and throughput x c would give."""
    moved = scale_profile(hw, a, c)
    return {b: then[b] * _latency(moved, layers[b]) / _latency(hw, layers[b]) for b in then}


def test_scaling_multiplies_every_fixed_cost_and_every_seconds_per_op_and_byte(
    hw: HardwareProfile, layers: dict[int, list[Any]]
) -> None:
    moved = scale_profile(hw, 0.5, 3.0)
    assert moved.runtime("eager").host_s("dense_conv") == pytest.approx(
        0.5 * hw.runtime("eager").host_s("dense_conv"))
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


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_scaling_refuses_a_factor_that_is_not_a_positive_number(hw: HardwareProfile,
                                                               bad: float) -> None:
    with pytest.raises(ValueError, match="throughput_factor="):
        scale_profile(hw, 1.0, bad)


@pytest.mark.parametrize("a, c", [(0.6, 1.1), (1.5, 0.8), (1.0, 1.0)])
def test_fit_recovers_planted_factors_from_three_batches(
    hw: HardwareProfile, layers: dict[int, list[Any]], a: float, c: float
) -> None:
    then = {1: 7e-3, 8: 26e-3, 32: 110e-3}
    change = fit_speed_change(hw, layers, then, _planted_now(hw, layers, then, a, c))
    # The weak prior that ties the two factors costs a percent or two at most.
    assert change.overhead_factor == pytest.approx(a, rel=0.02)
    assert change.throughput_factor == pytest.approx(c, rel=0.02)
    for b in BATCHES:
        assert change.fitted_ratio[b] == pytest.approx(change.measured_ratio(b), rel=0.02)


def test_one_batch_gives_one_factor_for_everything(hw: HardwareProfile,
                                                   layers: dict[int, list[Any]]) -> None:
    change = fit_speed_change(hw, layers, {1: 8e-3}, {1: 6e-3, 32: 1.0})
    assert set(change.reference_now_s) == {1}  # batch 32 has no calibrated time to compare
    assert change.overhead_factor == pytest.approx(0.75, rel=1e-4)
    assert change.throughput_factor == pytest.approx(0.75, rel=1e-4)


def test_fit_names_what_is_missing_or_wrong(hw: HardwareProfile,
                                            layers: dict[int, list[Any]]) -> None:
    with pytest.raises(ValueError, match=r"no batch has both.*\[1\].*\[32\]"):
        fit_speed_change(hw, layers, {1: 8e-3}, {32: 0.1})
    with pytest.raises(ValueError, match=r"now_s=\{1: 0.0\}"):
        fit_speed_change(hw, layers, {1: 8e-3}, {1: 0.0})


def test_the_reference_is_timed_at_every_batch_asked() -> None:
    times = measure_reference(REFERENCE, [2, 1], "cpu", rounds=2)
    assert sorted(times) == [1, 2]
    assert all(0 < t < 10 for t in times.values())


def test_rescale_writes_a_profile_at_the_speed_it_measured(
    tmp_path: Path, hw: HardwareProfile, layers: dict[int, list[Any]],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    then = calibration_reference(str(CALIBRATED), str(REFERENCE))
    assert sorted(then) == list(BATCHES)
    planted = _planted_now(hw, layers, then, 0.5, 1.2)
    asked: list[Any] = []

    def fake_measure(reference: Any, batches: Sequence[int], device: str,
                     **kw: Any) -> dict[int, float]:
        asked.append((str(reference), list(batches), device, kw["threads"], len(kw["fillers"])))
        return dict(planted)

    monkeypatch.setattr(_rescale, "measure_reference", fake_measure)
    base = tmp_path / "calibrated.toml"
    shutil.copy(CALIBRATED, base)
    out = tmp_path / "sub" / "now.toml"
    assert main(["rescale", "--hw", str(base), "--out", str(out), "--json"]) == 0
    assert asked == [(str(REFERENCE), list(BATCHES), "cpu", hw.threads, 3)]
    doc = json.loads(capsys.readouterr().out)
    assert doc["rescale"]["overhead_factor"] == pytest.approx(0.5, rel=0.02)
    assert doc["rescale"]["throughput_factor"] == pytest.approx(1.2, rel=0.02)
    # Validation compares a session's speed with the speed the profile now describes.
    assert calibration_reference(str(out), str(REFERENCE)) == pytest.approx(planted, rel=1e-5)
    assert calibration_table(out)["date"] == calibration_table(base)["date"]
    rescaled = load_fresh(out)
    for b in BATCHES:
        moved = _latency(rescaled, layers[b]) / _latency(hw, layers[b])
        assert moved == pytest.approx(planted[b] / then[b], rel=0.02), b


def test_rescale_prints_what_moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    then = calibration_reference(str(CALIBRATED), str(REFERENCE))
    monkeypatch.setattr(_rescale, "measure_reference",
                        lambda *a, **k: {b: 1.1 * t for b, t in then.items()})
    out = tmp_path / "now.toml"
    assert main(["rescale", "--hw", str(CALIBRATED), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "batch   1: reference" in text and "(x1.100;" in text
    assert "fixed costs x1.100, seconds per op and byte x1.100" in text
    assert f"wrote {out}" in text


def _without_reference(tmp_path: Path) -> Path:
    text = CALIBRATED.read_text()
    kept = [line for line in text.splitlines() if not line.startswith("reference_")]
    path = tmp_path / "old.toml"
    path.write_text("\n".join(kept) + "\n")
    return path


@pytest.mark.parametrize(
    "case, message",
    [("builtin", "--hw='t4' is not a file"),
     ("no_reference", "records no times of the reference network"),
     ("bad_out", "must end in .toml"),
     ("rounds", "--rounds=0 must be >= 1")],
)
def test_rescale_usage_errors_exit_2_before_measuring(
    case: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(_rescale, "measure_reference", lambda *a, **k: pytest.fail("measured"))
    hw, out, extra = str(CALIBRATED), str(tmp_path / "x.toml"), []
    if case == "builtin":
        hw = "t4"
    elif case == "no_reference":
        hw = str(_without_reference(tmp_path))
    elif case == "bad_out":
        out = str(tmp_path / "x.json")
    else:
        extra = ["--rounds", "0"]
    assert main(["rescale", "--hw", hw, "--out", out, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    if case == "no_reference":
        assert f"--hw={hw!r}" in err


def test_schema_rejects_an_unknown_rescale_key() -> None:
    data = {"name": "x", "source": "test", "device_type": "cpu", "memory_bytes": 1,
            "bandwidth_bytes_per_s": 1e9, "peak_ops_per_s": {"fp32": 1e9},
            "rescale": {"overhead_factr": 1.0}}
    with pytest.raises(ProfileError, match="did you mean 'overhead_factor'"):
        parse_profile(data, "test")
