"""Throughput of several workers on one study: PostgreSQL against the journal file.

    .venv/bin/python experiments/bench_workers.py                  # writes results/bench_workers.*
    .venv/bin/python experiments/bench_workers.py --trials 30 --workers 1 2 --storages journal

For each storage (journal file, PostgreSQL), objective (analytic costs only; a zero-cost proxy
estimator) and worker count (1, 2, 4), a fresh study gets a global budget of ``--trials``
trials, worked by that many processes through ``search._budget.optimize_shared`` (the code
path of ``python -m search run --workers N``). Workers import, open the storage and load their
estimator first, then wait at a barrier: the clock covers only the trials. Each worker
times where its time goes: the sampler (NSGA-II), the objective's analytic part (sampling the
architecture, costing it on the profile), the accuracy estimator, and the rest (Optuna's storage
reads and writes, the global-budget checks, heartbeats).

PostgreSQL: $ROOFNAS_TEST_POSTGRES_URL, else a throwaway server started with
.ci/postgres.sh with the server's default durability (ROOFNAS_PG_DURABLE=1).
When no server can be had, the PostgreSQL rows are left out and the report says why.
MLflow logging is off here: it is measured by experiments/bench_search_overhead.py.
Times are wall clock (time.perf_counter), one run per row; the report starts with the
command, date, machine and load average (experiments/_provenance.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _provenance import WALL_CLOCK, header_lines, provenance_finish, provenance_start

REPO = Path(__file__).resolve().parents[1]
# The repository's packages first, also in the spawned workers (which re-import this module):
# `python experiments/x.py` puts experiments/ on sys.path, not the repository.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
RESULTS = REPO / "experiments" / "results"
SPACE = REPO / "searchspace" / "spaces" / "cifar.toml"
HW = "t4"
PROXY = {"kind": "synflow", "dataset": "digits", "batch_size": 16, "torch_threads": 1}
# An expensive estimator (about a second a trial here): where several workers pay off.
TRAIN = {
    "kind": "train",
    "dataset": "digits",
    "epochs": 1,
    "batch_size": 64,
    "max_train_samples": 200,
    "max_val_samples": 100,
    "torch_threads": 1,
}
ESTIMATORS = {"analytic": {"kind": "none"}, "proxy": PROXY, "train": TRAIN}
OBJECTIVES = ("analytic", "proxy", "train")
STORAGES = ("journal", "postgres")


@dataclass
class WorkerTimes:
    """Seconds one worker spent in each part, summed over its trials."""

    trials: int = 0
    wall_s: float = 0.0
    sampler_s: float = 0.0  # sample_relative / sample_independent / infer_relative_search_space
    analytic_s: float = 0.0  # searchspace.sample (minus the sampler) + costmodel.estimate
    estimator_s: float = 0.0  # the accuracy estimator's score()
    budget_s: float = 0.0  # the global-budget checks (reads of the study's trials)
    other_s: float = 0.0  # the rest: storage I/O (ask, tell, heartbeats), Optuna bookkeeping


@dataclass
class Row:
    storage: str
    objective: str
    workers: int
    trials: int
    complete: int
    wall_s: float
    trials_per_s: float
    # per finished trial, summed over workers (worker-seconds per trial)
    sampler_ms: float
    analytic_ms: float
    estimator_ms: float
    budget_ms: float
    other_ms: float
    per_worker_trials: list[int] = field(default_factory=list)


def _time_budget(times: WorkerTimes) -> None:
    """Adds the time of the global-budget checks to ``times.budget_s`` (patches the class)."""
    from search._budget import GlobalBudget

    for name in ("status", "is_surplus"):
        inner = getattr(GlobalBudget, name)

        def timed(self: Any, *args: Any, _inner: Callable[..., Any] = inner, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _inner(self, *args, **kw)
            finally:
                times.budget_s += time.perf_counter() - t0

        setattr(GlobalBudget, name, timed)


def _time_sampler(sampler: Any, times: WorkerTimes) -> None:
    """Adds the time spent in the sampler's hooks to ``times.sampler_s`` (patches the instance)."""
    for name in (
        "infer_relative_search_space",
        "sample_relative",
        "sample_independent",
        "before_trial",
        "after_trial",
    ):
        inner = getattr(sampler, name)

        def timed(*args: Any, _inner: Callable[..., Any] = inner, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _inner(*args, **kwargs)
            finally:
                times.sampler_s += time.perf_counter() - t0

        setattr(sampler, name, timed)


# The experiment: the cifar space, T4 fp16 batch 1, NSGA-II; a lenient budget so that every
# candidate reaches the estimator (the default experiment's budgets reject most of them first).
def _config(kind: str, seed: int) -> Any:
    from search._config import parse_config

    return parse_config(
        {
            "name": "bench-workers",
            "space": str(SPACE),
            "objectives": ["accuracy", "latency_s"],
            "hardware": [{"profile": HW, "precision": "fp16", "batch": 1}],
            "constraints": {"params": 1e9},
            "sampler": {"name": "nsga2", "population_size": 20},
            "seed": seed,
            "estimator": ESTIMATORS[kind],
            "hypervolume": {"latency_s": [0.0, 1e-3]},
            "mlflow": {"enabled": False},
        },
        source="bench_workers",
    )


class _TimedEstimator:
    """The accuracy estimator, timed."""

    def __init__(self, inner: Any, times: WorkerTimes) -> None:
        self._inner = inner
        self._times = times
        self.name = getattr(inner, "name", "estimator")

    def score(self, arch: Any) -> float:
        t0 = time.perf_counter()
        try:
            return self._inner.score(arch)
        finally:
            self._times.estimator_s += time.perf_counter() - t0


def _make_objective(kind: str, seed: int, times: WorkerTimes) -> Callable[[Any], Any]:
    """The search's own per-trial function (``search.TrialEvaluator``), timed by part.

    The estimator (and its data) is made here, before the clock starts.
    """
    import searchspace
    from search._estimators import EstimatorConfig, make_estimator
    from search._evaluate import TrialEvaluator

    cfg = _config(kind, seed)
    space = searchspace.load_space(cfg.space)
    shape = (space.input_channels, space.resolutions[0], space.resolutions[0])
    ecfg = EstimatorConfig.from_dict({"seed": seed, **cfg.estimator})
    estimator = _TimedEstimator(make_estimator(ecfg, shape, space.num_classes), times)
    inner = TrialEvaluator(cfg, estimator)

    def objective(trial: Any) -> Any:
        t0 = time.perf_counter()
        s0, e0 = times.sampler_s, times.estimator_s
        try:
            return inner(trial)
        finally:
            spent = time.perf_counter() - t0
            times.analytic_s += spent - (times.sampler_s - s0) - (times.estimator_s - e0)

    return objective


def _sampler(seed: int) -> Any:
    from search._study import make_sampler

    return make_sampler(_config("analytic", seed))


def _worker(
    storage_url: str,
    study_name: str,
    kind: str,
    total: int,
    seed: int,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    import optuna
    import torch

    from search._budget import optimize_shared
    from search._storage import open_storage

    torch.set_num_threads(1)  # one core per worker: the machine's cores are the workers
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    times = WorkerTimes()
    storage = open_storage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=_sampler(seed))
    _time_sampler(study.sampler, times)
    _time_budget(times)
    objective = _make_objective(kind, seed, times)
    counted = {"n": 0}

    def count(_study: Any, _trial: Any) -> None:
        counted["n"] += 1

    ready.put(os.getpid())
    go.wait()
    t0 = time.perf_counter()
    optimize_shared(study, objective, total_trials=total, callbacks=[count])
    close = getattr(storage, "close", None)  # the journal holds a trial's writes until its end
    if close is not None:
        close()
    times.wall_s = time.perf_counter() - t0
    times.trials = counted["n"]
    times.other_s = (
        times.wall_s - times.sampler_s - times.analytic_s - times.estimator_s - times.budget_s
    )
    out.put(asdict(times))


def _collect(queue: Any, procs: Sequence[Any], what: str) -> list[Any]:
    """One item per worker from ``queue``; raises at once if a worker died instead."""
    import queue as queue_mod

    items: list[Any] = []
    while len(items) < len(procs):
        try:
            items.append(queue.get(timeout=1.0))
        except queue_mod.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                raise RuntimeError(
                    f"a worker died before sending its {what}: exit codes {dead}"
                ) from None
    return items


def _create_study(storage_url: str, study_name: str, seed: int) -> None:
    import optuna

    from search._storage import open_storage

    optuna.create_study(
        storage=open_storage(storage_url),
        study_name=study_name,
        directions=["maximize", "minimize"],
        sampler=_sampler(seed),
    )


def run_one(
    storage: str, storage_url: str, kind: str, n_workers: int, total: int, seed: int
) -> Row:
    import optuna

    from search._storage import open_storage

    study_name = f"bench-{storage}-{kind}-{n_workers}"
    _create_study(storage_url, study_name, seed)
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    args = (storage_url, study_name, kind, total, seed, ready, go, out)
    procs = [ctx.Process(target=_worker, args=args) for _ in range(n_workers)]
    for p in procs:
        p.start()
    _collect(ready, procs, "ready")
    go.set()
    t0 = time.perf_counter()
    results = _collect(out, procs, "results")
    wall_s = time.perf_counter() - t0
    for p in procs:
        p.join()
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    def per_trial_ms(key: str) -> float:
        return 1e3 * sum(r[key] for r in results) / max(complete, 1)

    return Row(
        storage=storage,
        objective=kind,
        workers=n_workers,
        trials=total,
        complete=complete,
        wall_s=round(wall_s, 3),
        trials_per_s=round(complete / wall_s, 3),
        sampler_ms=round(per_trial_ms("sampler_s"), 2),
        analytic_ms=round(per_trial_ms("analytic_s"), 2),
        estimator_ms=round(per_trial_ms("estimator_s"), 2),
        budget_ms=round(per_trial_ms("budget_s"), 2),
        other_ms=round(per_trial_ms("other_s"), 2),
        per_worker_trials=sorted((r["trials"] for r in results), reverse=True),
    )


# ---------------------------------------------------------------------------------------------


class _Postgres:
    """A PostgreSQL server for the benchmark: the one in the environment or a throwaway one."""

    def __init__(self) -> None:
        self.url = os.environ.get("ROOFNAS_TEST_POSTGRES_URL", "")
        self._env: dict[str, str] | None = None
        if not self.url:
            env_file = Path(tempfile.mkdtemp(prefix="bench-pg-")) / "pg.env"
            self._env = {
                **os.environ,
                "ROOFNAS_PG_DURABLE": "1",
                "ROOFNAS_PG_NO_INSTALL": "1",
                "ROOFNAS_PG_ENV_FILE": str(env_file),
            }
            proc = subprocess.run(
                ["bash", str(REPO / ".ci" / "postgres.sh"), "start"],
                env=self._env,
                capture_output=True,
                text=True,
                check=False,
            )
            self.url = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            if not self.url.startswith("postgresql://"):
                raise RuntimeError(f"cannot start PostgreSQL: {proc.stderr.strip()[-500:]}")

    def fresh_database(self) -> str:
        import psycopg2

        parts = urlsplit(self.url)
        admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", "", ""))
        name = f"bench_{uuid.uuid4().hex[:10]}"
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))

    def stop(self) -> None:
        if self._env is not None:
            subprocess.run(
                ["bash", str(REPO / ".ci" / "postgres.sh"), "stop"],
                env=self._env,
                capture_output=True,
                check=False,
            )


