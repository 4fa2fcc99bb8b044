"""Benchmark: analytic ``costmodel.estimate(arch)`` vs build + FlopCounterMode forward.

Both paths cost the same sampled architectures (Optuna RandomSampler, one seed),
on one torch thread. The baseline is what a search without an analytic model
does per trial: ``searchspace.build(arch)`` and one forward pass of zeros
under ``torch.utils.flop_counter.FlopCounterMode``.

``estimate`` caches per-block sums (blocks repeat across a search), never whole
architectures. Three regimes, all on architectures that are distinct as wholes:
- cold: empty cache; each block is costed the first time it is seen;
- steady: the cache holds the blocks of ``--warmup`` earlier sampled
  architectures (the earlier trials of a search); measured architectures are
  new ones, so some of their blocks still miss;
- warm blocks: every block of the measured architectures is cached (what a
  long search converges to); each call still walks the architecture and
  composes its totals.
The ratio is median(build + count) / median(estimate) per regime.

Counts are checked for identity on every baseline architecture: params equal
``sum(p.numel())`` of the built module, and estimate's conv + linear MACs equal
FlopCounterMode's FLOPs / 2 (FlopCounterMode counts 2 FLOPs per MAC and no
BatchNorm; estimate also counts folded BatchNorm as one MAC per element).

Usage:
    .venv/bin/python experiments/bench_estimate.py [--spaces cifar mobile seed_convs]
        [--measure 1000] [--baseline 30] [--warmup 5000] [--seed 0] [--out experiments/results]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from torch.utils.flop_counter import FlopCounterMode

import costmodel
import searchspace as ss
from costmodel._estimate import clear_cache

ROOT = Path(__file__).resolve().parents[1]
SPACES_DIR = ss.SPACES_DIR


def distinct_archs(space: ss.SearchSpace, n: int, seed: int) -> list[ss.Architecture]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen: dict[ss.Architecture, None] = {}
    tries = 0
    while len(seen) < n:
        seen.setdefault(ss.sample(study.ask(), space))
        tries += 1
        if tries > 20 * n:
            raise RuntimeError(f"space {space.name!r} has fewer than {n} distinct architectures")
    return list(seen)


def time_estimates(archs: list[ss.Architecture]) -> list[float]:
    times = []
    est = costmodel.estimate
    clock = time.perf_counter_ns
    for a in archs:
        t0 = clock()
        est(a)
        times.append((clock() - t0) * 1e-9)
    return times


def build_and_count(a: ss.Architecture) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    model = ss.build(a).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, *a.input_shape))
    dt = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return dt, params, fc.get_total_flops()


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "max_s": max(times),
        "n": len(times),
    }


def bench_space(name: str, args: argparse.Namespace) -> dict[str, Any]:
    space = ss.load_space(SPACES_DIR / f"{name}.toml")
    archs = distinct_archs(space, args.warmup + args.measure, args.seed)
    warm, measured = archs[: args.warmup], archs[args.warmup :]
    clear_cache()
    cold = time_estimates(measured)
    clear_cache()
    time_estimates(warm)  # the earlier trials of a search fill the block cache
    steady = time_estimates(measured)
    hot = time_estimates(measured)  # every block cached, no whole-architecture cache
    blocks = sum(len(a.blocks) for a in measured) / len(measured)
    base_times, mismatches = [], []
    build_and_count(measured[0])  # untimed: torch's first-call costs are not the method's
    for a in measured[: args.baseline]:
        dt, params, flops = build_and_count(a)
        base_times.append(dt)
        rep = costmodel.estimate(a)
        conv_linear_macs = sum(ly.macs for ly in rep.layers if ly.op in ("conv2d", "linear"))
        if params != rep.total.params or flops != costmodel.macs_to_flops(conv_linear_macs):
            mismatches.append(
                {
                    "arch": a.to_string(),
                    "params": [params, rep.total.params],
                    "flops": [flops, costmodel.macs_to_flops(conv_linear_macs)],
                }
            )
    base = summary(base_times)
    out: dict[str, Any] = {
        "space": name,
        "blocks_per_arch": blocks,
        "baseline_build_flopcounter": base,
        "counts_identical": not mismatches,
        "mismatches": mismatches,
        "baseline_archs": [a.to_string() for a in measured[: args.baseline]],
        "baseline_times_s": base_times,
    }
    for regime, times in (("cold", cold), ("steady", steady), ("warm_blocks", hot)):
        s = summary(times)
        s["ratio_median"] = base["median_s"] / s["median_s"]
        s["ratio_mean"] = base["mean_s"] / s["mean_s"]
        out[f"estimate_{regime}"] = s
    return out


def bench_fixed(name: str, a: ss.Architecture, repeats: int) -> dict[str, Any]:
    """One published architecture: build + count vs estimate, each repeated."""
    base = [build_and_count(a)[0] for _ in range(repeats)]
    cold = []
    for _ in range(repeats):
        clear_cache()
        cold += time_estimates([a])
    warm = time_estimates([a] * max(repeats, 100))  # no whole-architecture cache exists
    b, c, w = summary(base), summary(cold), summary(warm)
    return {
        "arch": name,
        "string": a.to_string(),
        "baseline_build_flopcounter": b,
        "estimate_cold": c,
        "estimate_warm_blocks": w,
        "ratio_cold_median": b["median_s"] / c["median_s"],
        "ratio_warm_median": b["median_s"] / w["median_s"],
    }


def markdown(res: dict[str, Any], command: str) -> str:
    lines = [
        "# costmodel.estimate vs build + FlopCounterMode forward",
        "",
        f"Command: `{command}`",
        "",
        f"Date: {res.get('date', 'not recorded')}. Machine: {res['machine']}; "
        f"torch {res['torch']}, 1 thread; load average "
        f"{res['loadavg_start']} at start, {res['loadavg_end']} at end (shared machine: "
        "absolute times are inflated; both paths ran under the same load).",
        "",
        f"Per space: {res['args']['measure']} distinct sampled architectures timed with "
        f"estimate (cold cache; steady state after {res['args']['warmup']} earlier "
        "architectures; all blocks warm), the first "
        f"{res['args']['baseline']} of them also with build + FlopCounterMode forward. "
        "No whole-architecture result is cached. Times per architecture, median (mean).",
        "",
        "| space | blocks/arch | build + count | estimate cold | estimate steady | "
        "estimate warm blocks | ratio cold | ratio steady | ratio warm | counts identical |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def t(s: dict[str, float]) -> str:
        return f"{s['median_s'] * 1e6:,.1f} us ({s['mean_s'] * 1e6:,.1f})"

    for r in res["spaces"]:
        b = r["baseline_build_flopcounter"]
        lines.append(
            f"| {r['space']} | {r['blocks_per_arch']:.1f} | {b['median_s'] * 1e3:,.1f} ms "
            f"({b['mean_s'] * 1e3:,.1f}) | {t(r['estimate_cold'])} | {t(r['estimate_steady'])} | "
            f"{t(r['estimate_warm_blocks'])} | {r['estimate_cold']['ratio_median']:,.0f}x | "
            f"{r['estimate_steady']['ratio_median']:,.0f}x | "
            f"{r['estimate_warm_blocks']['ratio_median']:,.0f}x | "
            f"{'yes' if r['counts_identical'] else 'NO'} |"
        )
    lines += [
        "",
        f"Published architectures ({res['args']['repeats']} repeats; median):",
        "",
        "| architecture | build + count | estimate cold (empty cache) | estimate warm blocks | "
        "ratio cold | ratio warm |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["fixed"]:
        lines.append(
            f"| {r['arch']} | {r['baseline_build_flopcounter']['median_s'] * 1e3:,.1f} ms | "
            f"{r['estimate_cold']['median_s'] * 1e6:,.1f} us | "
            f"{r['estimate_warm_blocks']['median_s'] * 1e6:,.1f} us | "
            f"{r['ratio_cold_median']:,.0f}x | {r['ratio_warm_median']:,.0f}x |"
        )
    lines += [
        "",
        "Counts identical: on every baseline architecture, params equal the built module's "
        "`sum(p.numel())` and estimate's conv + linear MACs equal FlopCounterMode FLOPs / 2 "
        "(FlopCounterMode counts 2 FLOPs per MAC and no BatchNorm; estimate's `total.macs` "
        "also counts folded BatchNorm, one MAC per element). tests/test_searchspace_agreement.py "
        "checks estimate == analyze(arch.lower()) == profile(build(arch)) on params, MACs and "
        "MAC bytes.",
        "",
        "Regimes: *cold* starts from an empty block cache; *steady* is a search that has "
        "already costed the warm-up architectures (new architectures still bring some new "
        "blocks); *warm blocks* has every block cached but still walks each architecture "
        "and composes its totals (the floor of the analytic path).",
        "",
        "Per-architecture times are in bench_estimate.json.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--spaces",
        nargs="+",
        default=["cifar", "mobile", "seed_convs"],
        help="names of spaces shipped in searchspace/spaces (default: all three)",
    )
    p.add_argument("--measure", type=int, default=1000, help="architectures timed with estimate")
    p.add_argument(
        "--baseline",
        type=int,
        default=30,
        help="of those, how many are also built and counted (slow)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=5000,
        help="earlier architectures whose blocks fill the cache (steady regime)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="repeats for the published architectures (MobileNetV2, ShuffleNet)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "experiments" / "results",
        help="folder for bench_estimate.md and bench_estimate.json",
    )
    p.add_argument("--json", action="store_true", help="print the JSON result to stdout")
    args = p.parse_args(argv)  # fmt: skip
    for key in ("measure", "baseline", "warmup", "repeats"):
        if getattr(args, key) < (0 if key == "warmup" else 1):
            p.error(f"--{key}={getattr(args, key)} must be positive")
    if args.baseline > args.measure:
        p.error(f"--baseline={args.baseline} must be <= --measure={args.measure}")
    for name in args.spaces:
        if not (SPACES_DIR / f"{name}.toml").is_file():
            p.error(f"--spaces: no space {name!r} in {SPACES_DIR}")
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    command = "python experiments/bench_estimate.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    res: dict[str, Any] = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "spaces": [],
    }
    try:
        for name in args.spaces:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            res["spaces"].append(bench_space(name, args))
        print("benchmarking published architectures ...", file=sys.stderr, flush=True)
        build_and_count(ss.mobilenet_v2())  # first-call costs of torch, not of the method
        res["fixed"] = [
            bench_fixed("MobileNetV2 1.0 (224)", ss.mobilenet_v2(), args.repeats),
            bench_fixed("ShuffleNet V1-like g=8 (224)", ss.shufflenet_v1_like(8), args.repeats),
        ]
    except Exception as e:  # a failure is reported, not hidden
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_estimate.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "bench_estimate.md").write_text(markdown(res, res["command"]))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print((args.out / "bench_estimate.md").read_text())
    return 0 if all(r["counts_identical"] for r in res["spaces"]) else 1


if __name__ == "__main__":
    sys.exit(main())
