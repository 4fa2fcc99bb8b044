"""The timing protocol behind its one seam (a fake Clock), and the registries' contracts.

Nothing here depends on how fast this machine is: the clock is fake.
"""

from __future__ import annotations

import pytest

from costmodel import LayerSpec
from costmodel._bench import layer_call, register_bench
from costmodel._kinds import kernel_class, register_class
from costmodel._measure import Clock, sample_calls


class FakeDevice:
    """A device whose work advances a fake clock; counts synchronisations."""

    def __init__(self) -> None:
        self.t = 0.0
        self.syncs = 0

    def clock(self) -> Clock:
        def sync() -> None:
            self.syncs += 1

        return Clock(lambda: self.t, sync)

    def work(self, seconds: float):  # -> a call that takes ``seconds`` on this device
        def run() -> None:
            self.t += seconds

        return run


def test_sample_calls_times_through_the_clock_it_is_given() -> None:
    dev = FakeDevice()
    slow, fast = dev.work(2e-3), dev.work(1e-4)
    samples = sample_calls([slow, fast], "cuda", rounds=3, repeats=2, min_s=1e-3,
                           clock=dev.clock())  # fmt: skip
    # slow: one call already lasts >= min_s, so each sample is one call of 2 ms;
    # fast: ceil(1 ms / 0.1 ms) = 10 calls per sample, 0.1 ms each.
    assert samples[0] == pytest.approx([2e-3] * 6)
    assert samples[1] == pytest.approx([1e-4] * 6)
    # 2 syncs around each call's probe, 2 around each of the 3 x 2 samples of each call.
    assert dev.syncs == 2 * 2 + 2 * 2 * 3 * 2


def test_a_registered_op_cannot_be_registered_again() -> None:
    with pytest.raises(ValueError, match="op='conv2d' is already registered"):
        register_bench("conv2d")(lambda spec, x: lambda: None)
    with pytest.raises(ValueError, match="op='conv2d' is already registered"):
        register_class("conv2d")(lambda spec: "dense_conv")


def test_an_op_without_a_benchmark_or_class_is_named() -> None:
    spec = LayerSpec("mul", (1, 4, 2, 2), num_inputs=2)
    with pytest.raises(ValueError, match="op='mul' has no benchmark"):
        layer_call(spec, "cpu")
    assert kernel_class(spec) == "elementwise"
    with pytest.raises(ValueError, match="no kernel class for op='softmax'"):
        kernel_class(LayerSpec("softmax", (1, 4)))
