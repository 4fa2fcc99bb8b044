"""Search quality against the ranking truth: which sampler finds the best TRUE front in equal time?

For every sampler (NSGA-II, TPE, GP, random) and seed, ``run_study`` runs the experiment
(default experiments/truth_search.toml: the cifar_half16 space of the ranking truth, the
default accuracy estimator, T4 latency under a budget) for ``--wall-s`` seconds of
wall-clock time (``timeout_s``: equal time, not equal trials, so a sampler's own cost
counts). The feasible Pareto front the search reports is then trained with the ranking
truth's protocol (experiments/ranking_truth.py: the same training, both training seeds,
mean validation accuracy on digits_hard), and the hypervolume of the TRUE (accuracy,
latency) front of those architectures is computed on the experiment's fixed bounds. A
sampler that trusts a poor estimator finds fronts that shrink once trained.

    python experiments/search_truth.py                          # the recorded run
    python experiments/search_truth.py --wall-s 5 --seeds 1 --samplers random --out /tmp/st

Truth accuracies are cached by architecture string in ``<out>.cache.json``, so an
interrupted run continues where it stopped, and architectures found by several runs are
trained once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
for _p in (str(_ROOT), str(_ROOT / "experiments")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import optuna  # noqa: E402
from _provenance import (  # noqa: E402
    provenance_finish,
    provenance_start,
    write_record,
)

DEFAULT_CONFIG = _ROOT / "experiments" / "truth_search.toml"
DEFAULT_TRUTH = _ROOT / "experiments" / "results" / "ranking_truth.json"
DEFAULT_OUT = _ROOT / "experiments" / "results" / "search_truth"
SAMPLERS = ("nsga2", "tpe", "gp", "random")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="search_truth.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment TOML")
    p.add_argument("--truth", default=str(DEFAULT_TRUTH),
                   help="ranking_truth.json whose training protocol is the truth")  # fmt: skip
    p.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated")
    p.add_argument("--seeds", type=int, default=5, help="seeds per sampler (default 5)")
    p.add_argument("--wall-s", type=float, default=60.0,
                   help="wall-clock seconds per search (default 60)")  # fmt: skip
    p.add_argument("--trials", type=int, default=100_000,
                   help="also stop a search after N trials (default: time only)")  # fmt: skip
    p.add_argument("--workers", type=int, default=2,
                   help="processes that train the fronts, 1 thread each")  # fmt: skip
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output stem (.md, .json, .png)")
    args = p.parse_args(argv)
    args.sampler_list = [s.strip() for s in args.samplers.split(",") if s.strip()]
    unknown = [s for s in args.sampler_list if s not in SAMPLERS]
    if unknown:
        p.error(f"--samplers: unknown {unknown}; known {list(SAMPLERS)}")
    if args.seeds < 1 or args.wall_s <= 0 or args.workers < 1:
        p.error(f"--seeds={args.seeds} and --workers={args.workers} must be >= 1, "
                f"--wall-s={args.wall_s} > 0")  # fmt: skip
    return args


class TruthCache:
    """Truth accuracy per architecture string, persisted after every new entry."""

    def __init__(self, path: Path, protocol: dict[str, Any]) -> None:
        self.path, self.protocol = path, protocol
        data = json.loads(path.read_text()) if path.exists() else {}
        same = data.get("protocol") == protocol
        self.values: dict[str, dict[str, float]] = data.get("values", {}) if same else {}
        self.trained_s = 0.0

    def train(self, archs: list[str], workers: int) -> None:
        """Train every architecture not cached yet, ``workers`` processes of one thread each."""
        todo = sorted({a for a in archs if a not in self.values})
        if not todo:
            return
        t0 = time.perf_counter()
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            jobs = [(a, self.protocol) for a in todo]
            for i, (arch, row) in enumerate(pool.imap_unordered(_train_job, jobs), 1):
                self.values[arch] = row
                self.path.write_text(json.dumps({"protocol": self.protocol, "values": self.values}))
                print(f"[truth {i}/{len(todo)}] {(row['acc_seed0'] + row['acc_seed1']) / 2:.3f}",
                      flush=True)  # fmt: skip
        self.trained_s += time.perf_counter() - t0

    def accuracy(self, arch_text: str) -> float:
        v = self.values[arch_text]
        return (v["acc_seed0"] + v["acc_seed1"]) / 2


def _init_worker() -> None:
    import ranking_truth

    ranking_truth._init_worker({})


def _train_job(job: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, float]]:
    import ranking_truth

    import searchspace

    text, protocol = job
    row = ranking_truth.train_twice(searchspace.Architecture.from_string(text), protocol)
    return text, {k: float(v) for k, v in row.items()}


def one_search(
    cfg_path: str, sampler: str, seed: int, wall_s: float, tmp: Path, trials: int
) -> dict:
    from search import load_config, load_existing_study, pareto_trials, run_study
    from search._record import TrialRecord

    cfg = load_config(cfg_path).with_overrides(
        trials=trials, sampler=sampler, seed=seed, study=f"{sampler}-{seed}",
        run_dir=str(tmp / f"{sampler}-{seed}"), mlflow=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    r = run_study(cfg, progress=False, write_artifacts=False, timeout_s=wall_s,
                  local_sampler=True)  # fmt: skip
    wall = time.perf_counter() - t0
    study = load_existing_study(r.study_name, r.storage)
    latency = cfg.objectives[1].name if cfg.objectives[0].name == "accuracy" else None
    assert latency is not None, "the experiment's objectives must be [accuracy, <cost>]"
    front = []
    for t in pareto_trials(study):
        rec = TrialRecord.of(t)
        assert rec is not None
        front.append({"number": t.number, "arch": rec.arch, "estimate": t.values[0],
                      "cost": t.values[1]})  # fmt: skip
    return {
        "sampler": sampler, "seed": seed, "wall_s": wall, "trials": r.n_finished,
        "feasible": r.n_feasible, "estimator_calls": r.estimator_calls,
        "estimated_hv": r.hypervolume, "front": front,
    }  # fmt: skip


def true_hypervolume(
    points: list[tuple[float, float]], bounds: dict[str, Any], names: list[str]
) -> float:
    """Hypervolume of (accuracy, cost) points, normalised by the experiment's fixed bounds."""
    from search._front import hypervolume
    from search._objectives import normalise

    return hypervolume(normalise(p, names, bounds) for p in points)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from search import load_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    truth = json.loads(Path(args.truth).read_text())
    protocol = {**truth["protocol"], "dataset": "digits_hard", "val_images": None}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cache = TruthCache(Path(args.out).with_suffix(".cache.json"), protocol)
    cfg = load_config(args.config)
    names = [o.name for o in cfg.objectives]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in args.sampler_list:
            for seed in range(args.seeds):
                res = one_search(args.config, sampler, seed, args.wall_s, Path(tmp), args.trials)
                runs.append(res)
                print(f"{sampler} seed {seed}: {res['trials']} trials in {res['wall_s']:.0f} s, "
                      f"front {len(res['front'])}, estimated HV {res['estimated_hv']:.4f}",
                      flush=True)  # fmt: skip
    cache.train([f["arch"] for r in runs for f in r["front"]], args.workers)
    for res in runs:
        for f in res["front"]:
            f["truth"] = cache.accuracy(f["arch"])
        pts = [(f["truth"], f["cost"]) for f in res["front"]]
        res["true_hv"] = true_hypervolume(pts, dict(cfg.hv_bounds), names)
    summary = {}
    for s in args.sampler_list:
        mine = [r for r in runs if r["sampler"] == s]
        hv = [r["true_hv"] for r in mine]
        summary[s] = {
            "true_hv_mean": statistics.mean(hv),
            "true_hv_sd": statistics.stdev(hv) if len(hv) > 1 else 0.0,
            "estimated_hv_mean": statistics.mean(r["estimated_hv"] for r in mine),
            "trials_mean": statistics.mean(r["trials"] for r in mine),
            "front_mean": statistics.mean(len(r["front"]) for r in mine),
        }
    best = max(summary, key=lambda s: summary[s]["true_hv_mean"])
    config = Path(args.config).resolve()
    shown = config.relative_to(_ROOT) if config.is_relative_to(_ROOT) else config
    return {"config": str(shown), "objectives": names,
            "hv_bounds": {k: list(v) for k, v in cfg.hv_bounds.items()},
            "constraints": {c.name: c.limit for c in cfg.constraints},
            "estimator": dict(cfg.estimator), "protocol": protocol, "wall_s": args.wall_s,
            "seeds": args.seeds, "runs": runs, "summary": summary, "best": best,
            "truth_training_s": cache.trained_s}  # fmt: skip


