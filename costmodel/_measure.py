"""Measuring latency on this machine: clocks, the sampling protocol, the networks' timing.

Everything that times work goes through one seam, ``Clock`` (``make_clock``):
the clock to read and the synchronisation to call around it. By default wall
time (``time.perf_counter``), what a user's stopwatch sees; on a CPU with one
torch thread ``clock="thread"`` reads the thread's CPU clock instead; on CUDA,
wall time and ``torch.cuda.synchronize``. A test can pass a fake ``Clock`` to
``sample_calls`` to exercise the protocol without the device.

Networks to time are passed in: anything ``Runnable`` (lowers itself for the
cost model and builds its ``torch.nn.Module``), e.g. a ``searchspace.Architecture``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from costmodel._estimate import Lowerable

# glibc raises M_MMAP_THRESHOLD dynamically up to DEFAULT_MMAP_THRESHOLD_MAX:
# 4 MiB * sizeof(long) = 32 MiB on 64-bit (mallopt(3)); a larger block is always mmapped.
MMAP_THRESHOLD_MAX_BYTES = 32 * 2**20
# A network's latency: this quantile of its samples (the median, what a user's repeated runs
# measure), each sample of at least DEFAULT_MIN_S seconds.
DEFAULT_QUANTILE = 0.5
# A single kernel among others: the lower decile, its clean mode without neighbours' bursts.
KERNEL_QUANTILE = 0.1
DEFAULT_MIN_S = 1e-3
# Which clock times CPU work: "wall" (time.perf_counter) or "thread" (the thread's CPU time).
CLOCKS = ("wall", "thread")
DEFAULT_CLOCK = "wall"
CLOCK_FUNCTIONS = {"wall": "time.perf_counter", "thread": "time.thread_time"}


class Runnable(Lowerable, Protocol):
    """A network to time: it lowers itself for the cost model and builds its module."""

    def build(self) -> nn.Module: ...


class Clock(NamedTuple):
    """How to time work on a device: ``sync()``, read ``now()``, run, ``sync()``, read."""

    now: Callable[[], float]
    sync: Callable[[], None]


def _no_sync() -> None:
    pass


def clock_now(clock: str) -> Callable[[], float]:
    """The function that reads ``clock`` ("wall" or "thread")."""
    if clock == "wall":
        return time.perf_counter
    if clock == "thread":
        return time.thread_time
    raise ValueError(f"clock={clock!r} is not one of {CLOCKS}")


def make_clock(device: str, clock: str = DEFAULT_CLOCK) -> Clock:
    """The clock to time ``device`` work with, and the synchronisation to call around it.

    "wall": elapsed time, as a user measures it, including whatever other
    processes take from us on a shared machine. "thread" (CPU, one torch
    thread): the calling thread's CPU clock (CLOCK_THREAD_CPUTIME_ID), equal to
    wall time on an idle machine but not inflated while other processes preempt
    us; with more threads the work runs on others too, so it falls back to wall
    time. CUDA: wall time with a device synchronisation.
    """
    now = clock_now(clock)
    if device == "cuda":
        return Clock(time.perf_counter, torch.cuda.synchronize)
    if clock == "thread" and torch.get_num_threads() != 1:
        now = time.perf_counter
    return Clock(now, _no_sync)


def capture_cuda_graph(model: Any, x: Any) -> Callable[[], Any]:
    """``model(x)`` captured once as a CUDA graph (after a side-stream warm-up); its replay.

    Runs in the caller's autograd mode (validation wraps it in inference mode).
    """
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        model(x)
    return g.replay


def steady_state_allocator() -> str:
    """Fix glibc malloc at the state a long-running process converges to; say what was set.

    glibc raises its mmap threshold each time a larger mmapped block is freed,
    up to 32 MiB, and its trim threshold to twice that (mallopt(3)), so how many
    fresh pages a forward pass faults on depends on what ran before in the
    process: measured back to back, the same 16 batch-32 networks got 13% faster
    from one pass over them to the third. Setting both thresholds to their
    converged values makes every measurement see the steady state, which the
    latency model's fresh-page term simulates (costmodel._allocator). Elsewhere: nothing.
    """
    if sys.platform != "linux":
        return "default"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD_MAX_BYTES) == 1
        ok = ok and libc.mallopt(m_trim_threshold, 2 * MMAP_THRESHOLD_MAX_BYTES) == 1
    except (OSError, AttributeError):
        return "default"
    return "glibc mmap threshold 32 MiB, trim threshold 64 MiB" if ok else "default"


def sample_calls(
    calls: Sequence[Callable[[], Any]],
    device: str,
    *,
    rounds: int,
    repeats: int = 1,
    min_s: float = 1e-3,
    max_inner: int = 2000,
    clock: Clock | str | None = None,
) -> list[list[float]]:
    """``rounds x repeats`` timed samples (seconds per call) of each call, visited in turn.

    Warm-up, then each sample times an inner loop of at least ``min_s`` (at most
    ``max_inner`` calls; one call for anything slower). Rounds visit the calls
    in turn so that each call's samples spread over the whole run. Clock and
    synchronisation: ``clock``, by default ``make_clock(device)``. Runs in the
    caller's autograd mode.
    """
    if not isinstance(clock, Clock):
        clock = make_clock(device, clock or DEFAULT_CLOCK)
    now, sync = clock
    inner = []
    for fn in calls:
        for _ in range(3):  # allocator, oneDNN / cuDNN primitive caches
            fn()
        sync()
        t0 = now()
        fn()
        sync()
        inner.append(int(min(max_inner, max(1, math.ceil(min_s / max(now() - t0, 1e-7))))))
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for i, fn in enumerate(calls):
            for _ in range(repeats):
                sync()
                t0 = now()
                for _ in range(inner[i]):
                    fn()
                sync()
                samples[i].append((now() - t0) / inner[i])
    return samples


def make_timer(device: str, clock: Clock | str | None = None) -> Callable[..., float]:
    """Median (or best) seconds per call of ``fn`` over ``repeats`` samples (``sample_calls``)."""

    def timer(
        fn: Callable[[], Any],
        *,
        repeats: int = 7,
        min_s: float = 2e-3,
        max_inner: int = 2000,
        best: bool = False,
    ) -> float:
        samples = sample_calls(
            [fn], device, rounds=repeats, min_s=min_s, max_inner=max_inner, clock=clock
        )[0]
        # Ceilings take the best repeat (contention only slows); timings the median.
        return min(samples) if best else statistics.median(samples)

    return timer


def lower_quantile(samples: Sequence[float], q: float) -> float:
    """The ``q``-quantile of ``samples`` (linear interpolation, as ``numpy.quantile``)."""
    if not samples:
        raise ValueError("samples is empty")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile={q} must be in [0, 1]")
    xs = sorted(samples)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def context_groups(n: int, group: int, seed: int) -> list[list[int]]:
    """Indices ``0..n-1`` shuffled with ``seed`` and cut into groups of ``group``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[start : start + group] for start in range(0, n, group)]


