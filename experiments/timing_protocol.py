"""How should a CPU network latency be measured on a shared VM? (the validation protocol)

Measures the 40 validation architectures (``costmodel validate``'s seed, cifar
space, batch 1, one thread) with three protocols, each run twice back to back,
and reports how well the two runs agree (Spearman between runs, median
absolute difference) for several statistics of the samples:

- ``loops``: the protocol used until 2026-11-28: best of 7 timed loops of
  >= 5 ms, minimum over 3 interleaved rounds;
- ``grouped``: 10 rounds x 10 back-to-back single forward passes;
- ``spread``: 100 rounds x 1 forward pass (the current default), so each
  network's samples are spread over the whole run.

It also times one network continuously for 20 s and reports the per-second
median with the p10-p90 spread: the machine's speed drifts from second to
second, which is why samples must be spread in time. Every time is wall clock
(time.perf_counter, through ``costmodel._measure``'s Clock seam); the report
starts with the command, date, machine and load average (``_provenance.py``).

    PYTHONPATH=. python experiments/timing_protocol.py   # ~3 minutes, machine otherwise idle
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _provenance import WALL_CLOCK, header_lines, provenance_finish, provenance_start


def reading(results: dict[str, Any]) -> list[str]:
    """What this run's table says, computed from it (so it holds for the run it reports)."""
    spread = results["spread"]
    halves = min(r["halves_spearman"] for r in spread.values())
    diffs = [r["median_abs_diff"] for r in spread.values()]
    worst = min(
        ((name, stat) for name, by in results.items() for stat in by),
        key=lambda k: results[k[0]][k[1]]["spearman"],
    )
    return [
        f"Reading (computed from the table): within one run of the spread protocol the odd "
        f"and even rounds rank the networks alike to Spearman >= {halves:.3f} for every "
        f"statistic. Between its two runs the level differs by a median "
        f"{min(diffs):.1%}-{max(diffs):.1%} per network, depending on the statistic. A "
        "shared machine's speed drifts between runs, so validation times a fixed reference "
        "network in every round (`searchspace.reference_architecture()`) and also reports "
        "errors at the speed the machine had while calibrating. Lowest Spearman between "
        f"runs: `{worst[0]}`, {worst[1]} ({results[worst[0]][worst[1]]['spearman']:.3f}).",
    ]


def loops_protocol(archs: list[Any]) -> list[float]:
    """The former default: best of 7 loops of >= 5 ms, minimum over 3 rounds."""
    import torch

    import searchspace
    from costmodel._measure import make_timer

    timer = make_timer("cpu")
    calls = []
    for a in archs:
        m = searchspace.build(a).eval()
        x = torch.randn(1, *a.input_shape)
        calls.append(lambda m=m, x=x: m(x))
    best = [float("inf")] * len(archs)
    with torch.inference_mode():
        for _ in range(3):
            for i, fn in enumerate(calls):
                best[i] = min(best[i], timer(fn, repeats=7, min_s=5e-3, best=True))
    return best


def agreement(a: list[float], b: list[float]) -> dict[str, float]:
    from scipy.stats import spearmanr

    return {
        "spearman": float(spearmanr(a, b).statistic),
        "median_abs_diff": float(
            statistics.median(abs(x / y - 1) for x, y in zip(a, b, strict=True))
        ),
    }


