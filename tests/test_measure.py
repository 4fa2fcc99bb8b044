"""The timing protocol behind its one seam (a fake Clock), and the registries' contracts.

Nothing here depends on how fast this machine is: the clock is fake.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from torch import nn

from costmodel import LayerSpec, _measure
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
    spec = LayerSpec("softmax", (1, 4))
    with pytest.raises(ValueError, match="op='softmax' has no benchmark"):
        layer_call(spec, "cpu")
    with pytest.raises(ValueError, match="no kernel class for op='softmax'"):
        kernel_class(spec)
    # mul (NB201's zero op x.mul(0.), x * y) is benchmarked, as an element-wise kernel.
    mul = LayerSpec("mul", (1, 4, 2, 2), num_inputs=2)
    assert kernel_class(mul) == "elementwise"
    assert tuple(layer_call(mul, "cpu")().shape) == (1, 4, 2, 2)


# -- the graph / fused runtimes and the CUDA path, on CPU through the device seam -----------


class TinyNet:
    """A ``Runnable`` whose module's forward advances the fake device's clock by 5 ms."""

    input_shape = (3, 8, 8)

    def __init__(self, dev: FakeDevice) -> None:
        self.dev = dev
        self.forwards = 0

    def build(self) -> Any:
        net = self

        class M(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                net.forwards += 1
                net.dev.t += 5e-3
                return x * 2

        return M()


def _pretend_cuda(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Module.to and torch.randn accept device="cuda" on a CPU-only torch; returns the log
    of the devices asked for."""
    asked: list[str] = []
    randn = torch.randn

    def to(self: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        asked.append(str(args[0] if args else kwargs.get("device")))
        return self

    def fake_randn(*shape: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
        asked.append(str(device))
        return randn(*shape, **kwargs)

    monkeypatch.setattr(nn.Module, "to", to)
    monkeypatch.setattr(torch, "randn", fake_randn)
    return asked


def test_cuda_graph_runtime_times_the_replay_between_synchronisations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fails if the graph runtime on cuda times the eager module instead of the captured
    replay (e.g. ``runtime == "graph" and device == "cuda"`` branch removed: samples become
    5 ms), if a timed region is not closed by a sync (a replay would then be counted after
    the sync, giving other sync counts), or if the graph is captured more than once."""
    dev = FakeDevice()
    net = TinyNet(dev)
    asked = _pretend_cuda(monkeypatch)
    captured: list[tuple[Any, Any]] = []
    replays_at_sync: list[int] = []
    replays = [0]

    def fake_capture(model: Any, x: Any) -> Any:
        captured.append((model, x))

        def replay() -> None:
            replays[0] += 1
            dev.t += 1e-3  # the replay's device time

        return replay

    def sync() -> None:
        dev.syncs += 1
        replays_at_sync.append(replays[0])

    monkeypatch.setattr(_measure, "capture_cuda_graph", fake_capture)
    samples = _measure.measure_samples(
        [net], 4, "cuda", rounds=3, min_s=1e-3, runtime="graph", clock=Clock(lambda: dev.t, sync)
    )
    assert set(asked) == {"cuda"} and len(captured) == 1
    assert captured[0][1].shape == (4, 3, 8, 8)
    assert net.forwards == 0  # the eager module never ran: only its (fake) capture
    # One replay is 1 ms >= min_s, so each sample is one replay of 1 ms.
    assert samples == [pytest.approx([1e-3] * 3)]
    # Warm-up 3 replays, then sync / probe replay / sync, then per round sync / replay / sync:
    # every timed replay lies between two syncs and the clock is read only at syncs.
    assert replays_at_sync == [3, 4, 4, 5, 5, 6, 6, 7]


def test_cuda_clock_synchronises_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default clock on cuda calls torch.cuda.synchronize around every timed region:
    fails if ``make_clock("cuda")`` returns the CPU's no-op sync."""
    syncs = [0]
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: syncs.__setitem__(0, syncs[0] + 1))
    clock = _measure.make_clock("cuda")
    assert clock.now is time.perf_counter
    sample_calls([lambda: None], "cuda", rounds=2, min_s=1e-6)
    assert syncs[0] == 2 + 2 * 2  # probe, then two samples, each between two syncs


@pytest.mark.parametrize(
    "runtime,compiler", [("graph", "freeze"), ("fused", "optimize_for_inference")]
)
def test_cpu_graph_and_fused_runtimes_time_the_compiled_module(
    runtime: str, compiler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timed call is the TorchScript module the runtime compiles (frozen trace for
    graph, optimize_for_inference on top for fused): fails if ``forward_calls`` times the
    eager module for either runtime."""
    dev = FakeDevice()
    compiled_calls = [0]
    real = getattr(torch.jit, compiler)

    def compile_and_count(module: Any, *args: Any, **kwargs: Any) -> Any:
        scripted = real(module, *args, **kwargs)

        def run(x: torch.Tensor) -> torch.Tensor:
            compiled_calls[0] += 1
            dev.t += 2e-3
            return scripted(x)

        return run

    monkeypatch.setattr(torch.jit, compiler, compile_and_count)

    class Conv:
        input_shape = (3, 8, 8)

        def build(self) -> nn.Module:
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

    samples = _measure.measure_samples(
        [Conv()], 1, "cpu", rounds=2, min_s=1e-3, runtime=runtime, clock=dev.clock()
    )
    assert samples == [pytest.approx([2e-3] * 2)]
    assert compiled_calls[0] == 3 + 1 + 2  # warm-up, probe, two samples


def test_validate_on_cuda_graph_through_the_seam(monkeypatch: pytest.MonkeyPatch) -> None:
    """``validate`` end to end for device cuda, runtime graph on a CPU: measured times are
    the fake replays' (3 ms, 1 ms, 2 ms, reference 4 ms), the CUDA allocator and clock are
    recorded. Fails if validate ignores its clock or pairs samples with the wrong network."""
    from costmodel._validate import validate
    from searchspace import NB201Net

    dev = FakeDevice()
    _pretend_cuda(monkeypatch)
    nets = [
        NB201Net.from_string(s)
        for s in (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|",
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
            "|nor_conv_1x1~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
        )
    ]
    reference = NB201Net.from_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|none~1|none~2|"
    )
    seconds = iter([3e-3, 1e-3, 2e-3, 4e-3])

    def fake_capture(model: Any, x: Any) -> Any:
        s = next(seconds)
        return lambda: setattr(dev, "t", dev.t + s)

    monkeypatch.setattr(_measure, "capture_cuda_graph", fake_capture)
    points, summary, meta = validate(
        "t4", "cuda", nets, 1, "graph", reference=reference, rounds=3, timing_clock=dev.clock()
    )
    assert [p.measured_s for p in points] == pytest.approx([3e-3, 1e-3, 2e-3])
    assert [p.measured_p90_s for p in points] == pytest.approx([3e-3, 1e-3, 2e-3])
    assert meta["reference_s"] == pytest.approx(4e-3)
    assert meta["allocator"] == "caching (torch.cuda)" and meta["clock"].startswith("wall")
    assert meta["runtime"] == "graph" and summary.n == 3