def to_markdown(res: dict[str, Any], header: list[str]) -> str:
    lines = [
        "# Search quality against the ranking truth, at equal wall-clock time",
        "",
        *header,
        "",
        f"Experiment `{res['config']}`: objectives {res['objectives']}, constraints "
        f"{res['constraints']}, estimator {res['estimator']}. Each search ran for "
        f"{res['wall_s']:g} s of wall-clock time ({res['seeds']} seeds per sampler); its "
        "feasible Pareto front was then trained with the ranking truth's protocol "
        f"({res['protocol']}; two training seeds, mean accuracy). True HV: hypervolume of "
        "(true accuracy, cost) of those architectures on the experiment's fixed bounds "
        f"{res['hv_bounds']} (reference point at the worst bound). Estimated HV: the same "
        "front with the estimator's scores.",
        "",
        "| sampler | true HV (mean ± sd) | estimated HV | trials in the time | front size |",
        "|---|---|---|---|---|",
    ]
    for s, v in sorted(res["summary"].items(), key=lambda kv: -kv[1]["true_hv_mean"]):
        lines.append(f"| {s} | {v['true_hv_mean']:.4f} ± {v['true_hv_sd']:.4f} | "
                     f"{v['estimated_hv_mean']:.4f} | {v['trials_mean']:.0f} | "
                     f"{v['front_mean']:.1f} |")  # fmt: skip
    lines += ["", f"Best by mean true hypervolume: **{res['best']}**.",
              f"Truth training for the fronts: {res['truth_training_s']:.0f} s."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prov = provenance_start("experiments/search_truth.py", argv)
    res = run(args)
    prov = provenance_finish(prov)
    print(write_record(Path(args.out), prov, res, to_markdown).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
