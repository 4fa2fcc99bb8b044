"""Calibrate a hardware profile on the machine this runs on.

``python -m hw_profiles calibrate --device cpu|cuda --out FILE.toml`` measures
- ceilings: DRAM bandwidth (large copies), cache bandwidth (copies that fit in
  the last-level cache), peak compute per precision (large matmuls); on a CPU
  also the cost of fresh pages for outputs malloc maps anew (``measure_page_faults``);
- fixed costs per runtime: a chain of tiny ops run eagerly, as a TorchScript
  graph (CUDA graph replay on cuda) and conv + BN + ReLU folded and fused
  (``torch.jit.freeze`` + ``optimize_for_inference``);
- single kernels of every class over a seeded sweep of shapes (on a CPU each
  timed among 31 others, as in a network: ``measure_in_context``);
- whole calibration networks drawn from a search space with the calibration
  seed (default 40, batch 1, 32, 1, 32, 8 in turn), measured exactly as
  ``python -m costmodel validate`` measures (``measure_latencies``), whose time
  the model predicts as the composition of its per-layer times;
and fits the profile's parameters to both by least squares on log time through
the very latency model the cost model uses (costmodel/_latency.py), so the
fitted numbers mean what the model means: fixed cost per kernel class
(on a CPU PyTorch's native conv path is its own class, ``conv_dispatch``),
compute / memory efficiency per class, the saturation constants, the channel
alignment factor, the effective cache size and its fall-off, the fresh-page
cost and the compute / memory overlap; bandwidths and peaks stay as measured. A quarter of the
benchmarks and of the networks is held out of a first fit and their errors
recorded (``holdout_median_abs_error``, ``network_holdout_median_abs_error``);
the profile is then refitted on all of them. ``python -m costmodel validate``
draws its architectures with another seed, so it never sees these.

On the 2-core EPYC development machine, one thread, otherwise idle: about
2.5-3.5 minutes (``--quick``: under 1 minute).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import math
import platform
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hw_profiles._schema import KERNEL_CLASSES, HardwareProfile, RuntimeParams

CALIBRATION_SEED = 20260101  # validation uses different seeds (costmodel/_validate.py)
DEFAULT_SPACE = Path("experiments/spaces/cifar.toml")
NETWORK_BATCHES = (1, 32, 1, 32, 8)  # calibration networks cycle through these batches


# --------------------------------------------------------------------------- timing


def capture_cuda_graph(model: Any, x: Any) -> Callable[[], Any]:
    """``model(x)`` captured once as a CUDA graph (after a side-stream warm-up); its replay.

    Runs in the caller's autograd mode (validation wraps it in inference mode).
    """
    import torch

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


def make_clock(device: str) -> tuple[Callable[[], float], Callable[[], None]]:
    """The clock to time ``device`` work with, and the synchronisation to call around it.

    On a CPU with one torch thread all work runs on the calling thread, so we
    read that thread's CPU clock (CLOCK_THREAD_CPUTIME_ID): equal to wall time
    on an idle machine, but not inflated while other processes preempt us on a
    shared one (short loops dodge preemption, long ones do not, which would
    bias small kernels against whole networks). Otherwise: wall time, with a
    device synchronisation on cuda.
    """
    import torch

    if device == "cuda":
        return time.perf_counter, torch.cuda.synchronize
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    return clock, lambda: None


def steady_state_allocator() -> str:
    """Fix glibc malloc at the state a long-running process converges to; say what was set.

    glibc raises its mmap threshold each time a larger mmapped block is freed,
    up to 32 MiB, and its trim threshold to twice that (mallopt(3)), so how many
    fresh pages a forward pass faults on depends on what ran before in the
    process: measured back to back, the same 16 batch-32 networks got 13% faster
    from one pass over them to the third. Setting both thresholds to their
    converged values makes every measurement see the steady state, and matches
    the latency model's fresh-page term (outputs above 32 MiB). Elsewhere: nothing.
    """
    import ctypes
    import ctypes.util

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
    calls: Sequence[Callable[[], Any]], device: str, *, rounds: int, repeats: int = 1,
    min_s: float = 1e-3, max_inner: int = 2000,
) -> list[list[float]]:
    """``rounds x repeats`` timed samples (seconds per call) of each call, visited in turn.

    Warm-up, then each sample times an inner loop of at least ``min_s`` (at most
    ``max_inner`` calls; one call for anything slower). Rounds visit the calls
    in turn so that each call's samples spread over the whole run. Clock and
    synchronisation: ``make_clock``. Runs in the caller's autograd mode.
    """
    clock, sync = make_clock(device)
    inner = []
    for fn in calls:
        for _ in range(3):  # allocator, oneDNN / cuDNN primitive caches
            fn()
        sync()
        t0 = clock()
        fn()
        sync()
        inner.append(int(min(max_inner, max(1, math.ceil(min_s / max(clock() - t0, 1e-7))))))
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for i, fn in enumerate(calls):
            for _ in range(repeats):
                sync()
                t0 = clock()
                for _ in range(inner[i]):
                    fn()
                sync()
                samples[i].append((clock() - t0) / inner[i])
    return samples


def make_timer(device: str) -> Callable[..., float]:
    """Median (or best) seconds per call of ``fn`` over ``repeats`` samples (``sample_calls``)."""

    def timer(
        fn: Callable[[], Any], *, repeats: int = 7, min_s: float = 2e-3, max_inner: int = 2000,
        best: bool = False,
    ) -> float:
        samples = sample_calls([fn], device, rounds=repeats, min_s=min_s, max_inner=max_inner)[0]
        # Ceilings take the best repeat (contention only slows); timings the median.
        return min(samples) if best else statistics.median(samples)

    return timer


def measure_in_context(
    calls: Sequence[Callable[[], Any]], *, group: int = 32, passes: int = 60,
    passes_per_visit: int = 5, quantile: float = 0.1, seed: int = 0,
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
    has ``passes`` samples: like the networks' rounds (costmodel/_validate.py),
    this spreads a layer's samples over the whole run, whose speed drifts from
    second to second on a shared VM. A layer's time is the same lower quantile
    of its samples as a network's.
    """
    from costmodel._validate import lower_quantile

    rng = random.Random(seed)
    order = list(range(len(calls)))
    rng.shuffle(order)
    clock = time.thread_time
    t0 = clock()
    for _ in range(1000):
        clock()
    clock_s = (clock() - t0) / 1000
    groups = [order[start : start + group] for start in range(0, len(order), group)]
    for fn in calls:  # warm-up: allocations, algorithm choice
        fn()
        fn()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(math.ceil(passes / passes_per_visit)):
        for idx in groups:
            for _ in range(passes_per_visit):
                for i in idx:
                    a = clock()
                    calls[i]()
                    samples[i].append(clock() - a - clock_s)
    return [max(lower_quantile(s, quantile), 1e-8) for s in samples]


