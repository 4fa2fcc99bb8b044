"""Search quality: hypervolume against trials for NSGA-II, TPE and random search.

Same experiment for every sampler (default: experiments/seed_convs.toml, whose
objectives are analytic: MACs, T4 fp16 latency and params, under latency and
peak-memory constraints), 5 seeds each. Hypervolume is computed on objectives
normalised by the experiment's fixed [hypervolume] bounds (reference point
1, ..., 1; feasible trials only), so numbers are comparable across samplers.

    python experiments/search_quality.py [--config F] [--trials 200] [--seeds 5]

Writes experiments/results/search_quality.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from search import FrontTracker, load_config, load_existing_study, run_study

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ("nsga2", "tpe", "random")


def hv_curve(config_path: str, sampler: str, seed: int, trials: int, tmp: Path) -> tuple[list[float], float]:  # noqa: E501
    cfg = load_config(config_path).with_overrides(
        trials=trials, sampler=sampler, seed=seed, study=f"{sampler}-{seed}", run_dir=str(tmp),
        mlflow=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    r = run_study(cfg, progress=False, write_artifacts=False)
    wall = time.perf_counter() - t0
    study = load_existing_study(r.study_name, r.storage)
    tracker = FrontTracker(cfg)
    curve = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        tracker.add(t)
        curve.append(tracker.hv)
    return curve, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "experiments" / "seed_convs.toml"))
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves: dict[str, list[list[float]]] = {s: [] for s in SAMPLERS}
    walls: dict[str, list[float]] = {s: [] for s in SAMPLERS}
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in SAMPLERS:
            for seed in range(args.seeds):
                c, w = hv_curve(args.config, sampler, seed, args.trials, Path(tmp))
                curves[sampler].append(c)
                walls[sampler].append(w)
                print(f"{sampler} seed {seed}: hv {c[-1]:.4f} in {w:.1f} s", flush=True)
    checkpoints = sorted({min(n, args.trials) for n in (25, 50, 100, 200, 500, args.trials)})
    table = {}
    for s in SAMPLERS:
        arr = np.array(curves[s])
        table[s] = {
            str(n): {"mean": float(arr[:, n - 1].mean()), "std": float(arr[:, n - 1].std())}
            for n in checkpoints
        }
        table[s]["wall_s_mean"] = float(np.mean(walls[s]))  # type: ignore[assignment]
    cfg = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "config": str(Path(args.config).relative_to(ROOT)) if args.config.startswith(str(ROOT))
        else args.config,
        "objectives": [o.name for o in cfg.objectives],
        "hv_bounds": {k: list(v) for k, v in cfg.hv_bounds.items()},
        "constraints": {c.name: c.limit for c in cfg.constraints},
        "trials": args.trials,
        "seeds": args.seeds,
        "note": "hypervolume of feasible trials on objectives normalised by hv_bounds "
                "(v - best) / (worst - best); reference point (1, ..., 1)",
    }  # fmt: skip
    (out / "search_quality.json").write_text(json.dumps({**meta, "hypervolume": table,
                                                         "curves": curves}, indent=1))  # fmt: skip
    lines = [
        f"# Search quality: hypervolume vs trials ({meta['config']}, {args.seeds} seeds)",
        "",
        f"Objectives {meta['objectives']} (MACs = multiply-accumulates), constraints "
        f"{meta['constraints']}; {meta['note']}.",
        "",
        "| sampler | " + " | ".join(f"HV @ {n}" for n in checkpoints) + " | wall s / run |",
        "|---|" + "---|" * (len(checkpoints) + 1),
    ]
    for s in SAMPLERS:
        cells = [f"{table[s][str(n)]['mean']:.4f} ± {table[s][str(n)]['std']:.4f}"  # type: ignore[index]
                 for n in checkpoints]  # fmt: skip
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {table[s]['wall_s_mean']:.1f} |")
    (out / "search_quality.md").write_text("\n".join(lines) + "\n")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    x = np.arange(1, args.trials + 1)
    for s, colour in zip(SAMPLERS, ("tab:red", "tab:blue", "tab:gray"), strict=True):
        arr = np.array(curves[s])
        m, sd = arr.mean(0), arr.std(0)
        ax.plot(x, m, color=colour, label=f"{s} (mean of {args.seeds} seeds)")
        ax.fill_between(x, m - sd, m + sd, color=colour, alpha=0.15)
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (normalised objectives, fixed reference)")
    ax.set_title(f"{cfg.name}: {', '.join(meta['objectives'])}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "search_quality.png", dpi=110)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
