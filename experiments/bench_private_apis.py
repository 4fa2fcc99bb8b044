"""What each private Optuna/MLflow API in search/_private_apis.py saves over the public one.

    python experiments/bench_private_apis.py [--children 100] [--out experiments/results]

- journal: one trial of a shared study (30 sampled params, 2 constraints, the trial record)
  on Optuna's ``JournalFileBackend`` against the batching journal with group commit, and one
  ``study.add_trial`` (what a single process writes per trial) on each;
- MLflow child runs: ``create_run`` + ``log_batch`` + ``set_terminated`` per run against one
  bulk insert per 100 runs (sqlite store);
- for the record, the public path kept for correcting Pareto membership at the end of a run
  (``MlflowView.update_pareto``: one ``log_batch`` per corrected run; about 90 corrections per
  1,000 trials of experiments/seed_convs.toml, 2 of the default experiment).

Figures are wall milliseconds on whatever machine runs this (a shared machine is noisy: run
it twice). Writes OUT/bench_private_apis.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

from search._mlflow import TAG_PARETO, ChildRecord, MlflowView
from search._private_apis import bulk_insert_child_runs
from search._storage import open_storage

N_PARAMS = 30


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    xs = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(N_PARAMS)]
    trial.set_constraint("params", -0.1)
    trial.set_constraint("latency_s", -0.2)
    trial.set_user_attr("roofnas", {"arch": "a" * 200, "costs": {"t4": {"params": 1.0}}})
    return sum(xs), -sum(xs)


def journal(tmp: Path, trials: int) -> dict[str, Any]:
    """ms per shared-study trial and per add_trial, Optuna's journal against ours."""
    source = optuna.create_study(directions=["minimize", "minimize"])
    source.optimize(_objective, n_trials=trials)
    out: dict[str, Any] = {}
    makers: dict[str, Callable[[str], Any]] = {
        "optuna JournalFileBackend (public)": lambda p: JournalStorage(JournalFileBackend(p)),
        "batching journal, group commit (private)": lambda p: open_storage(p),
    }
    for name, make in makers.items():
        storage = make(str(tmp / f"{len(out)}.journal"))
        study = optuna.create_study(
            storage=storage, directions=["minimize", "minimize"],
            sampler=optuna.samplers.RandomSampler(seed=0),
        )  # fmt: skip
        t0 = time.perf_counter()
        study.optimize(_objective, n_trials=trials)
        t1 = time.perf_counter()
        for t in source.trials:
            study.add_trial(t)
        t2 = time.perf_counter()
        out[name] = {
            "shared_study_ms_per_trial": round((t1 - t0) / trials * 1e3, 3),
            "add_trial_ms": round((t2 - t1) / trials * 1e3, 3),
        }
    return out


def _records(n: int, first: int) -> list[ChildRecord]:
    metrics = {f"t{k}/m{j}": 1.0 for k in range(2) for j in range(5)}
    metrics |= {"feasible": 1.0, "pareto": 0.0, "objective/accuracy": 0.5}
    return [
        ChildRecord(
            first + i, "FINISHED", 1000, 2000, {"arch": "x" * 300, "trial_number": str(first + i)},
            {**metrics, "trial_number": float(first + i)},
            {"roofnas.trial_number": str(first + i), TAG_PARETO: "false"},
        )
        for i in range(n)
    ]  # fmt: skip


def mlflow_children(tmp: Path, n_client: int) -> dict[str, Any]:
    """ms per child run (client calls against one transaction) and per Pareto correction."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    view = MlflowView(f"sqlite:///{tmp / 'mlflow.db'}", "bench", "bench", tmp / "art")
    view.ensure_parent(study)
    assert view.experiment_id is not None and view.parent_run_id is not None
    t0 = time.perf_counter()
    client_ids = [view._create_via_client(r) for r in _records(n_client, 0)]
    t1 = time.perf_counter()
    bulk_ids: list[str] = []
    for first in range(100_000, 101_000, 100):
        ids = bulk_insert_child_runs(
            view.client, view.experiment_id, view.parent_run_id, _records(100, first)
        )
        assert ids is not None, "the bulk insert fell back: a schema this code does not know"
        bulk_ids += ids
    t2 = time.perf_counter()
    view.logged = {i: (rid, False) for i, rid in enumerate(client_ids)}
    assert view.update_pareto(set(range(n_client))) == n_client
    t3 = time.perf_counter()
    public = "create_run + log_batch + set_terminated (public)"
    return {
        "child_run_ms": {
            public: round((t1 - t0) / n_client * 1e3, 3),
            "bulk insert, 100 runs a transaction (private)": round((t2 - t1) / 1000 * 1e3, 3),
        },
        "pareto_correction_ms_per_run (public log_batch, kept)": round(
            (t3 - t2) / n_client * 1e3, 3
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200, help="journal trials (default 200)")
    ap.add_argument("--children", type=int, default=100,
                    help="child runs written through the client (default 100)")  # fmt: skip
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    res: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "optuna": optuna.__version__,
        "mlflow": mlflow.__version__,
    }
    with tempfile.TemporaryDirectory() as tmp:
        res["journal"] = journal(Path(tmp), args.trials)
        print(json.dumps(res["journal"], indent=1), flush=True)
        res["mlflow_sqlite"] = mlflow_children(Path(tmp), args.children)
    res["load_avg_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_private_apis.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