# --------------------------------------------------------------------------- modules


def module_for(spec: Any) -> Any:
    """The ``torch.nn`` module that runs one ``LayerSpec`` (the builder's modules)."""
    import torch.nn as nn

    from costmodel import _spec as S

    op = spec.op
    if op == S.CONV2D:
        return nn.Conv2d(
            spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
            spec.dilation, spec.groups, bias=spec.bias,
        )
    if op == S.LINEAR:
        return nn.Linear(spec.in_channels, spec.out_channels, bias=spec.bias)
    if op == S.BATCHNORM2D:
        return nn.BatchNorm2d(spec.in_shape[1], affine=spec.affine)
    simple = {
        S.RELU: nn.ReLU, S.RELU6: nn.ReLU6, S.HARDSWISH: nn.Hardswish,
        S.HARDSIGMOID: nn.Hardsigmoid, S.SIGMOID: nn.Sigmoid, S.SILU: nn.SiLU,
        S.FLATTEN: nn.Flatten, S.IDENTITY: nn.Identity,
    }
    if op in simple:
        return simple[op]()
    if op == S.MAXPOOL2D:
        return nn.MaxPool2d(spec.kernel_size, spec.stride, spec.padding, spec.dilation)
    if op == S.AVGPOOL2D:
        return nn.AvgPool2d(spec.kernel_size, spec.stride, spec.padding)
    if op == S.GLOBAL_AVGPOOL2D:
        return nn.AdaptiveAvgPool2d(1)
    if op == S.CHANNEL_SHUFFLE:
        return nn.ChannelShuffle(spec.groups)
    raise ValueError(f"op={op!r} has no benchmark module")


def layer_call(spec: Any, device: str) -> Callable[[], Any]:
    """A zero-argument callable running one layer the way a network runs it."""
    import torch

    from costmodel import _spec as S

    x = torch.randn(spec.in_shape, device=device)
    if spec.op == S.ADD:  # `x + y` in a block's forward: a functional op, no module call
        ys = [torch.randn(spec.in_shape, device=device) for _ in range(spec.num_inputs - 1)]

        def add() -> Any:
            out = x
            for y in ys:
                out = out + y
            return out

        return add
    m = module_for(spec).to(device).eval()
    return lambda: m(x)


# --------------------------------------------------------------------------- the sweep


