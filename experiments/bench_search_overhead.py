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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    res: dict[str, object] = {
        "trials": args.trials,
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
