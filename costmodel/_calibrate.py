"""Calibrate a hardware profile on the machine this runs on.

``calibrate(device, networks=...)`` measures
- ceilings: DRAM bandwidth, cache bandwidth, peak compute per precision, on a
  CPU also the cost of fresh pages (``costmodel._ceilings``);
- fixed costs per runtime: a chain of tiny ops run eagerly, as a TorchScript
  graph (CUDA graph replay on cuda) and conv + BN + ReLU folded and fused
  (``torch.jit.freeze`` + ``optimize_for_inference``);
- single kernels of every class over a seeded sweep of shapes, then six classifier heads
  (``costmodel._bench``; on a CPU each timed among 31 others, as in a network:
  ``measure_in_context``);
- the networks it is given (any ``Runnable``; the command line draws them from
  a search space with ``CALIBRATION_SEED``), at batch 1, 32, 1, 32, 8 in turn,
  measured exactly as validation measures (``measure_latencies``), whose time
  the model predicts as the composition of its per-layer times;
- op chains (``costmodel._chains``): each streaming op (BatchNorm, ReLU, residual add,
  3x3 average and max pools) repeated, on a fixed grid of sizes, at batch 1 and 32, timed
  as networks are: what such an op costs inside a network, which a kernel timed alone
  overstates;
and fits the profile's parameters to both (``costmodel._fit.fit_profile``).
Bandwidths and peaks stay as measured. A quarter of the benchmarks and of the
networks is held out of a first fit and their errors recorded
(``holdout_median_abs_error``, ``network_holdout_median_abs_error``); the
profile is then refitted on all of them.

On the 2-core EPYC development machine, one thread, otherwise idle: about
3-5 minutes (``quick``: under 1.5 minutes).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from costmodel._bench import CALIBRATION_SEED, layer_call, shape_sweep
from costmodel._ceilings import (
    Ceilings,
    cpu_simd_lanes,
    device_name,
    measure_ceilings,
    measure_runtime_overheads,
)
from costmodel._chains import CHAIN_BATCHES, CHAIN_DEPTH, op_chains
from costmodel._fit import FitResult, NetworkRow, blas_kernels, fit_profile
from costmodel._formulas import count
from costmodel._measure import (
    CLOCK_FUNCTIONS,
    DEFAULT_CLOCK,
    Runnable,
    clock_now,
    make_timer,
    measure_in_context,
    measure_latencies,
    steady_state_allocator,
)
from costmodel._spec import LayerSpec
from hw_profiles import HardwareProfile, RuntimeParams, parse_profile

__all__ = [
    "CALIBRATION_SEED",
    "NETWORK_BATCHES",
    "calibrate",
    "configure_torch",
    "measure_networks",
]

NETWORK_BATCHES = (1, 32, 1, 32, 8)  # calibration networks cycle through these batches


def measure_networks(
    networks: Sequence[Runnable],
    batches: Sequence[int],
    device: str,
    reference: Runnable | None = None,
    clock: str = DEFAULT_CLOCK,
    rounds: int | None = None,
) -> tuple[list[NetworkRow], dict[int, float]]:
    """The networks, batch ``batches[i % len(batches)]`` for the i-th, lowered and timed.

    Also returns the reference network's time per batch (timed in the same
    rounds; {} without one): the machine's speed while calibrating, which
    validation compares with its own.
    """
    rows: list[NetworkRow] = []
    reference_s: dict[int, float] = {}
    for b in sorted(set(batches)):
        group = [n for i, n in enumerate(networks) if batches[i % len(batches)] == b]
        # Exactly as validation measures (same protocol and statistic): the fitted
        # level is then the level that validation checks.
        times = measure_latencies(
            [*group, *([reference] if reference else [])], b, device, clock=clock, rounds=rounds
        )
        if reference is not None:
            reference_s[b] = times.pop()
        rows += [(tuple(n.lower(b)), t) for n, t in zip(group, times, strict=True)]
    return rows, reference_s


def _measure_chains(device: str, quick: bool, clock: str) -> list[tuple[str, int, NetworkRow]]:
    """(chain, batch, row) for every op chain at every chain batch (``quick``: batch 1)."""
    chains = op_chains(quick)
    out: list[tuple[str, int, NetworkRow]] = []
    with torch.inference_mode():
        for b in CHAIN_BATCHES[:1] if quick else CHAIN_BATCHES:
            rows, _ = measure_networks(chains, (b,), device, clock=clock)
            out += [(str(c), b, row) for c, row in zip(chains, rows, strict=True)]
    return out


def _chains_text(chain_rows: Sequence[tuple[str, int, NetworkRow]]) -> str:
    if not chain_rows:
        return "none"
    batches = sorted({b for _, b, _ in chain_rows})
    return f"{len(chain_rows)} chains of {CHAIN_DEPTH} ops (costmodel._chains) at batches {batches}"


def configure_torch(device: str, threads: int) -> None:
    """Seeded, ``threads`` CPU threads, no TF32 on a GPU: the state every timing here assumes."""
    torch.manual_seed(CALIBRATION_SEED)
    torch.set_num_threads(threads)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def _time_benchmarks(
    specs: Sequence[LayerSpec],
    device: str,
    quick: bool,
    timer: Callable[..., float],
    clock: str = DEFAULT_CLOCK,
) -> list[float]:
    with torch.inference_mode():
        if device == "cpu":
            calls = [layer_call(spec, device) for spec in specs]
            return measure_in_context(
                calls, passes=20 if quick else 60, seed=CALIBRATION_SEED, now=clock_now(clock)
            )
        # Per-call timing would need a sync per kernel: loop each kernel instead.
        return [timer(layer_call(spec, device), repeats=5 if quick else 7) for spec in specs]


def _best_rate(specs: Sequence[LayerSpec], times: Sequence[float]) -> float:
    """The best FLOP rate any single kernel reached."""
    return max(
        (2 * count(sp).macs / t for sp, t in zip(specs, times, strict=True) if count(sp).macs),
        default=0.0,
    )


def _runtimes(device: str, overheads: dict[str, float]) -> dict[str, dict[str, float]]:
    if device == "cuda":
        return {
            # Eager: host dispatch overlaps a short device kernel; graph replay: device only.
            "eager": {
                "kernel_overhead_s": overheads["graph"],
                "host_overhead_s": overheads["eager"],
            },
            "graph": {"kernel_overhead_s": overheads["graph"]},
            "fused": {"kernel_overhead_s": overheads["fused"] / 3},
        }
    return {
        "eager": {"kernel_overhead_s": 0.0, "host_overhead_s": overheads["eager"]},
        "graph": {"kernel_overhead_s": 0.0, "host_overhead_s": overheads["graph"]},
        "fused": {"kernel_overhead_s": 0.0, "host_overhead_s": overheads["graph"]},
    }


def _base_profile(
    device: str,
    threads: int,
    name: str | None,
    host: str,
    ceil: Ceilings,
    overheads: dict[str, float],
) -> HardwareProfile:
    """The measured part of the profile: the prior that fitting refines."""
    dev_name = device_name(device)
    return parse_profile(
        {
            "name": name or f"calibrated-{device}",
            "display_name": dev_name,
            "device_type": "gpu" if device == "cuda" else "cpu",
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
            "runtime": _runtimes(device, overheads),
            # PyTorch's own CPU algorithm choice; a GPU profile keeps one class per conv kind.
            "conv_dispatch": "pytorch_cpu" if device == "cpu" else "none",
            "simd_lanes": float(cpu_simd_lanes()) if device == "cpu" else 0.0,
            "threads": threads,
        },
        "<calibration>",
    )


def _with_graph_class_costs(hw: HardwareProfile) -> HardwareProfile:
    """graph / fused replace the eager dispatch cost, not the per-class algorithm set-up."""
    extra = hw.runtime("eager").class_host_overhead_s
    rts = dict(hw.runtimes)
    for rt in ("graph", "fused"):
        p = rts[rt]
        rts[rt] = RuntimeParams(p.kernel_overhead_s, p.host_overhead_s, extra)
    return dataclasses.replace(hw, runtimes=MappingProxyType(rts))


def spec_to_dict(spec: LayerSpec) -> dict[str, Any]:
    """Every field, names and inputs included: the CPU allocator model needs a network's
    tensor lifetimes to refit from a raw record."""
    d = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def spec_from_dict(d: dict[str, Any]) -> LayerSpec:
    return LayerSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _write_raw(
    path: Path,
    ceil: Ceilings,
    overheads: dict[str, float],
    specs: Sequence[LayerSpec],
    times: Sequence[float],
    nets: Sequence[NetworkRow],
    chains: Sequence[tuple[str, int, NetworkRow]] = (),
) -> None:
    path.write_text(
        json.dumps(
            {
                "ceilings": dataclasses.asdict(ceil),
                "overheads_s": overheads,
                "benchmarks": [
                    {"spec": spec_to_dict(sp), "time_s": t}
                    for sp, t in zip(specs, times, strict=True)
                ],
                "networks": [
                    {"layers": [spec_to_dict(sp) for sp in net], "time_s": t} for net, t in nets
                ],
                "op_chains": [
                    {
                        "chain": name,
                        "batch": b,
                        "time_s": t,
                        "layers": [spec_to_dict(sp) for sp in net],
                    }
                    for name, b, (net, t) in chains
                ],
            },
            indent=0,
        )
    )


def _r4(x: float) -> float:
    return round(x, 4) if math.isfinite(x) else -1.0


def _method(device: str, overheads: dict[str, float], fit: FitResult, quick: bool) -> str:
    return (
        "micro-benchmarks (copies, matmuls, tiny-op chains: "
        + ", ".join(f"{k} {v * 1e6:.2f} us/op" for k, v in overheads.items())
        + (
            " (fused: per conv+BN+ReLU block, TorchScript freeze + optimize_for_inference; "
            "not used, the CPU fused runtime keeps the graph dispatch cost)"
            if device == "cpu"
            else ""
        )
        + f"; {fit.n_fit} single kernels, seed {CALIBRATION_SEED}); "
        "least squares on log time (soft-L1) through costmodel._latency"
        + ("; quick" if quick else "")
    )


def _measure_machine(
    device: str,
    quick: bool,
    timer: Callable[..., float],
    say: Callable[[str], None],
    clock: str = DEFAULT_CLOCK,
) -> tuple[Ceilings, dict[str, float], list[LayerSpec], list[float]]:
    """Ceilings, fixed costs per runtime and the sweep of single kernels with their times."""
    with torch.inference_mode():
        ceil = measure_ceilings(device, quick, timer)
    say(
        f"bandwidth {ceil.bandwidth_bytes_per_s / 1e9:.1f} GB/s, cache "
        f"{ceil.cache_bandwidth_bytes_per_s / 1e9:.1f} GB/s ({ceil.cache_bytes} B), peaks "
        + ", ".join(f"{p} {v / 1e9:.1f} GOPS" for p, v in ceil.peak_ops_per_s.items())
        + f"; fresh pages above {ceil.mmap_threshold_bytes / 2**20:.0f} MiB: "
        f"{ceil.page_fault_s_per_byte * 1e9:.2f} ns/B"
    )
    overheads = measure_runtime_overheads(device, timer)
    say("per-op fixed cost: " + ", ".join(f"{k} {v * 1e6:.2f} us" for k, v in overheads.items()))
    specs = shape_sweep(quick)
    times = _time_benchmarks(specs, device, quick, timer, clock)
    say(f"measured {len(specs)} single-kernel benchmarks")
    # A ceiling is at least the best rate any kernel reached (the matmul may have
    # run during a burst of load on a shared machine).
    best_rate = _best_rate(specs, times)
    if best_rate > ceil.peak_ops_per_s.get("fp32", 0.0):
        say(f"peak fp32 raised to the best single-kernel rate, {best_rate / 1e9:.1f} GFLOPS")
        ceil.peak_ops_per_s["fp32"] = best_rate
    return ceil, overheads, specs, times


def _fit_summary(fit: FitResult, duration: float) -> str:
    return (
        f"fit: median abs error {fit.fit_median_abs_error:.1%} on {fit.n_fit} benchmarks, "
        f"{fit.network_fit_median_abs_error:.1%} on {fit.n_networks} networks and op chains; "
        f"held out: {fit.holdout_median_abs_error:.1%} on {fit.n_holdout} benchmarks, "
        f"{fit.network_holdout_median_abs_error:.1%} on networks and op chains; "
        f"{duration:.0f} s"
    )


def calibrate(
    device: str = "cpu",
    *,
    threads: int = 1,
    quick: bool = False,
    name: str | None = None,
    log: Callable[[str], None] = print,
    raw_out: Path | None = None,
    networks: Sequence[Runnable] = (),
    networks_from: str = "",
    reference: Runnable | None = None,
    network_batches: Sequence[int] = NETWORK_BATCHES,
    clock: str = DEFAULT_CLOCK,
    chains: bool = True,
) -> tuple[HardwareProfile, dict[str, Any]]:
    """Measure this machine and fit a profile; returns it and its [calibration] table.

    ``networks``: whole networks to time and fit to (``networks_from`` says
    where they come from, for the record); ``reference``: a fixed network timed
    beside them in every round, whose time per batch the table records
    (``reference_arch``: ``str(reference)``) as the machine's speed. ``clock``
    times everything (``costmodel._measure.make_clock``): validate with the same.
    ``chains``: also time and fit the op chains (``costmodel._chains``; ``quick``: one size,
    batch 1).
    """
    t_start = time.perf_counter()
    allocator = steady_state_allocator() if device == "cpu" else "caching (torch.cuda)"

    def say(msg: str) -> None:  # the caller's log, with the elapsed time
        log(f"[{time.perf_counter() - t_start:5.1f} s] {msg}")

    configure_torch(device, threads)
    host = platform.node() or "unknown-host"
    ceil, overheads, specs, times = _measure_machine(
        device, quick, make_timer(device, clock), say, clock
    )
    base = _base_profile(device, threads, name, host, ceil, overheads)
    nets: list[NetworkRow] = []
    reference_s: dict[int, float] = {}
    if networks:
        with torch.inference_mode():
            nets, reference_s = measure_networks(
                networks, network_batches, device, reference, clock
            )
        say(
            f"measured {len(nets)} calibration networks from {networks_from} "
            f"(batches {list(network_batches)})"
        )
    chain_rows = _measure_chains(device, quick, clock) if chains else []
    if chain_rows:
        say(f"measured {len(chain_rows)} op chains of {CHAIN_DEPTH} ops")
    if raw_out is not None:
        _write_raw(raw_out, ceil, overheads, specs, times, nets, chain_rows)
    fit = fit_profile(base, specs, times, nets=[*nets, *(row for _, _, row in chain_rows)])
    duration = time.perf_counter() - t_start
    say(_fit_summary(fit, duration))
    calib = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device,
        "host": host,
        "torch_version": torch.__version__,
        "threads": threads,
        "method": _method(device, overheads, fit, quick)
        + f"; timed with the {clock} clock ({CLOCK_FUNCTIONS[clock]})",
        "benchmarks": fit.n_fit,
        "fit_median_abs_error": round(fit.fit_median_abs_error, 4),
        "holdout_median_abs_error": round(fit.holdout_median_abs_error, 4),
        "networks": f"{len(nets)} from {networks_from} (batches {list(network_batches)})"
        if nets
        else "none",
        "op_chains": _chains_text(chain_rows),
        "network_fit_median_abs_error": _r4(fit.network_fit_median_abs_error),
        "network_holdout_median_abs_error": _r4(fit.network_holdout_median_abs_error),
        "duration_s": round(duration, 1),
        "allocator": allocator,
        "blas": blas_kernels(),
    }
    if reference is not None and reference_s:
        calib["reference_arch"] = str(reference)
        calib["reference_s"] = {f"b{b}": t for b, t in sorted(reference_s.items())}
    return _with_graph_class_costs(fit.profile), calib
