"""The search framework's own cost per trial, without the accuracy estimator.

The target: at most 10 ms per trial at 1,000 trials with NSGA-II, a
persistent storage (journal file) and MLflow on (local sqlite store), so
that the framework stays small beside even the cheapest accuracy proxy.

The run is the default experiment with ``estimator.kind = "none"`` (so every
second counted is the framework's: sampler, costing on two hardware targets,
constraints, storage, progress tracking, MLflow), without the end-of-run
artifacts (plots, exports, log_model), which are timed separately. A third,
instrumented run says where the time goes (exclusive wall time per part).

    python experiments/bench_search_overhead.py [--trials 1000] [--out experiments/results]
    python experiments/bench_search_overhead.py --md-only   # the .md from the .json, no run

Both files are written by this script: the JSON holds the figures, the
Markdown is generated from it (command, date and load average at the top).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from search import load_config, run_study


def run(trials: int, run_dir: Path, mlflow: bool, study: str) -> tuple[float, float, object]:
    """Wall and CPU seconds (of this process: the machine is shared, so CPU time is the
    steadier figure) of one run of the default experiment without an estimator."""
    cfg = load_config().with_overrides(
        trials=trials, study=study, run_dir=str(run_dir), estimator="none", mlflow=mlflow
    )
    cfg = dataclasses.replace(cfg, mlflow=dataclasses.replace(cfg.mlflow, log_models=0))
    t0, c0 = time.perf_counter(), time.process_time()
    # as `python -m search run` does in one process
    result = run_study(cfg, progress=False, write_artifacts=False, local_sampler=True)
    return time.perf_counter() - t0, time.process_time() - c0, result


class Buckets:
    """Exclusive wall time per bucket: a call inside another bucket's call counts for the inner.

    Wraps the entry points of each part (sampler methods, costing, storage methods,
    MLflow view methods); what is left of the run's wall time is Optuna's study loop
    (trial bookkeeping, the deep copy of each finished trial for the callback) and ours.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[list[Any]] = []  # [bucket, start]

    def wrap(self, owner: Any, name: str, bucket: str) -> None:
        fn = getattr(owner, name)
        me = self

        def timed(*args: Any, **kw: Any) -> Any:
            now = time.perf_counter()
            if me._stack:
                top = me._stack[-1]
                me.seconds[top[0]] = me.seconds.get(top[0], 0.0) + now - top[1]
            me._stack.append([bucket, now])
            try:
                return fn(*args, **kw)
            finally:
                end = time.perf_counter()
                b, t0 = me._stack.pop()
                me.seconds[b] = me.seconds.get(b, 0.0) + end - t0
                if me._stack:
                    me._stack[-1][1] = end

        setattr(owner, name, timed)


def instrument(buckets: Buckets) -> None:
    import optuna.samplers as samplers

    from search import ExperimentConfig, FrontTracker, _mlflow, _observers, _private_apis

    for m in ("infer_relative_search_space", "sample_relative", "sample_independent",
              "before_trial", "after_trial"):  # fmt: skip
        buckets.wrap(samplers.NSGAIISampler, m, "sampler (NSGA-II)")
    buckets.wrap(ExperimentConfig, "cost_reports", "costing (costmodel.estimate, 2 targets)")
    buckets.wrap(FrontTracker, "add", "front + hypervolume tracking")
    import searchspace

    buckets.wrap(searchspace, "sample", "searchspace.sample (minus sampler/storage)")
    journal = _private_apis.BatchingJournalStorage
    storage_methods = [
        m for m in dir(journal)
        if not m.startswith("__") and callable(getattr(journal, m))
        and m.split("_")[0] in ("get", "set", "create", "flush", "close", "check")
    ]  # fmt: skip
    for m in storage_methods:
        buckets.wrap(journal, m, "storage (journal file)")
    for m in ("ensure_parent", "write_children", "log_parent_metrics", "update_pareto",
              "log_missing", "finish_parent"):  # fmt: skip
        buckets.wrap(_mlflow.MlflowView, m, "MLflow (batched children, parent metrics)")
    buckets.wrap(_observers, "child_record", "MLflow (batched children, parent metrics)")


SETUP = (
    "Default experiment (cifar space, two hardware targets: T4 fp16 and Jetson Orin fp16, "
    'three constraints), `estimator.kind = "none"`, NSGA-II (population 20), journal-file '
    "storage, MLflow on a local sqlite store, run the way `python -m search run` runs it "
    "(`local_sampler=True`)."
)
# Measured while the storage and MLflow paths were being changed, not by this script's
# runs: kept as the record of why the code is as it is.
HISTORY = """What made the difference (earlier development runs on the same machine, 150-300 trials;
not in the JSON):

| change | wall ms / trial | CPU ms / trial |
|---|---|---|
| Optuna `JournalFileBackend` as is (fsync per call, ~32 calls a trial), MLflow off | 210 | - |
| + batched trial writes, fsync at most once a second (`search/_private_apis.py`) | 24 | 11-14 |
| + sampler on an in-memory copy, one record per finished trial (`local_sampler`) | 19 | 9.4 |
| MLflow: `MlflowClient` create_run + log_batch + set_terminated per child | +42 | - |
| MLflow: children inserted in one transaction per flush (`bulk_insert_child_runs`) | +1.3 | +2.1 |

Durability: every finished trial is written and flushed to the OS before the next
trial starts (a killed process loses nothing finished); the journal is fsynced at most
once a second and at the end of a run, so an OS crash or power cut can lose the last
second."""


def _load(res: dict[str, Any], key: str) -> str:
    v = res.get(key)
    return "/".join(f"{x:.2f}" for x in v) if v else "not recorded"


