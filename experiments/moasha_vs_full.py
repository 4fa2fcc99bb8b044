"""MO-ASHA against full training: hypervolume against training seconds.

For one experiment config, N candidates are sampled by Optuna's RandomSampler (seeded, so
both arms see the same candidate sequence) and every feasible one is scored by the ``train``
estimator:

- "full": each trains ``--max-budget`` epochs;
- "moasha": the same candidates under the ``[fidelity]`` rung rule (search._fidelity):
  a candidate stops at a rung budget unless it is in the top 1/eta by non-dominated sorting
  of (accuracy at that rung, costs) among the candidates that reached that rung before it.

A MO-ASHA candidate that is never stopped ends with exactly the accuracy of the full arm
(same seed, same schedule); the script checks it. Per trial it records the estimator's
seconds (training plus the rung evaluations; data loading is not counted, and one untimed
warm-up training runs first so that neither arm pays torch's first-call costs) and reports the
hypervolume of the (accuracy at max budget, latency) front of completed feasible trials,
normalised by the experiment's [hypervolume] bounds (search._front.hypervolume), against
cumulative training seconds; and the seconds MO-ASHA needs to reach 90 / 95 / 100 % of the
full arm's final hypervolume.

    python experiments/moasha_vs_full.py                                   # the recorded run
    python experiments/moasha_vs_full.py --candidates 6 --max-budget 3 --out /tmp/m   # smoke

Writes <out>.md, <out>.json and <out>.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The script lives in experiments/; make the repository importable however it is run.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402

import searchspace  # noqa: E402
from search import (  # noqa: E402
    ExperimentConfig,
    TrialRecord,
    hypervolume,
    load_config,
    load_existing_study,
    parse_config,
    run_study,
)
from search._estimators import EstimatorConfig, make_estimator, sample_reference  # noqa: E402
from search._objectives import normalise  # noqa: E402
from search._record import is_feasible  # noqa: E402

DEFAULT_OUT = _ROOT / "experiments" / "results" / "moasha_vs_full"
FRACTIONS = (0.9, 0.95, 1.0)
ARMS = ("full", "moasha")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="moasha_vs_full.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="default", help="experiment TOML or shipped name")
    p.add_argument("--dataset", default="digits", help="the estimator's dataset key")
    p.add_argument("--candidates", type=int, default=60, help="candidates sampled (default 60)")
    p.add_argument("--min-budget", type=int, default=1, help="first rung, epochs (default 1)")
    p.add_argument("--max-budget", type=int, default=9, help="full budget, epochs (default 9)")
    p.add_argument("--eta", type=int, default=3, help="reduction factor (default 3)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampler/estimator seeds")
    p.add_argument("--torch-threads", type=int, default=None, help="torch threads per training")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output path without suffix")
    return p.parse_args(argv)


def arm_config(args: argparse.Namespace, seed: int, arm: str, run_dir: Path) -> ExperimentConfig:
    d = load_config(args.config).to_dict()
    est = {**d["estimator"], "kind": "train", "dataset": args.dataset, "epochs": args.max_budget}
    if args.torch_threads is not None:
        est["torch_threads"] = args.torch_threads
    d.update(
        estimator=est,
        trials=args.candidates,
        seed=seed,
        study=f"{arm}-seed{seed}",
        storage=None,
        run_dir=str(run_dir),
        sampler={"name": "random"},
    )
    d["mlflow"]["enabled"] = False
    d.pop("fidelity", None)
    if arm == "moasha":
        d["fidelity"] = {
            "min_budget": args.min_budget,
            "max_budget": args.max_budget,
            "eta": args.eta,
        }
    return parse_config(d, source=f"{args.config} ({arm})")


def objective_indices(cfg: ExperimentConfig) -> tuple[int, int]:
    names = [o.metric.metric for o in cfg.objectives]
    if "accuracy" not in names or "latency_s" not in names:
        raise SystemExit(f"config objectives {names} need 'accuracy' and a 'latency_s'")
    return names.index("accuracy"), names.index("latency_s")


def warm_up(cfg: ExperimentConfig) -> None:
    """One untimed epoch of training, so that torch's first-call costs hit neither arm."""
    space = searchspace.load_space(cfg.space)
    arch = sample_reference(space, 1, cfg.seed)[0]
    ecfg = EstimatorConfig.from_dict({**cfg.estimator, "seed": cfg.seed, "epochs": 1})
    make_estimator(ecfg, tuple(arch.input_shape), arch.num_classes).score(arch)


