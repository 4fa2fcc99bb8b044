"""Validate a latency profile against measured latency of random architectures.

``python -m costmodel validate --hw PROFILE --device cpu|cuda`` samples random
architectures from a search space with its own seed (calibration draws its
networks with another one, so it never sees these), builds each with
``searchspace.build``, measures its forward latency and predicts it with
``costmodel.estimate``; it reports rank agreement (Spearman, Kendall tau-b),
the median absolute percentage error and the share within +-10% / +-25%,
with a scatter plot. Results go to
``<out>/validation_<device>_b<batch>[_<runtime>].{json,md,png}``.

Measuring: warm-up, an inner loop of at least 5 ms, the best of 7 repeats (4
above batch 8), the minimum over 3 rounds that visit the architectures in
turn, so that a burst of load on a shared machine hits one round only
(contention only ever adds time). On a CPU with one thread the clock is the
thread's CPU time (see ``hw_profiles._calibrate.make_timer``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VALIDATION_SEED = 7_000_001  # not the calibration seed (hw_profiles/_calibrate.py)


@dataclass(frozen=True)
class ValidationPoint:
    arch: str
    measured_s: float
    predicted_s: float
    macs: int

    @property
    def rel_error(self) -> float:
        return self.predicted_s / self.measured_s - 1.0


@dataclass(frozen=True)
class ValidationSummary:
    n: int
    spearman: float
    kendall: float
    median_abs_error: float
    within_10: float
    within_25: float
    mean_signed_error: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(points: Sequence[ValidationPoint]) -> ValidationSummary:
    """Rank correlation and percentage errors of predicted vs measured latency."""
    from scipy.stats import kendalltau, spearmanr

    if len(points) < 3:
        raise ValueError(f"need at least 3 points to validate, got {len(points)}")
    m = [p.measured_s for p in points]
    q = [p.predicted_s for p in points]
    errs = [abs(p.rel_error) for p in points]
    return ValidationSummary(
        n=len(points),
        spearman=float(spearmanr(m, q).statistic),
        kendall=float(kendalltau(m, q).statistic),
        median_abs_error=float(statistics.median(errs)),
        within_10=sum(e <= 0.10 for e in errs) / len(errs),
        within_25=sum(e <= 0.25 for e in errs) / len(errs),
        mean_signed_error=float(statistics.fmean(p.rel_error for p in points)),
    )


def sample_architectures(space_path: str, n: int, seed: int) -> list[Any]:
    """``n`` distinct random architectures from a space (Optuna RandomSampler, seeded)."""
    import optuna

    import searchspace

    space = searchspace.load_space(space_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen: dict[str, Any] = {}
    for _ in range(n * 20):
        if len(seen) == n:
            break
        trial = study.ask()
        arch = searchspace.sample(trial, space)
        seen.setdefault(arch.to_string(), arch)
        study.tell(trial, 0.0)
    return list(seen.values())


def measure_latencies(
    archs: Sequence[Any], batch: int, device: str, *, rounds: int = 3, repeats: int | None = None,
    min_s: float = 5e-3, runtime: str = "eager",
) -> list[float]:
    """Seconds per forward pass of each architecture (minimum over rounds and repeats).

    Calibration networks (hw_profiles/_calibrate.py) are measured by this same
    function with the same defaults: under contention a minimum falls with the
    number of samples, so both sides must take equally many.
    """
    if repeats is None:
        repeats = 7 if batch <= 8 else 4
    import torch

    import searchspace
    from hw_profiles._calibrate import capture_cuda_graph, make_timer

    timer = make_timer(device)
    calls = []
    for arch in archs:
        model = searchspace.build(arch).to(device).eval()
        x = torch.randn(batch, *arch.input_shape, device=device)
        if runtime != "eager":
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: still works
        if runtime == "graph" and device == "cuda":
            with torch.inference_mode():
                calls.append((capture_cuda_graph(model, x), None))
            continue
        if runtime == "graph":
            with torch.no_grad():
                model = torch.jit.freeze(torch.jit.trace(model, x))
        elif runtime == "fused":
            with torch.no_grad():
                traced = torch.jit.freeze(torch.jit.trace(model, x))
                model = torch.jit.optimize_for_inference(traced)
        calls.append((model, x))
    best = [float("inf")] * len(archs)
    with torch.inference_mode():
        for _ in range(rounds):
            for i, (model, x) in enumerate(calls):
                fn = model if x is None else (lambda m=model, x=x: m(x))
                best[i] = min(best[i], timer(fn, repeats=repeats, min_s=min_s, best=True))
    return best


def scatter_plot(points: Sequence[ValidationPoint], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = [p.measured_s * 1e3 for p in points]
    q = [p.predicted_s * 1e3 for p in points]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(m, q, s=14)
    lo, hi = min(m + q) * 0.8, max(m + q) * 1.25
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="y = x")
    for f, style in ((1.1, ":"), (1.25, "--")):
        ax.plot([lo, hi], [lo * f, hi * f], "k" + style, lw=0.6)
        ax.plot([lo, hi], [lo / f, hi / f], "k" + style, lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def validate(
    hw: str, device: str, space: str, n: int, batch: int, runtime: str, seed: int,
    threads: int, rounds: int = 3, repeats: int | None = None, min_s: float = 5e-3,
) -> tuple[list[ValidationPoint], ValidationSummary, dict[str, Any]]:
    import torch

    import costmodel
    from hw_profiles import load

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    profile = load(hw)
    archs = sample_architectures(space, n, seed)
    t0 = time.perf_counter()
    measured = measure_latencies(
        archs, batch, device, rounds=rounds, repeats=repeats, min_s=min_s, runtime=runtime
    )
    points = []
    for arch, t in zip(archs, measured, strict=True):
        rep = costmodel.estimate(arch, hw=profile, precision="fp32", batch=batch, runtime=runtime)
        points.append(ValidationPoint(arch.to_string(), t, rep.total.latency_s, rep.total.macs))
    meta = {
        "hw": hw,
        "profile_source": profile.source,
        "device": device,
        "space": space,
        "batch": batch,
        "runtime": runtime,
        "precision": "fp32",
        "seed": seed,
        "threads": threads,
        "rounds": rounds,
        "repeats": repeats,
        "min_s": min_s,
        "host": platform.node(),
        "torch_version": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "measure_wall_s": round(time.perf_counter() - t0, 1),
    }
    return points, summarize(points), meta


def write_results(
    points: Sequence[ValidationPoint], summary: ValidationSummary, meta: dict[str, Any],
    out_dir: Path, stem: str, command: str,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md, png = (out_dir / f"{stem}.{ext}" for ext in ("json", "md", "png"))
    doc = {
        "command": command,
        "meta": meta,
        "summary": summary.to_dict(),
        "points": [{**asdict(p), "rel_error": p.rel_error} for p in points],
    }
    js.write_text(json.dumps(doc, indent=1) + "\n")
    s = summary
    lines = [
        f"# Latency validation: {meta['hw']} on {meta['device']}, batch {meta['batch']}, "
        f"{meta['runtime']}",
        "",
        f"Command: `{command}`",
        "",
        f"{meta['date']}, host {meta['host']}, torch {meta['torch_version']}, "
        f"{meta['threads']} thread(s), space {meta['space']}, seed {meta['seed']}.",
        f"Measured: warm-up, inner loop >= {meta.get('min_s', 5e-3) * 1e3:g} ms, best of "
        f"{meta.get('repeats') or '7 (4 above batch 8)'} repeats, minimum over "
        f"{meta['rounds']} rounds. Predicted: `costmodel.estimate` (fp32).",
        "",
        "| architectures | Spearman | Kendall | median abs error | within 10% | within 25% "
        "| mean signed error |",
        "|---|---|---|---|---|---|---|",
        f"| {s.n} | {s.spearman:.3f} | {s.kendall:.3f} | {s.median_abs_error:.1%} "
        f"| {s.within_10:.0%} | {s.within_25:.0%} | {s.mean_signed_error:+.1%} |",
        "",
        f"![scatter]({png.name})",
        "",
        "| measured ms | predicted ms | error | MACs | architecture |",
        "|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: p.measured_s):
        lines.append(f"| {p.measured_s * 1e3:.3f} | {p.predicted_s * 1e3:.3f} | "
                     f"{p.rel_error:+.1%} | {p.macs:,} | `{p.arch}` |")
    md.write_text("\n".join(lines) + "\n")
    scatter_plot(points, f"{meta['hw']} {meta['device']} b{meta['batch']} {meta['runtime']}: "
                 f"Spearman {s.spearman:.3f}, median |err| {s.median_abs_error:.1%}", png)
    return [js, md, png]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m costmodel validate",
        description="Measure random architectures of a search space on this machine and "
        "compare with the latency the cost model predicts (rank correlation, errors, plot).",
    )
    p.add_argument("--hw", required=True, help="profile: built-in name or TOML path")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--space", default="experiments/spaces/cifar.toml",
                   help="search space TOML (default experiments/spaces/cifar.toml)")
    p.add_argument("--n", type=int, default=40, help="architectures (default 40)")
    p.add_argument("--batch", type=int, action="append", default=None,
                   help="batch size; repeat for several (default 1)")
    p.add_argument("--runtime", choices=("eager", "graph", "fused"), default="eager")
    p.add_argument("--seed", type=int, default=VALIDATION_SEED)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--rounds", type=int, default=3,
                   help="measurement rounds; the minimum over rounds is kept (default 3)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per round, the best kept (default 7, 4 above batch 8)")
    p.add_argument("--min-ms", type=float, default=5.0,
                   help="shortest inner timing loop in ms (default 5)")
    p.add_argument("--out", default="experiments/results", help="output folder")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    for key in ("n", "threads", "rounds", "repeats", "min_ms"):
        if getattr(args, key) is None:
            continue
        if getattr(args, key) < 1:
            print(f"validate: --{key.replace('_', '-')}={getattr(args, key)} must be >= 1",
                  file=sys.stderr)
            return 2
    batches = args.batch or [1]
    if any(b < 1 for b in batches):
        print(f"validate: --batch={batches} must be >= 1", file=sys.stderr)
        return 2
    if not Path(args.space).exists():
        print(f"validate: --space={args.space!r} does not exist", file=sys.stderr)
        return 2
    from hw_profiles import ProfileError, load

    try:
        load(args.hw)
    except ProfileError as e:
        print(f"validate: --hw: {e}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("validate: --device=cuda but no CUDA device is available", file=sys.stderr)
            return 1
    command = "python -m costmodel validate " + " ".join(argv)
    results = {}
    for b in batches:
        points, summary, meta = validate(args.hw, args.device, args.space, args.n, b,
                                         args.runtime, args.seed, args.threads, args.rounds,
                                         args.repeats, args.min_ms / 1e3)
        stem = f"validation_{args.device}_b{b}" + (
            "" if args.runtime == "eager" else f"_{args.runtime}")
        paths = write_results(points, summary, meta, Path(args.out), stem, command)
        results[f"b{b}"] = {"summary": summary.to_dict(), "files": [str(p) for p in paths]}
        if not args.json:
            s = summary
            print(f"batch {b}: n={s.n} Spearman {s.spearman:.3f} Kendall {s.kendall:.3f} "
                  f"median |err| {s.median_abs_error:.1%} within10 {s.within_10:.0%} "
                  f"within25 {s.within_25:.0%} -> {paths[1]}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
