"""experiments/help_fit.py's rule for the depthwise efficiencies of GPUs HELP timed no
once-for-all subnets on, and what it means for the built-in T4 profile."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType, ModuleType

import pytest

import hw_profiles
from costmodel import LayerSpec, analyze
from hw_profiles import HardwareProfile
from tests._scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def help_fit() -> ModuleType:
    return load_script("help_fit")


def with_depthwise(name: str, compute: float, memory: float) -> HardwareProfile:
    hw = hw_profiles.load(name)
    return dataclasses.replace(
        hw,
        compute_efficiency=MappingProxyType({**hw.compute_efficiency, "depthwise_conv": compute}),
        memory_efficiency=MappingProxyType({**hw.memory_efficiency, "depthwise_conv": memory}),
    )


FITTED = {
    "titan-xp": with_depthwise("titan-xp", 0.01, 0.09),  # Pascal
    "v100": with_depthwise("v100", 0.06, 0.12),  # Volta
    "rtx2080ti": with_depthwise("rtx2080ti", 0.04, 0.13),  # Turing
    "titan-rtx": with_depthwise("titan-rtx", 0.05, 0.11),  # Turing
}


def test_a_gpu_takes_its_generations_median(help_fit: ModuleType) -> None:
    # T4 is Turing: the median of (0.04, 0.13) and (0.05, 0.11).
    assert help_fit.transferred_depthwise("t4", FITTED) == pytest.approx((0.045, 0.12))


def test_a_later_generation_takes_the_volta_lineage_median(help_fit: ModuleType) -> None:
    # Ampere: the median over Volta (0.06, 0.12) and Turing (0.045, 0.12); Pascal's
    # (0.01, 0.09) is no part of it.
    assert help_fit.transferred_depthwise("a100", FITTED) == pytest.approx((0.0525, 0.12))
    pascal_moved = {**FITTED, "titan-xp": with_depthwise("titan-xp", 0.5, 0.5)}
    assert help_fit.transferred_depthwise("a100", pascal_moved) == pytest.approx((0.0525, 0.12))


def test_hopper_keeps_its_measured_memory_efficiency(help_fit: ModuleType) -> None:
    # The published 0.18 was measured on Hopper: only the compute side is carried over.
    assert help_fit.transferred_depthwise("h200", FITTED) == pytest.approx((0.0525, 0.18))


def test_a_generation_without_a_rule_is_refused(help_fit: ModuleType) -> None:
    only_pascal = {"titan-xp": FITTED["titan-xp"]}
    with pytest.raises(ValueError, match="no Volta-lineage GPU"):
        help_fit.transferred_depthwise("a100", only_pascal)
    with pytest.raises(ValueError, match="generation 'pascal' has no rule"):
        help_fit.transferred_depthwise("gtx1080ti", {"v100": FITTED["v100"]})


def test_t4_costs_a_7x7_depthwise_conv_more_than_a_3x3() -> None:
    """On its compute roof a k x k depthwise conv costs k^2: with equal compute and
    memory efficiencies every one was memory-bound on the T4 (ridge 27 flop/byte, a 7x7
    does 12.25), so the kernel size was free. The carried Turing values bind the 7x7 on
    compute: 12.25 flop/byte against a ridge of 0.0437 * 8.1e12 / (0.128 * 300e9) = 9.2."""
    hw = hw_profiles.load("t4")

    def device_s(k: int) -> float:
        spec = LayerSpec("conv2d", (32, 240, 28, 28), 240, k, 1, k // 2, groups=240)
        return analyze([spec], hw, "fp32", "eager").layers[0].latency_s

    assert device_s(7) / device_s(3) > 1.25
