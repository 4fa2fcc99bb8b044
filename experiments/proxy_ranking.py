"""How well do zero-cost proxies rank architectures against short-trained accuracy?

Samples N architectures from a search space (Optuna RandomSampler, fixed seed),
computes every proxy of ``search._estimators`` on one fixed real batch, trains
each architecture for a few epochs on scikit-learn's digits (resized to the
space's resolution) and reports the Spearman and Kendall rank correlations of
each proxy, of ``proxy_rank`` and of the params / MACs baselines against the
validation accuracy. Writes ``<out>.md`` and ``<out>.json``.

    python experiments/proxy_ranking.py                       # the recorded run
    python experiments/proxy_ranking.py --archs 8 --epochs 1 --out /tmp/pr   # smoke run

MACs are multiply-accumulates (``costmodel.count(...).macs``; FLOPs = 2 x MACs).
Every architecture is evaluated independently from its own seed, so results do
not depend on ``--workers``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# The script lives in experiments/; make the repository importable however it is run.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

DEFAULT_SPACE = _ROOT / "searchspace" / "spaces" / "cifar.toml"
DEFAULT_OUT = _ROOT / "experiments" / "results" / "proxy_ranking"
TIMED_KINDS = ("synflow", "naswot", "grad_norm", "snip")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="proxy_ranking.py",
        description="Rank correlation of zero-cost proxies (and params/MACs) with "
        "short-trained validation accuracy over architectures sampled from a space.",
    )
    p.add_argument("--space", default=str(DEFAULT_SPACE), help="search space TOML")
    p.add_argument(
        "--width-scale",
        type=float,
        default=0.5,
        help="multiply every width list of the space by this (then the space's own rounding "
        "applies) to fit the CPU budget; 1 = the space as written (default 0.5)",
    )
    p.add_argument("--archs", type=int, default=50, help="architectures to sample (default 50)")
    p.add_argument("--seed", type=int, default=0, help="sampler and estimator seed (default 0)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs per arch (default 1)")
    p.add_argument("--batch-size", type=int, default=64, help="proxy batch (default 64)")
    p.add_argument("--train-batch-size", type=int, default=32, help="training batch (default 32)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate, cosine to 0 (0.1)")
    p.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    p.add_argument(
        "--timed-archs",
        type=int,
        default=3,
        help="time each proxy alone (one thread) on this many of the archs (default 3)",
    )
    p.add_argument(
        "--retrain-archs",
        type=int,
        default=0,
        help="retrain this many archs with another seed: the noise floor of the target",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output path without suffix")
    p.add_argument("--json", action="store_true", help="print the result JSON to stdout")
    args = p.parse_args(argv)
    for key in ("archs", "epochs", "batch_size", "train_batch_size", "workers"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")
    if not 0.0 < args.width_scale <= 4.0:
        p.error(f"--width-scale={args.width_scale} must be in (0, 4]")
    if args.archs < 3:
        p.error(f"--archs={args.archs} must be >= 3 for a rank correlation")
    return args


# ---------------------------------------------------------------- worker side

_STATE: dict[str, Any] = {}


def _init_worker(cfg: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(1)
    _STATE["cfg"] = cfg


def _estimators(input_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
    from search._estimators import EstimatorConfig, make_estimator

    key = (input_shape, num_classes)
    if key not in _STATE:
        c = _STATE["cfg"]
        base = {"batch_size": c["batch_size"], "seed": c["seed"], "lr": c["lr"]}
        est = {
            kind: make_estimator(EstimatorConfig(kind=kind, **base), input_shape, num_classes)
            for kind in TIMED_KINDS
        }
        base["batch_size"] = c["train_batch_size"]
        est["train"] = make_estimator(
            EstimatorConfig(kind="train", epochs=c["epochs"], **base), input_shape, num_classes
        )
        est["retrain"] = make_estimator(
            EstimatorConfig(kind="train", epochs=c["epochs"], **{**base, "seed": c["seed"] + 1}),
            input_shape,
            num_classes,
        )
        _STATE[key] = est
    return _STATE[key]


def evaluate_arch(job: tuple[int, str, bool, bool]) -> dict[str, Any]:
    import costmodel
    import searchspace
    from search._estimators import PROXY_KINDS

    index, text, timed, retrain = job
    arch = searchspace.Architecture.from_string(text)
    est = _estimators(tuple(arch.input_shape), arch.num_classes)
    specs = arch.lower(batch=1)
    row: dict[str, Any] = {
        "index": index,
        "arch": text,
        "params": sum(costmodel.count(s).params for s in specs),
        "macs": sum(costmodel.count(s).macs for s in specs),
    }
    t = time.perf_counter()
    # one shared pass, exactly what proxy_rank computes per architecture
    row.update(est["synflow"].proxy_values(arch, PROXY_KINDS))
    row["proxy_rank_call_s"] = time.perf_counter() - t
    if timed:
        for kind in TIMED_KINDS:
            t = time.perf_counter()
            value = est[kind].score(arch)
            row[f"{kind}_call_s"] = time.perf_counter() - t
            assert value == row[kind], (kind, value, row[kind])  # alone == shared pass
    t = time.perf_counter()
    row["train_acc"] = est["train"].score(arch)
    row["train_s"] = time.perf_counter() - t
    if retrain:
        row["retrain_acc"] = est["retrain"].score(arch)
    return row


# ---------------------------------------------------------------- driver


def load_scaled_space(path: str, scale: float) -> Any:
    """The space at ``path`` with every ``widths`` list scaled: channels are reduced
    through the space (its validation and width rounding), never by editing archs."""
    import searchspace

    if scale == 1.0:
        return searchspace.load_space(path)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    for table in [data.get("stem", {}), *data.get("stages", []), data.get("head", {})]:
        if "widths" in table:
            table["widths"] = [max(1, round(w * scale)) if w else 0 for w in table["widths"]]
    data["name"] = f"{data.get('name', 'space')}_x{scale:g}"
    return searchspace.parse_space(data, where=f"{path} (widths x{scale:g})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from scipy.stats import kendalltau, spearmanr

    from search._estimators import PROXY_KINDS, EstimatorConfig, rank_combination
    from search._estimators import sample_reference as sample

    t0 = time.perf_counter()
    load0 = os.getloadavg()
    space = load_scaled_space(args.space, args.width_scale)
    archs = sample(space, args.archs, args.seed)
    ref_size = EstimatorConfig().reference_size
    # the estimator's own reference population (space, reference_size, seed) is the
    # first reference_size archs of this sample: same sampler, same seed
    same_ref = archs[:ref_size] == sample(space, min(ref_size, args.archs), args.seed)
    jobs = [
        (i, a.to_string(), i < args.timed_archs, i < args.retrain_archs)
        for i, a in enumerate(archs)
    ]
    cfg = {
        "batch_size": args.batch_size,
        "train_batch_size": args.train_batch_size,
        "seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
    }
    ctx = mp.get_context("spawn")
    rows: list[dict[str, Any]] = []
    with ctx.Pool(args.workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        for row in pool.imap_unordered(evaluate_arch, jobs):
            rows.append(row)
            print(
                f"[{len(rows):3d}/{len(jobs)}] acc={row['train_acc']:.3f} "
                f"train {row['train_s']:.1f}s  {row['arch']}",
                file=sys.stderr,
                flush=True,
            )
    rows.sort(key=lambda r: r["index"])

    # proxy_rank two ways: the vote over this whole population (Abdelfattah et al. 2021),
    # and the estimator's online score against its reference population
    population = {k: [r[k] for r in rows] for k in PROXY_KINDS}
    reference = {k: population[k][:ref_size] for k in PROXY_KINDS}
    for r in rows:
        values = {k: r[k] for k in PROXY_KINDS}
        r["proxy_rank_population"] = rank_combination(values, population)
        r["proxy_rank"] = rank_combination(values, reference)

    acc = np.array([r["train_acc"] for r in rows])
    predictors = [*PROXY_KINDS, "proxy_rank", "proxy_rank_population", "params", "macs"]
    table = []
    for name in predictors:
        x = np.array([r[name] for r in rows], dtype=np.float64)
        rho, p_rho = spearmanr(x, acc)
        tau, p_tau = kendalltau(x, acc)
        table.append(
            {
                "predictor": name,
                "spearman": float(rho),
                "spearman_p": float(p_rho),
                "kendall": float(tau),
                "kendall_p": float(p_tau),
            }
        )
    timing: dict[str, Any] = {}
    for kind in TIMED_KINDS:
        vals = [r[f"{kind}_call_s"] for r in rows if f"{kind}_call_s" in r]
        if vals:
            timing[kind] = {"median_s": statistics.median(vals), "max_s": max(vals), "n": len(vals)}
    shared = [r["proxy_rank_call_s"] for r in rows]
    timing["all_four_shared_pass"] = {
        "median_s": statistics.median(shared),
        "max_s": max(shared),
        "n": len(shared),
    }
    noise = None
    re = [(r["train_acc"], r["retrain_acc"]) for r in rows if "retrain_acc" in r]
    if len(re) >= 3:
        a, b = zip(*re, strict=True)
        noise = {
            "archs": len(re),
            "spearman_seed0_vs_seed1": float(spearmanr(a, b)[0]),
            "kendall_seed0_vs_seed1": float(kendalltau(a, b)[0]),
        }
    return {
        "command": "python " + " ".join(shlex.quote(a) for a in [_rel(sys.argv[0]), *sys.argv[1:]]),
        "space": _rel(args.space),
        "width_scale": args.width_scale,
        "space_widths": {
            "stem": list(space.stem.widths),
            "stages": [list(st.widths) for st in space.stages],
            "head": list(space.head.widths),
        },
        "archs": len(rows),
        "distinct_archs": len({r["arch"] for r in rows}),
        "seed": args.seed,
        "dataset": "digits (sklearn, 1,437 train / 360 val, resized to the space resolution)",
        "input_shape": list(archs[0].input_shape),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_batch_size": args.train_batch_size,
        "lr": args.lr,
        "workers": args.workers,
        "torch_threads_per_worker": 1,
        "reference_size": ref_size,
        "reference_is_first_archs": bool(same_ref),
        "accuracy": {
            "min": float(acc.min()),
            "median": float(np.median(acc)),
            "max": float(acc.max()),
            "chance": 0.1,
        },
        "correlations": table,
        "retrain_noise": noise,
        "timing_one_thread": timing,
        "wall_s": time.perf_counter() - t0,
        "loadavg_start": list(load0),
        "loadavg_end": list(os.getloadavg()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(_ROOT))
    except ValueError:
        return str(path)


def to_markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Zero-cost proxies against short-trained accuracy",
        "",
        "```",
        res["command"],
        "```",
        "",
        f"{res['archs']} architectures ({res['distinct_archs']} distinct) sampled from "
        f"`{res['space']}` with every width list scaled by {res['width_scale']:g} through "
        f"the space (widths: {res['space_widths']}) by Optuna's "
        f"RandomSampler(seed={res['seed']}); input "
        f"{tuple(res['input_shape'])}. Target: validation accuracy after {res['epochs']} "
        f"epoch(s) of SGD (Nesterov 0.9, lr {res['lr']} cosine to 0, weight decay 5e-4, "
        f"batch {res['train_batch_size']}, seed {res['seed']}) on {res['dataset']}. "
        f"Accuracy min / median / max: {res['accuracy']['min']:.3f} / "
        f"{res['accuracy']['median']:.3f} / {res['accuracy']['max']:.3f} (chance 0.1).",
        "",
        "Proxies at initialization on one fixed batch of "
        f"{res['batch_size']} training images. `proxy_rank` is the estimator's score: mean "
        f"rank fraction among its reference population ({res['reference_size']} archs drawn "
        "from the space with the same seed, here the first "
        f"{res['reference_size']} of the sample: {res['reference_is_first_archs']}); "
        "`proxy_rank_population` is the zero-cost paper's vote over all archs of this table. "
        "MACs are multiply-accumulates (FLOPs = 2 x MACs).",
        "",
        "| predictor | Spearman ρ | p | Kendall τ | p |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in res["correlations"]:
        lines.append(
            f"| {row['predictor']} | {row['spearman']:+.3f} | {row['spearman_p']:.2g} | "
            f"{row['kendall']:+.3f} | {row['kendall_p']:.2g} |"
        )
    if res["retrain_noise"]:
        n = res["retrain_noise"]
        lines += [
            "",
            f"Noise floor of the target: the first {n['archs']} archs retrained with seed "
            f"{res['seed'] + 1}: Spearman {n['spearman_seed0_vs_seed1']:+.3f}, Kendall "
            f"{n['kendall_seed0_vs_seed1']:+.3f} between the two seeds' accuracies.",
        ]
    lines += [
        "",
        "Time per proxy call, one torch thread, batch "
        f"{res['batch_size']} at {tuple(res['input_shape'])} (includes building the model):",
        "",
        "| proxy | median s | max s | archs |",
        "|---|---:|---:|---:|",
    ]
    for kind, t in res["timing_one_thread"].items():
        lines.append(f"| {kind} | {t['median_s']:.3f} | {t['max_s']:.3f} | {t['n']} |")
    lines += [
        "",
        f"Wall time {res['wall_s']:.0f} s with {res['workers']} worker process(es); load "
        f"average {res['loadavg_start'][0]:.1f} at start, {res['loadavg_end'][0]:.1f} at end "
        f"({res['cpu_count']} CPUs, shared with other jobs: timings are upper bounds); "
        f"torch {res['torch']}, Python {res['python']}.",
        "",
        "Per-architecture values are in the JSON file next to this one.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.space).is_file():
        print(f"error: --space={args.space} does not exist", file=sys.stderr)
        return 2
    try:
        res = run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(res))
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