def markdown(res: dict[str, Any]) -> str:
    """The report, generated from the JSON ``res`` alone."""
    n = res["trials"]
    runs = [k for k in ("journal, MLflow off", "journal, MLflow on") if k in res]
    where_key = "where the time goes (MLflow on; ms per trial, wall, exclusive)"
    where = res.get(where_key, {})
    fixed_key = "first_run_fixed_s (imports, MLflow store creation, 3 trials)"
    art_key = "end_of_run_artifacts_s (csv, json, plots, exports; once per run)"
    on = res.get("journal, MLflow on", {})
    lines = [
        "# Search framework overhead per trial (no accuracy estimator)",
        "",
        "Generated by `experiments/bench_search_overhead.py` from `bench_search_overhead.json`.",
        "",
        f"Command: `{res.get('command', 'not recorded (an older version of the script)')}`",
        f"Date: {res.get('date', 'not recorded (an older version of the script)')}; machine "
        f"{res.get('machine')}; Python {res.get('python')}, Optuna {res.get('optuna')}; "
        f"load average (1/5/15 min) {_load(res, 'load_avg_at_start')} at the start, "
        f"{_load(res, 'load_avg_at_end')} at the end.",
        "",
        SETUP + f" {n:,} trials a run.",
        "",
        f"| run ({n:,} trials) | wall ms / trial | CPU ms / trial | finished | feasible |",
        "|---|---|---|---|---|",
        *(
            f"| {k} | {res[k]['ms_per_trial']:.1f} | {res[k]['cpu_ms_per_trial']:.1f} "
            f"| {res[k]['finished']} | {res[k]['feasible']} |"
            for k in runs
        ),
        "",
        "Target: at most 10 ms per trial with NSGA-II, persistent storage and MLflow on: "
        + (
            ("met" if on["ms_per_trial"] <= 10 else "missed")
            + f" ({on['ms_per_trial']:.2f} ms wall, {on['cpu_ms_per_trial']:.2f} ms CPU)."
            if on
            else "no MLflow-on run recorded."
        ),
        "",
    ]
    if where:
        lines += [
            "Where the time goes (a third, instrumented run with timers on each part's entry "
            f"points, MLflow on: {where['wall_ms_per_trial']:.1f} wall ms a trial; the timers "
            "add their own cost; exclusive wall ms per trial):",
            "",
            "| part | ms / trial |",
            "|---|---|",
            *(f"| {k} | {v:.2f} |" for k, v in where.items() if k != "wall_ms_per_trial"),
            "",
        ]
    lines += [
        "Fixed costs, once per run, not per trial: first run in a fresh directory (imports, "
        f"MLflow store creation, 3 trials) {res.get(fixed_key, float('nan')):.1f} s; "
        f"end-of-run artifacts (CSV, JSON, plots, exported sources) "
        f"{res.get(art_key, float('nan')):.1f} s for {n:,} trials.",
        "",
        HISTORY,
    ]
    return "\n".join(lines) + "\n"


def write_markdown(out: Path) -> Path:
    md = out / "bench_search_overhead.md"
    md.write_text(markdown(json.loads((out / "bench_search_overhead.json").read_text())))
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument(
        "--md-only",
        action="store_true",
        help="only regenerate the .md from the .json in --out (no benchmark)",
    )
    args = ap.parse_args()
    if args.md_only:
        print(f"wrote {write_markdown(Path(args.out))}")
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    res: dict[str, object] = {
        "trials": args.trials,
        "command": "PYTHONPATH=. python experiments/bench_search_overhead.py "
        + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "optuna": optuna.__version__,
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        # warm imports (torch, mlflow, sqlalchemy) and create the MLflow store once: the
        # figures below are per-trial costs; store creation is reported on its own.
        t0 = time.perf_counter()
        run(3, base, True, "warm")
        res["first_run_fixed_s (imports, MLflow store creation, 3 trials)"] = round(
            time.perf_counter() - t0, 3
        )
        for label, mlflow in (("journal, MLflow off", False), ("journal, MLflow on", True)):
            study = label.replace(" ", "").replace(",", "-")
            wall, cpu, r = run(args.trials, base, mlflow, study)
            res[label] = {
                "wall_s": round(wall, 3),
                "ms_per_trial": round(wall / args.trials * 1000, 3),
                "cpu_s": round(cpu, 3),
                "cpu_ms_per_trial": round(cpu / args.trials * 1000, 3),
                "finished": r.n_finished,  # type: ignore[attr-defined]
                "feasible": r.n_feasible,  # type: ignore[attr-defined]
                "mlflow_error": r.mlflow_error,  # type: ignore[attr-defined]
            }
            print(label, res[label], flush=True)
        buckets = Buckets()
        instrument(buckets)
        wall, _, _ = run(args.trials, base, True, "instrumented")
        per = {k: v / args.trials * 1000 for k, v in buckets.seconds.items()}
        per["Optuna study loop + run_study bookkeeping (the rest)"] = (
            wall / args.trials * 1000 - sum(per.values())
        )
        res["where the time goes (MLflow on; ms per trial, wall, exclusive)"] = {
            "wall_ms_per_trial": round(wall / args.trials * 1000, 3),
            **{k: round(v, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1])},
        }
        # end-of-run work, once per run: result files, plots, exports (not per trial)
        cfg = load_config().with_overrides(study="journal-MLflowon", run_dir=str(base),
                                           estimator="none")  # fmt: skip
        from search import create_or_load_study
        from search._results import write_results

        study = create_or_load_study(cfg)
        t0 = time.perf_counter()
        write_results(study, cfg, base / "artifacts")
        res["end_of_run_artifacts_s (csv, json, plots, exports; once per run)"] = round(
            time.perf_counter() - t0, 3
        )
    res["load_avg_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_search_overhead.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    print(f"wrote {write_markdown(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