def run_arm(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run one arm; per trial: state, arch, seconds, accuracy, latency, and the HV curve."""
    r = run_study(cfg, progress=False, write_artifacts=False, local_sampler=True)
    study = load_existing_study(r.study_name, r.storage)
    ia, il = objective_indices(cfg)
    names = [cfg.objectives[ia].name, cfg.objectives[il].name]
    points: list[tuple[float, ...]] = []
    rows, cum_s = [], 0.0
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        rec = TrialRecord.of(t) or TrialRecord(arch="")
        cum_s += rec.estimator_s or 0.0
        done = is_feasible(t) and not rec.estimator_skipped
        if done:
            points.append(normalise([t.values[ia], t.values[il]], names, cfg.hv_bounds))
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "arch": rec.arch,
                "feasible": rec.feasible,
                "trained": not rec.estimator_skipped,
                "estimator_s": rec.estimator_s,
                "cumulative_s": cum_s,
                "accuracy": t.values[ia] if done else None,
                "latency_s": t.values[il] if done else None,
                "rungs": [list(x) for x in rec.rungs],
                "stopped_at_budget": rec.stopped_at_budget,
                "hypervolume": hypervolume(points),
            }
        )
    return {
        "trials": rows,
        "total_s": cum_s,
        "final_hv": rows[-1]["hypervolume"] if rows else 0.0,
        "n_stopped": r.n_stopped,
        "n_trained": sum(x["trained"] for x in rows),
    }


def time_to_reach(rows: list[dict[str, Any]], target: float) -> float | None:
    """Cumulative training seconds at which the hypervolume first reaches ``target``."""
    if target <= 0:
        return 0.0
    for r in rows:
        if r["hypervolume"] >= target * (1 - 1e-12):
            return r["cumulative_s"]
    return None


def compare(full: dict[str, Any], mo: dict[str, Any]) -> dict[str, Any]:
    ff, mf = full["trials"], mo["trials"]
    same = [a["arch"] for a in ff] == [b["arch"] for b in mf]
    # The invariant: a candidate MO-ASHA never stopped has the full arm's accuracy exactly.
    mismatches = [
        b["trial"]
        for a, b in zip(ff, mf, strict=False)
        if b["state"] == "COMPLETE" and b["trained"] and a["accuracy"] != b["accuracy"]
    ]
    reach = {}
    for f in FRACTIONS:
        target = f * full["final_hv"]
        reach[f"{f:.0%}"] = {
            "full_s": time_to_reach(ff, target),
            "moasha_s": time_to_reach(mf, target),
        }
    return {
        "same_candidates": same,
        "accuracy_mismatches": mismatches,
        "speedup_total_s": full["total_s"] / mo["total_s"] if mo["total_s"] else None,
        "reach": reach,
    }


def fmt_s(v: float | None) -> str:
    return "not reached" if v is None else f"{v:.1f}"


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = [
        "# MO-ASHA vs full training: hypervolume against training seconds",
        "",
        f"Command: `{m['command']}`",
        "",
        f"Date (UTC): {m['date_utc']}; host: {m['host']}; torch {m['torch']}; load average "
        f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end.",
        "",
        f"Config `{m['config']}`, dataset `{m['dataset']}`, {m['candidates']} candidates "
        f"(RandomSampler, same sequence in both arms), budgets in epochs: min {m['min_budget']}, "
        f"max {m['max_budget']}, eta {m['eta']} (rungs {m['rungs']}). Hypervolume of the "
        f"(accuracy at max budget, {m['latency']}) front of completed feasible trials, "
        f"normalised by the config's bounds {m['hv_bounds']}, reference point (1, 1). "
        "Seconds: the estimator's (training + rung evaluations), summed over trials.",
        "",
        "| seed | arm | trained | stopped | training s | final HV | "
        + " | ".join(f"s to {k} of full HV" for k in res["seeds"][0]["compare"]["reach"])
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(FRACTIONS),
    ]
    for s in res["seeds"]:
        for arm in ARMS:
            a = s[arm]
            reach = [fmt_s(v[f"{arm}_s"]) for v in s["compare"]["reach"].values()]
            lines.append(
                f"| {s['seed']} | {arm} | {a['n_trained']} | {a['n_stopped']} | "
                f"{a['total_s']:.1f} | {a['final_hv']:.4f} | " + " | ".join(reach) + " |"
            )
    lines.append("")
    for s in res["seeds"]:
        c = s["compare"]
        ratio = "n/a" if c["speedup_total_s"] is None else f"{c['speedup_total_s']:.2f}x"
        lines.append(
            f"- seed {s['seed']}: same candidates in both arms: {c['same_candidates']}; "
            f"completed MO-ASHA trials whose accuracy differs from full training: "
            f"{c['accuracy_mismatches'] or 'none'}; training seconds full / MO-ASHA: {ratio}"
        )
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # Agg via Figure.savefig, no display needed

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for s, colour in zip(
        res["seeds"], ("tab:blue", "tab:red", "tab:green", "tab:gray") * 8, strict=False
    ):
        for arm, style in (("full", "-"), ("moasha", "--")):
            rows = s[arm]["trials"]
            xs = [0.0] + [r["cumulative_s"] for r in rows]
            ys = [0.0] + [r["hypervolume"] for r in rows]
            ax.step(
                xs,
                ys,
                where="post",
                color=colour,
                linestyle=style,
                label=f"{arm}, seed {s['seed']}",
            )
    ax.set_xlabel("cumulative training seconds")
    ax.set_ylabel("hypervolume (accuracy, latency; normalised)")
    ax.set_title(
        f"MO-ASHA vs full training: {res['meta']['config']}, {res['meta']['dataset']}", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load0 = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfgs = {arm: arm_config(args, seed, arm, Path(tmp) / f"s{seed}") for arm in ARMS}
            warm_up(cfgs["full"])
            out: dict[str, Any] = {"seed": seed}
            for arm in ARMS:
                t0 = time.perf_counter()
                out[arm] = run_arm(cfgs[arm])
                print(
                    f"seed {seed} {arm}: {out[arm]['n_trained']} trained, "
                    f"{out[arm]['n_stopped']} stopped, {out[arm]['total_s']:.1f} training s, "
                    f"HV {out[arm]['final_hv']:.4f} ({time.perf_counter() - t0:.1f} s wall)",
                    flush=True,
                )
            out["compare"] = compare(out["full"], out["moasha"])
            seeds.append(out)
    cfg = cfgs["moasha"]
    ia, il = objective_indices(cfg)
    meta = {
        "command": "python "
        + " ".join(
            shlex.quote(a)
            for a in [
                str(Path(sys.argv[0]).resolve().relative_to(_ROOT))
                if Path(sys.argv[0]).resolve().is_relative_to(_ROOT)
                else sys.argv[0],
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "date_utc": started.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "torch": torch.__version__,
        "torch_threads": args.torch_threads or torch.get_num_threads(),
        "loadavg_start": list(load0),
        "loadavg_end": list(os.getloadavg()),
        "config": args.config,
        "dataset": args.dataset,
        "candidates": args.candidates,
        "min_budget": args.min_budget,
        "max_budget": args.max_budget,
        "eta": args.eta,
        "rungs": list(cfg.fidelity.rungs()) if cfg.fidelity else [],
        "accuracy": cfg.objectives[ia].name,
        "latency": cfg.objectives[il].name,
        "hv_bounds": {
            cfg.objectives[i].name: list(cfg.hv_bounds[cfg.objectives[i].name]) for i in (ia, il)
        },
    }
    res = {"meta": meta, "seeds": seeds}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    plot(res, out.with_suffix(".png"))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