def clock_cost_s(now: Callable[[], float], reads: int = 1000) -> float:
    """Seconds one call of ``now`` costs, to take off a sample it bracketed."""
    t0 = now()
    for _ in range(reads):
        now()
    return (now() - t0) / reads


def measure_in_context(
    calls: Sequence[Callable[[], Any]],
    *,
    group: int = 32,
    passes: int = 60,
    passes_per_visit: int = 5,
    quantile: float = KERNEL_QUANTILE,
    seed: int = 0,
    now: Callable[[], float] = time.thread_time,
) -> list[float]:
    """Seconds per call of each layer run among ``group - 1`` others (CPU).

    A network runs each kernel once between dozens of different ones, so its
    code, weights and inputs are colder than in a loop over one op: on the
    2-core development machine the sum of looped single-layer times was 0.55x
    the network's forward time, the sum over groups of 6 layers 0.6x, and over
    a group of all its ~40 layers 1.1x. So the layers run in shuffled groups
    of ``group``, each call timed alone with the thread's CPU clock (see
    ``make_clock``; one torch thread), minus the clock's own cost. The groups
    are visited in turn, ``passes_per_visit`` passes a visit, until every layer
    has ``passes`` samples: like the networks' rounds (``measure_samples``),
    this spreads a layer's samples over the whole run, whose speed drifts from
    second to second on a shared VM. A layer's time is the same lower quantile
    of its samples as a network's.
    """
    groups = context_groups(len(calls), group, seed)
    clock_s = clock_cost_s(now)
    for fn in calls:  # warm-up: allocations, algorithm choice
        fn()
        fn()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(math.ceil(passes / passes_per_visit)):
        for idx in groups:
            for _ in range(passes_per_visit):
                for i in idx:
                    a = now()
                    calls[i]()
                    samples[i].append(now() - a - clock_s)
    return [max(lower_quantile(s, quantile), 1e-8) for s in samples]