def _server_version(url: str) -> str:
    import psycopg2

    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        v = cur.fetchone()[0]
        cur.execute("SHOW fsync")
        fsync = cur.fetchone()[0]
    conn.close()
    return f"PostgreSQL {v} (fsync={fsync})"


def _summary(rows: Sequence[Row]) -> list[str]:
    """Throughput against the number of workers, per storage and objective (from the table)."""
    lines = ["## Summary (computed from the table above)", ""]
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.storage, r.objective), []).append(r)
    for (storage, objective), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.workers)
        base = rs[0]
        per_trial = (
            base.sampler_ms + base.analytic_ms + base.estimator_ms + base.budget_ms + base.other_ms
        )
        speedups = ", ".join(
            f"x{r.trials_per_s / base.trials_per_s:.2f} with {r.workers}" for r in rs[1:]
        )
        lines.append(
            f"- {storage}, {objective}: trials/s "
            + " -> ".join(f"{r.trials_per_s:.3g}" for r in rs)
            + f" with {' -> '.join(str(r.workers) for r in rs)} workers"
            + (f" (throughput relative to {base.workers}: {speedups})" if speedups else "")
            + f"; with {base.workers}, {per_trial:.1f} worker-ms a trial, "
            f"{base.other_ms:.1f} of them in storage I/O and bookkeeping (other)."
        )
    return [*lines, ""]


