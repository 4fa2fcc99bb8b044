"""What this machine can do at best, and what each op costs at least.

Ceilings: DRAM bandwidth (large copies), cache bandwidth (copies that fit in
the last-level cache), peak compute per precision (large matmuls) and, on a
CPU, the cost of fresh pages for outputs malloc maps anew. Fixed costs: the
slope of a chain of tiny ops under each runtime. Facts of the device (name,
memory, cache size, SIMD width) come from the system, not from timing.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from costmodel._measure import MMAP_THRESHOLD_MAX_BYTES, capture_cuda_graph

Timer = Callable[..., float]


@dataclass(frozen=True)
class Ceilings:
    bandwidth_bytes_per_s: float
    cache_bandwidth_bytes_per_s: float
    cache_bytes: int
    memory_bytes: int
    peak_ops_per_s: dict[str, float]
    mmap_threshold_bytes: float = 0.0
    page_fault_s_per_byte: float = 0.0


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model name (Linux), or the machine type."""
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def cpu_cache_levels() -> dict[int, int]:
    """Bytes of data (or unified) cache per level from sysfs (Linux); empty when unknown."""
    levels: dict[int, int] = {}
    for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            size = (idx / "size").read_text().strip()
            kind = (idx / "type").read_text().strip()
            level = int((idx / "level").read_text())
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": 1024**2}.get(size[-1], 1)
        levels[level] = max(levels.get(level, 0), int(size.rstrip("KM")) * mult)
    return levels


def _cpu_cache_bytes() -> int:
    """The last-level cache from sysfs (Linux); 0 when unknown."""
    return max(cpu_cache_levels().values(), default=0)


def cpu_simd_lanes() -> int:
    """fp32 lanes per vector from the CPU flags (Linux): 16 AVX-512, 8 AVX/AVX2, else 4."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    flags = next(
        (
            ln.split(":", 1)[1].split()
            for ln in text.splitlines()
            if ln.startswith(("flags", "Features"))
        ),
        [],
    )
    if "avx512f" in flags:
        return 16
    if "avx2" in flags or "avx" in flags:
        return 8
    return 4


def _memory_bytes(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 1024**3


def _peaks(device: str, quick: bool, timer: Timer) -> dict[str, float]:
    """Peak ops/s per precision: the best rate of large matmuls over three sizes."""
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
    return peaks


def measure_ceilings(device: str, quick: bool, timer: Timer) -> Ceilings:
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
    peaks = _peaks(device, quick, timer)
    threshold = per_byte = 0.0
    if device == "cpu":
        threshold, per_byte = measure_page_faults(timer)
    return Ceilings(bandwidth, cache_bw, cache, _memory_bytes(device), peaks, threshold, per_byte)


def measure_page_faults(timer: Timer) -> tuple[float, float]:
    """(threshold bytes, seconds per output byte) of fresh pages for outputs above it.

    A ReLU writing 16 MiB reuses freed heap memory; one writing 64 MiB gets a
    new mapping and faults on every page. The excess of the large call over 4x
    the small one, per output byte, is the cost of a fresh page. Best of
    repeats: both contain no contention then. 0 where the excess is not
    measurable (another allocator, huge pages).
    """
    small = torch.rand(16 * 2**20 // 4)
    big = torch.rand(64 * 2**20 // 4)
    t_small = timer(lambda: torch.relu(small), repeats=7, min_s=0.0, best=True)
    t_big = timer(lambda: torch.relu(big), repeats=5, min_s=0.0, best=True)
    per_byte = (t_big - 4 * t_small) / (64 * 2**20)
    if per_byte <= 0.05 * t_small / (16 * 2**20):  # under 5% of the streaming cost: none
        return 0.0, 0.0
    return float(MMAP_THRESHOLD_MAX_BYTES), per_byte


def measure_runtime_overheads(device: str, timer: Timer) -> dict[str, float]:
    """Per-op fixed cost of a tiny op under each runtime: slope of a chain of n ops.

    eager: n ReLU modules called from Python; graph: the same chain traced by
    TorchScript (cuda: replayed from a CUDA graph); fused: n conv+BN+ReLU
    blocks folded and fused by ``torch.jit.freeze`` + ``optimize_for_inference``
    (one kernel per block), minus nothing: its slope is the fused kernel's cost.
    """
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