def default_rounds(batch: int) -> int:
    """Rounds (one sample per network each): many for short (small-batch) networks."""
    return 100 if batch <= 8 else 20


def forward_calls(
    networks: Sequence[Runnable], batch: int, device: str, runtime: str = "eager"
) -> list[Callable[[], Any]]:
    """One zero-argument forward pass per network on random input, as ``runtime`` runs it."""
    calls: list[Callable[[], Any]] = []
    for net in networks:
        model = net.build().to(device).eval()
        x = torch.randn(batch, *net.input_shape, device=device)
        if runtime != "eager":
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: still works
        if runtime == "graph" and device == "cuda":
            with torch.inference_mode():
                calls.append(capture_cuda_graph(model, x))
            continue
        if runtime == "graph":
            with torch.no_grad():
                model = torch.jit.freeze(torch.jit.trace(model, x))
        elif runtime == "fused":
            with torch.no_grad():
                traced = torch.jit.freeze(torch.jit.trace(model, x))
                model = torch.jit.optimize_for_inference(traced)
        calls.append(lambda m=model, x=x: m(x))
    return calls


def measure_samples(
    networks: Sequence[Runnable],
    batch: int,
    device: str,
    *,
    rounds: int | None = None,
    repeats: int = 1,
    min_s: float = DEFAULT_MIN_S,
    runtime: str = "eager",
    clock: Clock | str | None = None,
) -> list[list[float]]:
    """Timed samples (seconds per forward pass) of each network, ``rounds x repeats``.

    Warm-up, then ``rounds`` rounds (default ``default_rounds(batch)``) that
    visit the networks in turn, each taking ``repeats`` samples of one
    forward pass (an inner loop of >= ``min_s`` for faster ones), timed with
    ``clock`` (a ``Clock``, or the name of one: ``make_clock``). One sample per
    visit spreads every network's samples over the whole run: a shared machine's speed
    drifts from one second to the next, so samples taken back to back share one state.
    """
    if rounds is None:
        rounds = default_rounds(batch)
    with torch.inference_mode():
        calls = forward_calls(networks, batch, device, runtime)
        return sample_calls(calls, device, rounds=rounds, repeats=repeats, min_s=min_s, clock=clock)


def measure_latencies(
    networks: Sequence[Runnable],
    batch: int,
    device: str,
    *,
    rounds: int | None = None,
    repeats: int = 1,
    min_s: float = DEFAULT_MIN_S,
    quantile: float = DEFAULT_QUANTILE,
    runtime: str = "eager",
    clock: Clock | str | None = None,
) -> list[float]:
    """Seconds per forward pass of each network: the median of its samples (``quantile``).

    Samples are spread over interleaved rounds, so every network sees the machine in all its
    states; the median is what a user timing repeated runs reports, and calibration
    (costmodel/_calibrate.py) fits the same statistic that validation reports, so the fitted
    level is the level validated. On the shared development VM the spread protocol repeats
    between two runs to Spearman 0.995 with a 1.9% median difference per network
    (experiments/results/validation_cpu_protocol.md).
    """
    samples = measure_samples(
        networks,
        batch,
        device,
        rounds=rounds,
        repeats=repeats,
        min_s=min_s,
        runtime=runtime,
        clock=clock,
    )
    return [lower_quantile(s, quantile) for s in samples]