def _markdown(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    lines = [
        "# Many workers on one study: throughput (experiments/bench_workers.py)",
        "",
        *(
            header_lines(meta["provenance"])
            if "provenance" in meta
            else [f"Command: `{meta['command']}`"]
        ),
        "",
        f"Clock: {meta.get('clock', WALL_CLOCK)}; {meta.get('statistic', 'one run per row')}.",
        "",
        f"Machine: {meta['cpus']} CPU cores, {meta['python']}, optuna {meta['optuna']}; "
        f"{meta.get('postgres', 'no PostgreSQL')}. Space `{meta['space']}`, profile "
        f"`{meta['hw']}` fp16 batch 1, NSGA-II (population 20), a params budget every "
        f"candidate meets; budget {meta['trials']} trials per run with the analytic "
        f"objective, {meta['proxy_trials']} with the proxy, {meta['train_trials']} with "
        "short training; MLflow off; torch 1 thread per worker. Date: " + meta["date"] + ".",
        "",
        "Throughput counts finished (COMPLETE) trials over the wall time from the moment all "
        "workers are ready (imports, storage and data loaded) to the last one done. The time "
        "columns are worker-seconds per finished trial (summed over workers, so with N workers "
        "on fewer cores they include time spent waiting for a core): sampler = NSGA-II; "
        "analytic = the search's objective (`search.TrialEvaluator`: sampling the "
        "architecture, costing it, constraints, attributes) without the estimator; estimator = "
        "the accuracy estimator (proxy: synflow on a batch of 16 digits; train: one epoch on "
        "200 digits, validated on 100; 0 for analytic); budget = the "
        "global-budget checks (`search._budget.GlobalBudget`: reads of the study's trials "
        "before and after each trial); other = the rest: Optuna's ask and tell (storage "
        "reads and writes), heartbeats, the worker loop.",
        "",
        "| storage | objective | workers | finished | wall s | trials/s | sampler ms | "
        "analytic ms | estimator ms | budget ms | other ms | trials per worker |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.storage} | {r.objective} | {r.workers} | {r.complete} | {r.wall_s:.2f} | "
            f"{r.trials_per_s:.3g} | {r.sampler_ms:.2f} | {r.analytic_ms:.2f} | "
            f"{r.estimator_ms:.2f} | {r.budget_ms:.2f} | {r.other_ms:.2f} | "
            f"{r.per_worker_trials} |"
        )
    lines.append("")
    if rows:
        lines += _summary(rows)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--trials",
        type=int,
        default=60,
        help="global budget per run with the analytic objective (default 60)",
    )
    ap.add_argument(
        "--proxy-trials",
        type=int,
        default=24,
        help="global budget per run with the proxy estimator (default 24)",
    )
    ap.add_argument(
        "--train-trials",
        type=int,
        default=8,
        help="global budget per run with the short-training estimator (default 8)",
    )
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES))
    ap.add_argument("--objectives", nargs="+", choices=OBJECTIVES, default=list(OBJECTIVES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "bench_workers",
        help="writes OUT.md and OUT.json (default experiments/results/bench_workers)",
    )
    ap.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only rewrite OUT.md from a results JSON of an earlier run",
    )
    args = ap.parse_args(argv)
    if args.render is not None:
        data = json.loads(args.render.read_text())
        # The run's own throughput (from the unrounded wall time) where the JSON has it.
        rows = [
            Row(**{"trials_per_s": round(r["complete"] / r["wall_s"], 3), **r})
            for r in data["rows"]
        ]
        args.out.with_suffix(".md").write_text(_markdown(rows, data["meta"]))
        return 0
    if min(args.trials, args.proxy_trials, args.train_trials, *args.workers) < 1:
        ap.error(
            f"--trials={args.trials}, --proxy-trials={args.proxy_trials}, "
            f"--train-trials={args.train_trials} and --workers={args.workers} must be >= 1"
        )

    import optuna

    prov = provenance_start("experiments/bench_workers.py", argv)
    proxy_trials = args.proxy_trials
    pg, pg_note = None, "PostgreSQL not asked for (--storages)"
    if "postgres" in args.storages:
        try:
            pg = _Postgres()
        except RuntimeError as e:  # the journal rows still run; the report says why not these
            pg_note = f"PostgreSQL rows not run: {e}"
            args.storages = [s for s in args.storages if s != "postgres"]
            print(pg_note, file=sys.stderr)
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        for storage in args.storages:
            for kind in args.objectives:
                total = {
                    "analytic": args.trials,
                    "proxy": proxy_trials,
                    "train": args.train_trials,
                }[kind]
                for n in args.workers:
                    if storage == "journal":
                        url = str(tmp / f"{kind}-{n}-{uuid.uuid4().hex[:6]}.journal")
                    else:
                        assert pg is not None
                        url = pg.fresh_database()
                    row = run_one(storage, url, kind, n, total, args.seed)
                    print(json.dumps(asdict(row)), flush=True)
                    rows.append(row)
        prov = provenance_finish(prov)
        meta = {
            "command": prov.command,
            "provenance": prov.to_dict(),
            "clock": WALL_CLOCK,
            "statistic": "one run per row, not repeated (throughput = finished trials / wall "
            "time of that run)",
            "cpus": os.cpu_count(),
            "python": f"Python {platform.python_version()}",
            "optuna": optuna.__version__,
            "postgres": _server_version(pg.url) if pg else pg_note,
            "space": str(SPACE.relative_to(REPO)),
            "hw": HW,
            "trials": args.trials,
            "proxy_trials": proxy_trials,
            "train_trials": args.train_trials,
            "date": prov.date_utc,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
        )
        args.out.with_suffix(".md").write_text(_markdown(rows, meta))
        print(f"wrote {args.out.with_suffix('.md')} and .json")
    finally:
        if pg is not None:
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