def drift(arch: Any, seconds: float) -> list[dict[str, float]]:
    """Per second of a ``seconds``-long run of one network: its wall-clock passes' median,
    lower decile and p90."""
    import torch

    import searchspace
    from costmodel._measure import lower_quantile, make_clock

    now, sync = make_clock("cpu", "wall")
    m = searchspace.build(arch).eval()
    x = torch.randn(1, *arch.input_shape)
    per_s: list[list[float]] = []
    with torch.inference_mode():
        for _ in range(5):
            m(x)
        t_start = now()
        while (t := now()) - t_start < seconds:
            sec = int(t - t_start)
            while len(per_s) <= sec:
                per_s.append([])
            sync()
            t0 = now()
            m(x)
            sync()
            per_s[sec].append(now() - t0)
    return [
        {
            "second": i,
            "n": len(s),
            "p10_ms": lower_quantile(s, 0.1) * 1e3,
            "median_ms": statistics.median(s) * 1e3,
            "p90_ms": lower_quantile(s, 0.9) * 1e3,
        }
        for i, s in enumerate(per_s)
        if s
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--drift-s", type=float, default=20.0)
    p.add_argument("--out", default="experiments/results/validation_cpu_protocol")
    args = p.parse_args(argv)
    prov = provenance_start("experiments/timing_protocol.py", argv)
    import torch

    from costmodel._measure import lower_quantile, measure_samples
    from costmodel._validate import VALIDATION_SEED
    from searchspace import sample_architectures

    torch.set_num_threads(1)
    archs = sample_architectures("cifar", args.n, VALIDATION_SEED)
    stats = {
        "min": lambda s: min(s),
        "p10": lambda s: lower_quantile(s, 0.1),
        "p25": lambda s: lower_quantile(s, 0.25),
        "median": statistics.median,
    }
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    runs = [loops_protocol(archs), loops_protocol(archs)]
    results["loops"] = {"min": agreement(*runs)}
    for name, rounds, repeats in (("grouped", 10, 10), ("spread", 100, 1)):
        two = [measure_samples(archs, 1, "cpu", rounds=rounds, repeats=repeats) for _ in range(2)]
        results[name] = {}
        for stat, f in stats.items():
            between = agreement([f(s) for s in two[0]], [f(s) for s in two[1]])
            # Within one run: odd against even samples (rounds for "spread").
            halves = agreement([f(s[0::2]) for s in two[0]], [f(s[1::2]) for s in two[0]])
            results[name][stat] = {**between, "halves_" + "spearman": halves["spearman"]}
        print(f"{name}: done at {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    probe = archs[min(5, len(archs) - 1)]
    series = drift(probe, args.drift_s)
    prov = provenance_finish(prov)
    doc = {
        "command": prov.command,
        "date": prov.date_utc,
        "provenance": prov.to_dict(),
        "clock": WALL_CLOCK,
        "torch": torch.__version__,
        "n": len(archs),
        "batch": 1,
        "threads": 1,
        "results": results,
        "drift_arch": probe.to_string(),
        "drift": series,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [
        "# Measuring CPU latency on a shared VM: which protocol repeats?",
        "",
        *header_lines(prov),
        "",
        f"One torch thread, {doc['n']} validation architectures at batch 1, "
        f"{doc['wall_s']:.0f} s. Clock: {WALL_CLOCK} for every sample. Statistics of each "
        "network's samples: min, p10 (lower decile), p25 and median, as the table says; "
        "the drift series gives each second's median with its p10-p90 spread.",
        "",
        "Each protocol measured the same networks twice, back to back. *between*: the two",
        "runs against each other; *halves*: odd against even samples of the first run.",
        "",
        "| protocol | statistic | Spearman between runs | median abs difference "
        "| Spearman of halves |",
        "|---|---|---|---|---|",
    ]
    for name, by_stat in results.items():
        for stat, r in by_stat.items():
            halves = r.get("halves_spearman")
            lines.append(
                f"| {name} | {stat} | {r['spearman']:.3f} | {r['median_abs_diff']:.1%} "
                f"| {'' if halves is None else f'{halves:.3f}'} |"
            )
    lines += ["", *reading(results)]
    p10s = [s["p10_ms"] for s in series]
    meds = [s["median_ms"] for s in series]
    lines += [
        "",
        f"One network (`{doc['drift_arch']}`) run for {args.drift_s:g} s (wall clock): "
        f"per-second median {min(meds):.2f}-{max(meds):.2f} ms, per-second lower decile "
        f"{min(p10s):.2f}-{max(p10s):.2f} ms.",
        "",
        "| second | forward passes | median ms | p10-p90 ms |",
        "|---|---|---|---|",
        *[
            f"| {s['second']} | {s['n']} | {s['median_ms']:.3f} | "
            f"{s['p10_ms']:.3f}-{s['p90_ms']:.3f} |"
            for s in series
        ],
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