def shape_sweep(quick: bool, seed: int = CALIBRATION_SEED) -> list[Any]:
    """Single layers of every kernel class over channels, sizes, batches (seeded)."""
    from costmodel import LayerSpec, count
    from costmodel import _spec as S

    rng = random.Random(seed)
    chans = [8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 256]
    sizes = [2, 4, 7, 8, 14, 16, 28, 32]
    batches = [1, 1, 1, 2, 4, 8, 16, 32]
    scale = 0.4 if quick else 1.0
    per_class = {
        "dense_conv": 36, "pointwise_conv": 30, "group_conv": 16, "depthwise_conv": 24,
        "linear": 8, "batchnorm": 14, "activation": 24, "elementwise": 12, "pooling": 14,
    }
    # Up to the largest layers of a CIFAR-size network at batch 32 (~10 ms on one
    # CPU thread); the quick sweep stays small.
    max_macs = 3e7 if quick else 3e8
    specs: list[Any] = []
    for cls, n in per_class.items():
        made = tries = 0
        while made < max(3, int(n * scale)) and tries < 5000:
            tries += 1
            b, c, h = rng.choice(batches), rng.choice(chans), rng.choice(sizes)
            co = rng.choice(chans)
            k = rng.choice([3, 3, 5]) if cls in ("dense_conv", "depthwise_conv") else 1
            s = rng.choice([1, 1, 1, 2])
            shape = (b, c, h, h)
            try:
                if cls == "dense_conv":
                    spec = LayerSpec(S.CONV2D, shape, co, k, s, k // 2)
                elif cls == "pointwise_conv":
                    spec = LayerSpec(S.CONV2D, shape, co, 1, 1, 0)
                elif cls == "group_conv":
                    g = rng.choice([2, 4, 8])
                    if c % g or co % g:
                        continue
                    spec = LayerSpec(S.CONV2D, shape, co, rng.choice([1, 3]), 1,
                                     0 if rng.random() < 0.5 else 1, groups=g)
                    if spec.kernel_size == (1, 1):
                        spec = dataclasses.replace(spec, padding=(0, 0))
                elif cls == "depthwise_conv":
                    spec = LayerSpec(S.CONV2D, shape, c, k, s, k // 2, groups=c)
                elif cls == "linear":
                    spec = LayerSpec(S.LINEAR, (b, c * rng.choice([1, 4, 16])), co, bias=True)
                elif cls == "batchnorm":
                    spec = LayerSpec(S.BATCHNORM2D, shape)
                elif cls == "activation":
                    spec = LayerSpec(rng.choice([S.RELU, S.RELU6, S.HARDSWISH, S.SILU,
                                                 S.SIGMOID]), shape)
                elif cls == "elementwise":
                    if rng.random() < 0.7:
                        spec = LayerSpec(S.ADD, shape, num_inputs=2)
                    else:
                        spec = LayerSpec(S.CHANNEL_SHUFFLE, shape, groups=2) if c % 2 == 0 \
                            else LayerSpec(S.ADD, shape, num_inputs=2)
                else:
                    r = rng.random()
                    if r < 0.3:
                        spec = LayerSpec(S.GLOBAL_AVGPOOL2D, shape)
                    elif h >= 2:
                        kk = rng.choice([2, 3])
                        if kk > h:
                            continue
                        op = S.MAXPOOL2D if r < 0.75 else S.AVGPOOL2D
                        spec = LayerSpec(op, shape, kernel_size=kk, stride=2,
                                         padding=kk // 2 if kk == 3 else 0)
                    else:
                        continue
                counts = count(spec)
            except ValueError:
                continue
            if counts.macs > max_macs:
                continue
            specs.append(spec)
            made += 1
    return specs


def _spec_dict(spec: Any) -> dict[str, Any]:
    d = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()
            if k not in ("name", "inputs")}


def spec_from_dict(d: dict[str, Any]) -> Any:
    from costmodel import LayerSpec

    return LayerSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# --------------------------------------------------------------------------- ceilings


@dataclass(frozen=True)
class Ceilings:
    bandwidth_bytes_per_s: float
    cache_bandwidth_bytes_per_s: float
    cache_bytes: int
    memory_bytes: int
    peak_ops_per_s: dict[str, float]
    mmap_threshold_bytes: float = 0.0
    page_fault_s_per_byte: float = 0.0


def _cpu_cache_bytes() -> int:
    """The last-level cache from sysfs (Linux); 0 when unknown."""
    best = 0
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in base.glob("index*"):
        try:
            size = (idx / "size").read_text().strip()
            kind = (idx / "type").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": 1024**2}.get(size[-1], 1)
        best = max(best, int(size.rstrip("KM")) * mult)
    return best


def _cpu_simd_lanes() -> int:
    """fp32 lanes per vector from the CPU flags (Linux): 16 AVX-512, 8 AVX/AVX2, else 4."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith(("flags", "Features"))), [])
    if "avx512f" in flags:
        return 16
    if "avx2" in flags or "avx" in flags:
        return 8
    return 4


def _memory_bytes(device: str) -> int:
    import torch

    if device == "cuda":
        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 1024**3


def measure_ceilings(device: str, quick: bool, timer: Callable[..., float]) -> Ceilings:
    import torch

    # Large copies: read + write of n floats (STREAM "copy", McCalpin 1995).
    def copy_rate(n: int, repeats: int, min_s: float) -> float:
        src = torch.empty(n, device=device).uniform_()
        dst = torch.empty_like(src)
        return 2 * n * 4 / timer(lambda: dst.copy_(src), repeats=repeats, min_s=min_s, best=True)

    n = (1 << 26) if device == "cuda" else (1 << 25 if quick else 1 << 26)  # 128/256 MiB
    bandwidth = copy_rate(n, 5, 0.0)
    if device == "cuda":
        cache = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 0)
    else:
        cache = _cpu_cache_bytes()
    cache_bw = 0.0
    if cache:
        # src + dst use a quarter of the cache: a layer's in + out + weights fit.
        cache_bw = max(copy_rate(max(1024, cache // 8 // 4), 7, 2e-3), bandwidth)
    peaks: dict[str, float] = {}
    size = 1024 if device == "cpu" else 8192
    if quick:
        size //= 2
    for prec, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if device == "cpu" and prec == "fp16":
            continue  # no fp16 GEMM path worth calibrating on common CPUs
        base_size = size if prec == "fp32" or device == "cuda" else size // 2
        # The best rate over three sizes and their repeats: a ceiling, not a typical value
        # (a kernel faster than the measured peak would need an efficiency above 1).
        for s in (base_size * 3 // 4, base_size, base_size * 3 // 2):
            if device == "cpu" and prec != "fp32" and s > base_size:
                continue  # slow emulated paths: one size is enough
            a = torch.randn(s, s, device=device, dtype=dtype)
            b = torch.randn(s, s, device=device, dtype=dtype)
            try:
                tm = timer(lambda a=a, b=b: a @ b, repeats=7, min_s=0.0, best=True)
            except RuntimeError:
                break
            peaks[prec] = max(peaks.get(prec, 0.0), 2 * s**3 / tm)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        a = torch.randn(size, size, device=device)
        peaks["tf32"] = 2 * size**3 / timer(lambda: a @ a, repeats=5, min_s=0.0, best=True)
        torch.backends.cuda.matmul.allow_tf32 = False
    threshold = per_byte = 0.0
    if device == "cpu":
        threshold, per_byte = measure_page_faults(timer)
    return Ceilings(bandwidth, cache_bw, cache, _memory_bytes(device), peaks, threshold, per_byte)


# glibc raises M_MMAP_THRESHOLD dynamically up to DEFAULT_MMAP_THRESHOLD_MAX:
# 4 MiB * sizeof(long) = 32 MiB on 64-bit (mallopt(3)); a larger block is always mmapped.
MMAP_THRESHOLD_MAX_BYTES = 32 * 2**20


def measure_page_faults(timer: Callable[..., float]) -> tuple[float, float]:
    """(threshold bytes, seconds per output byte) of fresh pages for outputs above it.

    A ReLU writing 16 MiB reuses freed heap memory; one writing 64 MiB gets a
    new mapping and faults on every page. The excess of the large call over 4x
    the small one, per output byte, is the cost of a fresh page. Best of
    repeats: both contain no contention then. 0 where the excess is not
    measurable (another allocator, huge pages).
    """
    import torch

    small = torch.rand(16 * 2**20 // 4)
    big = torch.rand(64 * 2**20 // 4)
    t_small = timer(lambda: torch.relu(small), repeats=7, min_s=0.0, best=True)
    t_big = timer(lambda: torch.relu(big), repeats=5, min_s=0.0, best=True)
    per_byte = (t_big - 4 * t_small) / (64 * 2**20)
    if per_byte <= 0.05 * t_small / (16 * 2**20):  # under 5% of the streaming cost: none
        return 0.0, 0.0
    return float(MMAP_THRESHOLD_MAX_BYTES), per_byte


# --------------------------------------------------------------------------- runtimes


def measure_runtime_overheads(device: str, timer: Callable[..., float]) -> dict[str, float]:
    """Per-op fixed cost of a tiny op under each runtime: slope of a chain of n ops.

    eager: n ReLU modules called from Python; graph: the same chain traced by
    TorchScript (cuda: replayed from a CUDA graph); fused: n conv+BN+ReLU
    blocks folded and fused by ``torch.jit.freeze`` + ``optimize_for_inference``
    (one kernel per block), minus nothing: its slope is the fused kernel's cost.
    """
    import torch
    import torch.nn as nn

    x = torch.randn(1, 8, 4, 4, device=device)

    def chain(n: int) -> nn.Module:
        return nn.Sequential(*[nn.ReLU() for _ in range(n)]).to(device).eval()

    def cbr(n: int) -> nn.Module:
        layers: list[nn.Module] = []
        for _ in range(n):
            layers += [nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()]
        return nn.Sequential(*layers).to(device).eval()

    def slope(make: Callable[[int], Callable[[], Any]], lo: int = 2, hi: int = 34) -> float:
        t_lo, t_hi = timer(make(lo)), timer(make(hi))
        return max((t_hi - t_lo) / (hi - lo), 1e-8)

    def eager(n: int) -> Callable[[], Any]:
        m = chain(n)
        return lambda: m(x)

    def scripted(make: Callable[[int], nn.Module], fuse: bool) -> Callable[[int], Any]:
        def build(n: int) -> Callable[[], Any]:
            with warnings.catch_warnings():  # TorchScript is deprecated, still the CPU graph
                warnings.simplefilter("ignore", DeprecationWarning)
                m = torch.jit.trace(make(n), x)
                m = torch.jit.freeze(m.eval())
                if fuse:
                    m = torch.jit.optimize_for_inference(m)
            for _ in range(3):
                m(x)
            return lambda: m(x)

        return build

    def cuda_graph(make: Callable[[int], nn.Module]) -> Callable[[int], Any]:
        return lambda n: capture_cuda_graph(make(n), x)

    out = {"eager": slope(eager)}
    with torch.inference_mode(False), torch.no_grad():
        if device == "cuda":
            out["graph"] = slope(cuda_graph(chain))
            out["fused"] = slope(cuda_graph(cbr))  # cuDNN: 3 kernels per block, replayed
        else:
            out["graph"] = slope(scripted(chain, fuse=False))
            out["fused"] = slope(scripted(cbr, fuse=True), 2, 18)
    return out


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class FitResult:
    profile: HardwareProfile
    fit_median_abs_error: float
    holdout_median_abs_error: float
    n_fit: int
    n_holdout: int
    network_fit_median_abs_error: float = float("nan")
    network_holdout_median_abs_error: float = float("nan")
    n_networks: int = 0


def _param_names(classes: Sequence[str]) -> list[str]:
    names = [f"host:{c}" for c in classes]
    names += [f"ce:{c}" for c in classes]
    names += [f"me:{c}" for c in classes]
    return [*names, "sat_out", "sat_red", "sat_oc", "cache", "cache_p", "fault", "overlap"]


def apply_params(
    base: HardwareProfile, names: Sequence[str], theta: Sequence[float], precision: str
) -> HardwareProfile:
    """A profile with fitted log-parameters ``theta`` (eager host costs, efficiencies, shape)."""
    vals = dict(zip(names, (math.exp(t) for t in theta), strict=True))
    hosts = {k.split(":")[1]: v for k, v in vals.items() if k.startswith("host:")}
    base_host = min(hosts.values()) if hosts else 0.0
    eager = base.runtime("eager")
    runtimes = dict(base.runtimes)
    extra = {c: h - base_host for c, h in hosts.items() if h - base_host > 0}
    runtimes["eager"] = RuntimeParams(eager.kernel_overhead_s, base_host, MappingProxyType(extra))
    ce = dict(base.compute_efficiency)
    me = dict(base.memory_efficiency)
    for k, v in vals.items():
        kind, _, cls = k.partition(":")
        if kind == "ce":
            ce[cls] = min(v, 1.0)
        elif kind == "me":
            me[cls] = min(v, 1.0)
    return dataclasses.replace(
        base,
        runtimes=MappingProxyType(runtimes),
        compute_efficiency=MappingProxyType(ce),
        memory_efficiency=MappingProxyType(me),
        saturation_output_elements=vals.get("sat_out", base.saturation_output_elements),
        saturation_reduction_elements=vals.get("sat_red", base.saturation_reduction_elements),
        saturation_output_channels=vals.get("sat_oc", base.saturation_output_channels),
        cache_bytes=int(vals["cache"]) if "cache" in vals else base.cache_bytes,
        cache_falloff_exponent=vals.get("cache_p", base.cache_falloff_exponent),
        page_fault_s_per_byte=vals.get("fault", base.page_fault_s_per_byte),
        memory_compute_overlap=min(vals.get("overlap", base.memory_compute_overlap), 1.0),
    )


def predict_single(spec: Any, hw: HardwareProfile, precision: str, runtime: str = "eager") -> float:
    """Predicted seconds per call of one layer run back to back (a micro-benchmark)."""
    from costmodel._formulas import count
    from costmodel._latency import roofline_time
    from costmodel._units import elements_to_bytes

    c = count(spec)
    mac_bytes = sum(
        elements_to_bytes(e, precision)
        for e in (c.input_elements, c.output_elements, c.weight_elements)
    )
    t = roofline_time(spec, c, mac_bytes, hw, precision, runtime)
    # Back-to-back calls pipeline host and device on an accelerator.
    return max(t.host_s, t.device_s)


def _net_predictor(
    hw: HardwareProfile, nets: Sequence[tuple[Sequence[Any], float]], precision: str
) -> Callable[[HardwareProfile], list[float]]:
    """Fast whole-network latency under a changing profile (CPU: the plain sum of layers)."""
    from costmodel import analyze, count

    if hw.device_type != "cpu":
        return lambda h: [analyze(list(sp), h, precision, "eager").total.latency_s
                          for sp, _ in nets]
    uniq: dict[Any, int] = {}
    members: list[list[int]] = []
    for specs, _ in nets:
        members.append([uniq.setdefault(sp, len(uniq)) for sp in specs if not count(sp).alias])
    layers = list(uniq)

    def predict(h: HardwareProfile) -> list[float]:
        t = [predict_single(sp, h, precision) for sp in layers]
        return [sum(t[k] for k in m) for m in members]

    return predict


def fit_profile(
    base: HardwareProfile,
    specs: Sequence[Any],
    times_s: Sequence[float],
    precision: str = "fp32",
    *,
    nets: Sequence[tuple[Sequence[Any], float]] = (),
    net_weight: float = 6.0,
    holdout_every: int = 4,
) -> FitResult:
    """Least squares on log time (robust soft-L1 loss) through the latency model.

    Fitted: eager host cost per kernel class, compute and memory efficiency per
    class, the two saturation constants and the compute / memory overlap.
    Ceilings (peak, bandwidths) stay as measured. The data: single-kernel
    benchmarks and, when given, whole calibration networks (``nets``: layer
    specs and measured seconds, residuals weighted by ``net_weight``), whose
    time the model predicts as the composition of its per-layer times. First
    fitted with every ``holdout_every``-th benchmark and network held out (their
    errors are reported), then refitted on all of them.
    """
    import numpy as np
    from scipy.optimize import least_squares

    from costmodel._kinds import latency_class

    classes = sorted({latency_class(s, base.conv_dispatch, base.threads) for s in specs},
                     key=KERNEL_CLASSES.index)
    names = _param_names(classes)
    if base.device_type != "cpu" or not base.cache_bandwidth_bytes_per_s:
        # A GPU keeps its datasheet L2 size and the step between L2 and DRAM.
        names = [n for n in names if n not in ("cache", "cache_p")]
    if base.page_fault_s_per_byte <= 0:  # not measured: no fresh-page term to refine
        names = [n for n in names if n != "fault"]
    y = np.log(np.asarray(times_s, dtype=float))
    y_net = np.log(np.asarray([t for _, t in nets], dtype=float))
    net_pred = _net_predictor(base, nets, precision)

    def x0() -> np.ndarray:
        v = []
        for n in names:
            kind = n.split(":")[0]
            v.append({"host": math.log(5e-6), "ce": math.log(0.5), "me": math.log(0.5),
                      "sat_out": math.log(1e3), "sat_red": math.log(16.0),
                      "sat_oc": math.log(4.0),
                      "cache": math.log(max(base.cache_bytes, 1 << 20) / 4),
                      "cache_p": math.log(2.0),
                      "fault": math.log(max(base.page_fault_s_per_byte, 1e-12)),
                      "overlap": math.log(0.5)}[kind])
        return np.asarray(v)

    lo = np.asarray([{"host": math.log(1e-8), "ce": math.log(1e-3), "me": math.log(1e-3),
                      "sat_out": math.log(1e-2), "sat_red": math.log(1e-2),
                      "sat_oc": math.log(1e-2),
                      "cache": math.log(1 << 16), "cache_p": math.log(0.5),
                      "fault": math.log(1e-14),
                      "overlap": math.log(1e-3)}[n.split(":")[0]] for n in names])
    hi = np.asarray([{"host": math.log(1e-2), "ce": 0.0, "me": 0.0, "sat_out": math.log(1e8),
                      "sat_red": math.log(1e5), "sat_oc": math.log(1e4),
                      "cache": math.log(1 << 28), "cache_p": math.log(8.0),
                      "fault": math.log(1e-8),
                      "overlap": 0.0}[n.split(":")[0]]
                     for n in names])

    def solve(idx: Sequence[int], net_idx: Sequence[int]) -> np.ndarray:
        sub = [specs[i] for i in idx]
        ys = y[list(idx)]
        yn = y_net[list(net_idx)]

        def resid(theta: np.ndarray) -> np.ndarray:
            hw = apply_params(base, names, theta, precision)
            r = np.log([predict_single(s, hw, precision) for s in sub]) - ys
            if len(net_idx):
                pn = np.log(net_pred(hw))[list(net_idx)]
                r = np.concatenate([r, net_weight * (pn - yn)])
            return r

        r = least_squares(resid, x0(), bounds=(lo, hi), loss="soft_l1", f_scale=0.1,
                          diff_step=1e-3, max_nfev=400)
        return r.x

    def mape(theta: np.ndarray, idx: Sequence[int]) -> float:
        hw = apply_params(base, names, theta, precision)
        errs = [abs(predict_single(specs[i], hw, precision) / times_s[i] - 1) for i in idx]
        return float(statistics.median(errs)) if errs else float("nan")

    def net_mape(theta: np.ndarray, idx: Sequence[int]) -> float:
        if not idx:
            return float("nan")
        pred = net_pred(apply_params(base, names, theta, precision))
        return float(statistics.median(abs(pred[i] / nets[i][1] - 1) for i in idx))

    def split(n: int) -> tuple[list[int], list[int]]:
        held = [i for i in range(n) if i % holdout_every == holdout_every - 1]
        return [i for i in range(n) if i not in set(held)], held

    train, held = split(len(specs))
    net_train, net_held = split(len(nets))
    theta_train = solve(train, net_train)
    holdout, net_holdout = mape(theta_train, held), net_mape(theta_train, net_held)
    all_idx, all_nets = list(range(len(specs))), list(range(len(nets)))
    theta = solve(all_idx, all_nets)
    return FitResult(
        profile=apply_params(base, names, theta, precision),
        fit_median_abs_error=mape(theta, all_idx),
        holdout_median_abs_error=holdout,
        n_fit=len(all_idx),
        n_holdout=len(held),
        network_fit_median_abs_error=net_mape(theta, all_nets),
        network_holdout_median_abs_error=net_holdout,
        n_networks=len(nets),
    )


def measure_networks(
    space: str, n: int, batches: Sequence[int], device: str, seed: int = CALIBRATION_SEED
) -> tuple[list[tuple[tuple[Any, ...], float]], dict[int, float]]:
    """Random architectures of a search space (calibration seed), lowered and timed.

    Also returns the reference network's time per batch (``costmodel._validate.
    REFERENCE_ARCH``, timed in the same rounds): the machine's speed while
    calibrating, which validation compares with its own.
    """
    from costmodel._validate import (
        measure_latencies,
        reference_architecture,
        sample_architectures,
    )

    archs = sample_architectures(space, n, seed)
    out: list[tuple[tuple[Any, ...], float]] = []
    reference: dict[int, float] = {}
    for b in sorted(set(batches)):
        group = [a for i, a in enumerate(archs) if batches[i % len(batches)] == b]
        # Exactly as validation measures (same protocol and statistic): the fitted
        # level is then the level that validation checks.
        times = measure_latencies([*group, reference_architecture()], b, device)
        reference[b] = times.pop()
        out += [(a.lower(b), t) for a, t in zip(group, times, strict=True)]
    return out, reference


# --------------------------------------------------------------------------- TOML


def _fmt(v: Any) -> str:
    if isinstance(v, dict):  # an inline table
        return "{ " + ", ".join(f"{k} = {_fmt(x)}" for k, x in v.items()) + " }"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:  # sizes in bytes: exact
            return f"{int(v)}.0"
        return f"{v:.6g}" if "e" in f"{v:.6g}" or "." in f"{v:.6g}" else f"{v:.6g}.0"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def profile_to_toml(hw: HardwareProfile, calibration: dict[str, Any], header: str = "") -> str:
    """The profile as TOML in the schema that ``hw_profiles.load`` reads."""
    from hw_profiles._schema import SHAPE_KEYS

    lines = [f"# {line}" for line in header.splitlines()]
    for k in ("name", "display_name", "device_type", "source", "notes"):
        lines.append(f"{k} = {_fmt(getattr(hw, k))}")
    lines.append(f"memory_bytes = {hw.memory_bytes}")
    lines.append(f"bandwidth_bytes_per_s = {_fmt(float(hw.bandwidth_bytes_per_s))}")
    lines.append(f"cache_bytes = {hw.cache_bytes}")
    lines.append(f"conv_dispatch = {_fmt(hw.conv_dispatch)}")
    lines.append(f"threads = {hw.threads}")
    for k in SHAPE_KEYS:
        lines.append(f"{k} = {_fmt(float(getattr(hw, k)))}")
    lines += ["", "[peak_ops_per_s]"]
    lines += [f"{p} = {_fmt(float(v))}" for p, v in hw.peak_ops_per_s.items()]
    for rt, params in hw.runtimes.items():
        lines += ["", f"[runtime.{rt}]"]
        lines.append(f"kernel_overhead_s = {_fmt(float(params.kernel_overhead_s))}")
        lines.append(f"host_overhead_s = {_fmt(float(params.host_overhead_s))}")
        if params.class_host_overhead_s:
            lines.append(f"[runtime.{rt}.class_host_overhead_s]")
            lines += [f"{c} = {_fmt(float(v))}" for c, v in params.class_host_overhead_s.items()]
    for table, values in (("compute_efficiency", hw.compute_efficiency),
                          ("memory_efficiency", hw.memory_efficiency)):
        if values:
            lines += ["", f"[{table}]"]
            lines += [f"{c} = {_fmt(float(v))}" for c, v in values.items()]
    lines += ["", "[calibration]"]
    lines += [f"{k} = {_fmt(v)}" for k, v in calibration.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _r4(x: float) -> float:
    return round(x, 4) if math.isfinite(x) else -1.0


def _net_pred(hw: HardwareProfile, specs: Sequence[Any]) -> float:
    from costmodel import analyze

    return analyze(list(specs), hw, "fp32", "eager").total.latency_s


def load_fresh(path: Path) -> HardwareProfile:
    """Load a profile file bypassing ``load``'s per-path cache (it was just rewritten)."""
    from hw_profiles._schema import parse_profile, tomllib

    with path.open("rb") as f:
        return parse_profile(tomllib.load(f), str(path))


def calibrate(
    device: str = "cpu",
    *,
    threads: int = 1,
    quick: bool = False,
    name: str | None = None,
    log: Callable[[str], None] = print,
    raw_out: Path | None = None,
    space: str | None = None,
    networks: int = 40,
) -> tuple[HardwareProfile, dict[str, Any]]:
    """Measure this machine and fit a profile; returns it and its [calibration] table."""
    import torch

    from hw_profiles._schema import parse_profile

    t_start = time.perf_counter()
    allocator = steady_state_allocator() if device == "cpu" else "caching (torch.cuda)"
    print_ = log

    def log(msg: str) -> None:  # the caller's log, with the elapsed time
        print_(f"[{time.perf_counter() - t_start:5.1f} s] {msg}")

    torch.manual_seed(CALIBRATION_SEED)
    torch.set_num_threads(threads)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    timer = make_timer(device)
    host = platform.node() or "unknown-host"
    if device == "cuda":
        dev_name = torch.cuda.get_device_name(0)
        device_type = "gpu"
    else:
        dev_name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    dev_name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        device_type = "cpu"

    with torch.inference_mode():
        ceil = measure_ceilings(device, quick, timer)
    log(f"bandwidth {ceil.bandwidth_bytes_per_s / 1e9:.1f} GB/s, cache "
        f"{ceil.cache_bandwidth_bytes_per_s / 1e9:.1f} GB/s ({ceil.cache_bytes} B), peaks "
        + ", ".join(f"{p} {v / 1e9:.1f} GOPS" for p, v in ceil.peak_ops_per_s.items())
        + f"; fresh pages above {ceil.mmap_threshold_bytes / 2**20:.0f} MiB: "
        f"{ceil.page_fault_s_per_byte * 1e9:.2f} ns/B")
    overheads = measure_runtime_overheads(device, timer)
    log("per-op fixed cost: " + ", ".join(f"{k} {v * 1e6:.2f} us" for k, v in overheads.items()))

    specs = shape_sweep(quick)
    times: list[float] = []
    with torch.inference_mode():
        if device == "cpu":
            calls = [layer_call(spec, device) for spec in specs]
            times = measure_in_context(calls, passes=20 if quick else 60, seed=CALIBRATION_SEED)
        else:  # per-call timing would need a sync per kernel: loop each kernel instead
            for spec in specs:
                times.append(timer(layer_call(spec, device), repeats=5 if quick else 7))
    log(f"measured {len(specs)} single-kernel benchmarks")

    # A ceiling is at least the best rate any kernel reached (the matmul may have
    # run during a burst of load on a shared machine).
    from costmodel import count as _count

    best_rate = max(
        (2 * _count(sp).macs / t for sp, t in zip(specs, times, strict=True)
         if _count(sp).macs),
        default=0.0,
    )
    if best_rate > ceil.peak_ops_per_s.get("fp32", 0.0):
        log(f"peak fp32 raised to the best single-kernel rate, {best_rate / 1e9:.1f} GFLOPS")
        ceil.peak_ops_per_s["fp32"] = best_rate
    if device == "cuda":
        runtimes = {
            # Eager: host dispatch overlaps a short device kernel; graph replay: device only.
            "eager": {
                "kernel_overhead_s": overheads["graph"],
                "host_overhead_s": overheads["eager"],
            },
            "graph": {"kernel_overhead_s": overheads["graph"]},
            "fused": {"kernel_overhead_s": overheads["fused"] / 3},
        }
    else:
        runtimes = {
            "eager": {"kernel_overhead_s": 0.0, "host_overhead_s": overheads["eager"]},
            "graph": {"kernel_overhead_s": 0.0, "host_overhead_s": overheads["graph"]},
            "fused": {"kernel_overhead_s": 0.0, "host_overhead_s": overheads["graph"]},
        }
    doc = {
        "name": name or f"calibrated-{device}",
        "display_name": dev_name,
        "device_type": device_type,
        "source": f"calibrated on {host} with torch {torch.__version__}, "
        f"{_dt.date.today().isoformat()}",
        "notes": f"{dev_name}; {threads} torch thread(s); fp32 efficiencies fitted, "
        "other precisions use the fp32 tables with their own measured peak.",
        "memory_bytes": ceil.memory_bytes,
        "bandwidth_bytes_per_s": ceil.bandwidth_bytes_per_s,
        "cache_bytes": ceil.cache_bytes,
        "cache_bandwidth_bytes_per_s": ceil.cache_bandwidth_bytes_per_s,
        "mmap_threshold_bytes": ceil.mmap_threshold_bytes,
        "page_fault_s_per_byte": ceil.page_fault_s_per_byte,
        "peak_ops_per_s": ceil.peak_ops_per_s,
        "runtime": runtimes,
        # PyTorch's own CPU algorithm choice; a GPU profile keeps one class per conv kind.
        "conv_dispatch": "pytorch_cpu" if device == "cpu" else "none",
        "simd_lanes": float(_cpu_simd_lanes()) if device == "cpu" else 0.0,
        "threads": threads,
    }
    base = parse_profile(doc, "<calibration>")
    nets: list[tuple[tuple[Any, ...], float]] = []
    reference: dict[int, float] = {}
    if space and networks > 0:
        with torch.inference_mode():
            nets, reference = measure_networks(space, networks, NETWORK_BATCHES, device)
        log(f"measured {len(nets)} calibration networks from {space} "
            f"(seed {CALIBRATION_SEED}, batches {list(NETWORK_BATCHES)})")
    if raw_out is not None:
        import json

        raw_out.write_text(json.dumps({
            "ceilings": dataclasses.asdict(ceil),
            "overheads_s": overheads,
            "benchmarks": [
                {"spec": _spec_dict(sp), "time_s": t} for sp, t in zip(specs, times, strict=True)
            ],
            "networks": [
                {"layers": [_spec_dict(sp) for sp in net], "time_s": t} for net, t in nets
            ],
        }, indent=0))
    fit = fit_profile(base, specs, times, nets=nets)
    hw = fit.profile
    # graph / fused replace the eager dispatch cost, not the per-class algorithm set-up.
    extra = hw.runtime("eager").class_host_overhead_s
    rts = dict(hw.runtimes)
    for rt in ("graph", "fused"):
        p = rts[rt]
        rts[rt] = RuntimeParams(p.kernel_overhead_s, p.host_overhead_s, extra)
    hw = dataclasses.replace(hw, runtimes=MappingProxyType(rts))
    duration = time.perf_counter() - t_start
    log(f"fit: median abs error {fit.fit_median_abs_error:.1%} on {fit.n_fit} benchmarks, "
        f"{fit.network_fit_median_abs_error:.1%} on {fit.n_networks} networks; held out: "
        f"{fit.holdout_median_abs_error:.1%} on {fit.n_holdout} benchmarks, "
        f"{fit.network_holdout_median_abs_error:.1%} on networks; {duration:.0f} s")
    calib = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device,
        "host": host,
        "torch_version": torch.__version__,
        "threads": threads,
        "method": "micro-benchmarks (copies, matmuls, tiny-op chains: "
        + ", ".join(f"{k} {v * 1e6:.2f} us/op" for k, v in overheads.items())
        + (" (fused: per conv+BN+ReLU block, TorchScript freeze + optimize_for_inference; "
           "not used, the CPU fused runtime keeps the graph dispatch cost)"
           if device == "cpu" else "")
        + f"; {fit.n_fit} single kernels, seed {CALIBRATION_SEED}); "
        "least squares on log time (soft-L1) through costmodel._latency"
        + ("; quick" if quick else ""),
        "benchmarks": fit.n_fit,
        "fit_median_abs_error": round(fit.fit_median_abs_error, 4),
        "holdout_median_abs_error": round(fit.holdout_median_abs_error, 4),
        "networks": f"{len(nets)} from {space} (seed {CALIBRATION_SEED}, batches "
        f"{list(NETWORK_BATCHES)})" if nets else "none",
        "network_fit_median_abs_error": _r4(fit.network_fit_median_abs_error),
        "network_holdout_median_abs_error": _r4(fit.network_holdout_median_abs_error),
        "duration_s": round(duration, 1),
        "allocator": allocator,
    }
    if reference:
        from costmodel._validate import REFERENCE_ARCH

        calib["reference_arch"] = REFERENCE_ARCH
        calib["reference_s"] = {f"b{b}": t for b, t in sorted(reference.items())}
    return hw, calib


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hw_profiles calibrate",
        description="Measure this machine (bandwidth, peak per precision, per-op cost per "
        "runtime, per-kernel-class efficiency over a sweep of shapes), fit the latency "
        "model's parameters and write a hardware profile TOML.",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="what to calibrate (default: cpu)")
    p.add_argument("--out", required=True, help="TOML file to write")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads while measuring, recorded in the profile (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="a smaller sweep (about 30 s on a CPU); for smoke tests")
    p.add_argument("--name", default=None, help="profile name (default calibrated-<device>)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--space", default=None,
                   help="search space TOML for the calibration networks (seed "
                   f"{CALIBRATION_SEED}); default experiments/spaces/cifar.toml when it exists")
    p.add_argument("--networks", type=int, default=None,
                   help="calibration networks (default 40, --quick 4; 0: none)")
    p.add_argument("--raw", default=None,
                   help="also write the raw measurements (specs and times) to this JSON file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads < 1:
        print(f"calibrate: --threads={args.threads} must be >= 1", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.suffix != ".toml":
        print(f"calibrate: --out={args.out!r} must end in .toml", file=sys.stderr)
        return 2
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    space = args.space
    if space is None and DEFAULT_SPACE.exists():
        space = str(DEFAULT_SPACE)
    if space is not None and not Path(space).exists():
        print(f"calibrate: --space={space!r} does not exist", file=sys.stderr)
        return 2
    networks = args.networks if args.networks is not None else (4 if args.quick else 40)
    if networks < 0:
        print(f"calibrate: --networks={networks} must be >= 0", file=sys.stderr)
        return 2
    try:
        hw, calib = calibrate(args.device, threads=args.threads, quick=args.quick,
                              name=args.name, log=log,
                              raw_out=Path(args.raw) if args.raw else None,
                              space=space, networks=networks)
    except RuntimeError as e:
        print(f"calibrate: {e}", file=sys.stderr)
        return 1
    header = ("Written by `python -m hw_profiles calibrate` (hw_profiles/_calibrate.py).\n"
              "Measured ceilings; efficiencies, overheads and saturation constants fitted.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(profile_to_toml(hw, calib, header))
    loaded = load_fresh(out)  # the file must load with the schema it was written for
    if args.json:
        import json

        print(json.dumps({"out": str(out), "profile": loaded.to_dict(), "calibration": calib}))
    else:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
