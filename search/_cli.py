"""``python -m search run|pareto|export|compare|ui|sync-mlflow``: a thin layer over the library.

Exit codes: 0 ok, 1 failure (storage, study, no feasible candidate, MLflow),
2 usage error (bad flag or config), 130 interrupted (results kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import optuna

from search._compare import format_summary, log_comparison, plot_comparison, summarise
from search._config import (
    DEFAULT_RUN_DIR,
    ConfigError,
    ExperimentConfig,
    HardwareTarget,
    available_experiments,
    load_config,
    safe_name,
)
from search._estimators import ESTIMATOR_KINDS
from search._front import pareto_trials
from search._mlflow import (
    MlflowTarget,
    experiment_pages,
    parent_params,
    remembered_experiment,
    sync,
    tracking_uri_for,
)
from search._results import (
    InfeasibleTrialError,
    bound_line,
    export_arch_string,
    export_trial,
    format_table,
    pareto_table,
)
from search._run import ESTIMATOR_FAILURES_IN_A_ROW, RunResult, run_study
from search._storage import StorageError, is_rdb_url
from search._study import StudyMismatchError, load_existing_study, study_config
from search._user_estimator import EstimatorFunctionError
from search._workers import run_workers

DEFAULT_STORAGE = str(Path(DEFAULT_RUN_DIR) / "optuna.journal")
DEFAULT_STUDY = "default"
ARCH_WIDTH = 60  # terminal table: the architecture string is cut here

EPILOG_RUN = """\
examples:
  python -m search run                                  # the default experiment (a few minutes)
  python -m search run --config t4_int8 --trials 500 --study int8   # a shipped experiment
  python -m search run --hw jetson-orin --sampler tpe --seed 3
  python -m search run --study S                        # again: continues study S
  python -m search run --estimator my_estimator.py:score    # your own accuracy estimator

Storage: --storage takes sqlite:///file.db, postgresql://..., or a journal file path
(default: %(default_storage)s). Ctrl-C stops after the running trial, writes the
results and exits 130; the same command continues the study later.
MLflow: MLFLOW_TRACKING_URI when set, else sqlite:///<out-dir>/mlflow.db.
Your own estimator: --estimator PATH.py:FUNC calls FUNC(model, arch) once per candidate that
meets the constraints (model = searchspace.build(arch), seeded); the float it returns (or
the "accuracy" entry of a dict it returns) is the accuracy objective, higher is better.
An exception in FUNC fails that trial (traceback kept in the trial and in MLflow) and the
search goes on; %(in_a_row)d in a row stop it (exit 1). A returned value that is not a finite number
stops the search with exit 2, as does a FUNC that cannot be loaded or called so.
"""


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", default=DEFAULT_STUDY, help="study name (default: %(default)s)")
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help="Optuna storage: sqlite:///F.db, postgresql://..., or a journal file path "
        "(default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m search",
        description="Hardware-aware multi-objective NAS: accuracy estimate against analytic "
        "cost (params, MACs, memory access, roofline latency) under hardware budgets.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run or continue a search",
        description="Run (or continue) a constrained multi-objective search.",
        epilog=EPILOG_RUN
        % {"default_storage": DEFAULT_STORAGE, "in_a_row": ESTIMATOR_FAILURES_IN_A_ROW},
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--config",
        help="experiment TOML path, or the name of a shipped one "
        f"({', '.join(available_experiments())}; default: default)",
    )
    run.add_argument("--trials", type=int, help="trial budget, finished trials included")
    run.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="start no new trial after SECONDS of wall-clock time (the running "
                     "trial finishes; run again to continue)")  # fmt: skip
    run.add_argument("--study", help="study name (default: the config's name)")
    run.add_argument("--storage", help=f"Optuna storage URL or journal path (default: "
                     f"<out-dir>/optuna.journal, i.e. {DEFAULT_STORAGE})")  # fmt: skip
    run.add_argument("--seed", type=int, help="sampler and estimator seed")
    run.add_argument("--hw", help="hardware profile of the primary target (name or .toml path)")
    run.add_argument("--precision", help="precision of the primary target (fp32, fp16, int8...)")
    run.add_argument("--sampler", help="nsga2 | tpe | random | gp")
    run.add_argument(
        "--estimator",
        metavar="KIND|PATH.py:FUNC",
        help=f"accuracy estimator: a built-in kind ({', '.join(ESTIMATOR_KINDS)}) or your "
        "function FUNC(model, arch) -> float in PATH.py "
        "(relative to the current directory; see below)",
    )
    run.add_argument("--out-dir", help=f"run directory (default: {DEFAULT_RUN_DIR})")
    run.add_argument(
        "--min-budget",
        type=float,
        help="[fidelity] smallest rung budget (epochs for the train estimator)",
    )
    run.add_argument(
        "--max-budget",
        type=float,
        help="[fidelity] full budget a trial that is never stopped trains",
    )
    run.add_argument("--eta", type=int, help="[fidelity] about 1 in eta trials goes on per rung")
    run.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local worker processes sharing the study and its budget (default 1)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")

    par = sub.add_parser("pareto", help="print the Pareto front of a study",
                         description="Print the feasible Pareto front as a table.")  # fmt: skip
    _add_study_args(par)
    par.add_argument("--json", action="store_true", help="print JSON rows instead of a table")

    exp = sub.add_parser(
        "export",
        help="write standalone PyTorch files of trials",
        description="Write a standalone PyTorch file (searchspace.export_source) of one trial, "
        "of every Pareto trial, or of any architecture string, with a cost report JSON beside "
        "each (<file>.cost.json). The header's costs are on the study's primary target.",
    )
    _add_study_args(exp)
    which = exp.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="trial number")
    which.add_argument("--pareto", action="store_true", help="every Pareto-front trial")
    which.add_argument("--arch", help="an architecture string (no study needed)")
    exp.add_argument(
        "--out", required=True, help="FILE.py for --trial/--arch, a directory for --pareto"
    )
    exp.add_argument(
        "--allow-infeasible",
        action="store_true",
        help="export a trial that breaks a constraint (its cost JSON says so)",
    )
    exp.add_argument("--hw", help="--arch: hardware profile (default: the default experiment's)")
    exp.add_argument("--precision", help="--arch: precision (default: the default experiment's)")
    exp.add_argument("--batch", type=int, help="--arch: batch (default: the default experiment's)")
    exp.add_argument("--json", action="store_true", help="print the written paths as JSON")

    ui = sub.add_parser(
        "ui",
        help="start the MLflow UI on the run store",
        description="Start `mlflow ui` on the same store that `run` logs to.",
    )
    ui.add_argument(
        "--out-dir", default=DEFAULT_RUN_DIR, help="run directory (default: %(default)s)"
    )
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--dry-run", action="store_true", help="print the command, start nothing")

    cmp = sub.add_parser(
        "compare",
        help="plot the fronts of several studies and tabulate their hypervolumes",
        description="Draw the feasible fronts of the studies (first two objectives) on one "
        "plot, print a table (trials, feasible, front size, hypervolume) and log both to "
        "MLflow as a run `compare:A+B` in the first study's experiment.",
    )
    cmp.add_argument("studies", nargs="+", metavar="STUDY")
    cmp.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage (as for run)")
    cmp.add_argument("--out", help="PNG path (default: <out-dir>/compare_A+B.png)")
    cmp.add_argument("--out-dir", default=DEFAULT_RUN_DIR, help="run directory for a local store")
    cmp.add_argument("--json", action="store_true", help="print the table as JSON")
    cmp.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")

    sync = sub.add_parser(
        "sync-mlflow",
        help="log what MLflow lacks for a study (exactly once)",
        description="Rebuild the MLflow view of a study from its Optuna storage: create the "
        "parent run if missing, log every finished trial that has no child run, correct "
        "Pareto membership. Running it twice adds nothing.",
    )
    _add_study_args(sync)
    sync.add_argument("--out-dir", default=DEFAULT_RUN_DIR, help="run directory for a local store")
    sync.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "pareto":
            return _pareto(args)
        if args.command == "export":
            return _export(args)
        if args.command == "ui":
            return _ui(args)
        if args.command == "sync-mlflow":
            return _sync(args)
        if args.command == "compare":
            return _compare(args)
    except (ConfigError, EstimatorFunctionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (StorageError, StudyMismatchError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: the running trial is lost, the rest kept
        print("interrupted; finished trials are kept in the storage", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # e.g. an estimator's dataset is missing
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        if args.command == "run":
            print("finished trials are kept in the storage; the same command continues",
                  file=sys.stderr)  # fmt: skip
        return 1
    parser.error(f"unknown command {args.command!r}")
    return 2


def _config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    cfg = load_config(args.config)
    return cfg.with_overrides(
        trials=args.trials, study=args.study, storage=args.storage, seed=args.seed, hw=args.hw,
        precision=args.precision, sampler=args.sampler, estimator=args.estimator,
        run_dir=args.out_dir, mlflow=False if args.no_mlflow else None,
        min_budget=_whole(args.min_budget), max_budget=_whole(args.max_budget), eta=args.eta,
    )  # fmt: skip


def _whole(v: float | None) -> float | int | None:
    """A budget from the command line as an int when it is one (epochs read as 3, not 3.0)."""
    return int(v) if v is not None and v.is_integer() else v


def _run(args: argparse.Namespace) -> int:
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials={args.trials} must be >= 1")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise ConfigError(f"--timeout={args.timeout} must be a positive number of seconds")
    if args.timeout is not None and args.workers != 1:
        raise ConfigError(f"--timeout={args.timeout:g} works with one worker, not --workers="
                          f"{args.workers}; use --trials to bound a multi-worker run")  # fmt: skip
    cfg = _config_from_args(args)
    if args.workers != 1:
        result = run_workers(cfg, args.workers, progress=not args.quiet)
    else:
        # One process on the journal: the fast in-memory sampler. On an RDB storage (maybe one
        # of several machines running `search run` on one study) every worker's trials must be
        # in the shared storage while they run.
        local = not is_rdb_url(cfg.storage_url)
        result = run_study(cfg, progress=not (args.quiet or args.json), local_sampler=local,
                           timeout_s=args.timeout)  # fmt: skip
    if args.json:
        print(json.dumps(asdict(result), indent=1, default=str))
    else:
        _print_run_summary(cfg, result)
    if result.estimator_failure_note():
        print(f"warning: {result.estimator_failure_note()}", file=sys.stderr)
    if result.interrupted:
        return 130
    if result.estimator_gave_up:
        return 1
    if result.n_finished and not result.n_feasible:
        print(result.no_feasible_message(cfg), file=sys.stderr)
        return 1
    return 0


def _print_run_summary(cfg: ExperimentConfig, r: RunResult) -> None:
    if r.budget_note(cfg.trials):
        print(r.budget_note(cfg.trials))
    state = "interrupted" if r.interrupted else "done"
    failed = f" ({r.estimator_failures} raised)" if r.estimator_failures else ""
    stopped = f"{r.n_stopped} stopped early, " if r.n_stopped else ""
    print(f"study {r.study_name!r} ({state}): {r.n_finished} trials, {r.n_feasible} feasible, "
          f"{stopped}{len(r.pareto)} on the Pareto front, hypervolume {r.hypervolume:.4f}, "
          f"{r.estimator_calls} estimator calls{failed}, {r.elapsed_s:.1f} s")  # fmt: skip
    print(f"storage: {r.storage}")
    if r.artifacts:
        print(f"results: {Path(r.artifacts[0]).parent}")
    if r.mlflow_parent_run_id:
        print(f"MLflow parent run: {r.mlflow_parent_run_id} (python -m search ui "
              f"--out-dir {r.run_dir})")  # fmt: skip
    if r.mlflow_error:
        print(f"warning: {r.mlflow_error}", file=sys.stderr)
    if r.pareto:
        print(bound_line(load_existing_study(r.study_name, r.storage), cfg))
    print(f"next: python -m search pareto --study {r.study_name} --storage {r.storage}")


def _open(args: argparse.Namespace) -> tuple[optuna.Study, ExperimentConfig]:
    study = load_existing_study(args.study, args.storage)
    return study, study_config(study)


def _pareto(args: argparse.Namespace) -> int:
    study, cfg = _open(args)
    rows = pareto_table(study, cfg)
    if args.json:
        print(json.dumps({"study": args.study, "objectives": [o.name for o in cfg.objectives],
                          "pareto": rows}, indent=1))  # fmt: skip
        return 0
    if not rows:
        print(f"study {args.study!r}: no feasible trial yet, the front is empty")
        return 0
    cols = ["trial"] + [o.name for o in cfg.objectives]
    cols += [f"{m}@{cfg.primary.name}" for m in ("params", "macs", "latency_s")
             if m not in cols and f"{m}@{cfg.primary.name}" not in cols]  # fmt: skip
    cols.append("arch")
    first = cfg.objectives[0]
    print(f"study {args.study!r}: {len(rows)} Pareto trials, best {first.name} first "
          "(macs = multiply-accumulates; FLOPs = 2 x MACs; arch cut at "
          f"{ARCH_WIDTH} characters: --json has it whole)")  # fmt: skip
    print(format_table([{**r, "arch": _cut(r["arch"], ARCH_WIDTH)} for r in rows], cols))
    return 0


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.pareto and out.suffix == ".py":
        raise ConfigError(
            f"--out={args.out!r}: --pareto writes one file per trial, give a directory"
        )
    if (args.trial is not None or args.arch) and out.suffix != ".py":
        raise ConfigError(f"--out={args.out!r} must name a .py file for --trial or --arch")
    if args.arch:
        return _print_written(export_arch_string(args.arch, _arch_target(args), out), args.json)
    if args.hw or args.precision or args.batch:
        raise ConfigError(
            "--hw/--precision/--batch go with --arch; a trial uses its study's target"
        )
    study, cfg = _open(args)
    written: list[Path] = []
    if args.pareto:
        front = pareto_trials(study)
        if not front:
            print(f"error: study {args.study!r} has no feasible Pareto trial", file=sys.stderr)
            return 1
        for t in front:
            written += export_trial(study, cfg, t.number, out / f"trial_{t.number}.py")
    else:
        try:
            written += export_trial(study, cfg, args.trial, out, args.allow_infeasible)
        except InfeasibleTrialError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return _print_written(written, args.json)


def _arch_target(args: argparse.Namespace) -> HardwareTarget:
    """The target an ``--arch`` export is costed on: the default experiment's primary one."""
    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch={args.batch} must be >= 1")
    primary = load_config().primary
    hw = args.hw or primary.profile
    return replace(
        primary, name=Path(hw).stem if hw.endswith(".toml") else hw, profile=hw,
        precision=args.precision or primary.precision, batch=args.batch or primary.batch,
    )  # fmt: skip


def _print_written(written: Sequence[Path], as_json: bool) -> int:
    if as_json:
        print(json.dumps([str(p) for p in written]))
    else:
        for p in written:
            print(p)
    return 0


def _ui(args: argparse.Namespace) -> int:
    uri = tracking_uri_for(args.out_dir)
    if uri.startswith(("http://", "https://")):
        print(f"MLFLOW_TRACKING_URI={uri} is a tracking server: open {uri} in a browser")
        return 0
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [exe, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    if not Path(args.out_dir).exists() and uri.startswith("sqlite"):
        print(f"warning: run directory {args.out_dir!r} does not exist yet", file=sys.stderr)
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {uri}: {base}  (Ctrl-C stops it)")
    if Path(args.out_dir).exists():
        for name, url in experiment_pages(uri, base):
            print(f"  {name}: {url}")
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # A group of its own, so that stopping it reaches the server's workers too, whichever
    # signal stops this wrapper (Ctrl-C, or SIGTERM/SIGHUP from `kill` or a closed terminal).
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    try:
        code = _wait_interruptibly(proc)
    except KeyboardInterrupt:
        code = 130
    except _StopSignal as e:
        code = 128 + e.signum
    sys.stdout.flush()
    _stop_group(proc)
    return code


def _wait_interruptibly(proc: subprocess.Popen[bytes], poll_s: float = 0.5) -> int:
    """``proc.wait()`` that acts on Ctrl-C within ``poll_s``. The OS may hand a signal to any
    thread; Python runs its handler in the main thread only between bytecodes, which a
    blocking waitpid never reaches until the child exits, so poll instead."""
    while True:
        try:
            return proc.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            continue


class _StopSignal(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum: int, _frame: object) -> None:
    raise _StopSignal(signum)


# MLflow's server stops on SIGTERM in about 2 s; on a loaded 2-core machine its supervisor once
# took 20 s to act on it. Past this grace the group is killed, so Ctrl-C never hangs for long.
STOP_GRACE_S = 5.0


def _stop_group(proc: subprocess.Popen[bytes], wait_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the child's process group, SIGKILL if it has not gone after ``wait_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _compare(args: argparse.Namespace) -> int:
    loaded = []
    for name in args.studies:
        try:
            study = load_existing_study(name, args.storage)
        except StorageError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        loaded.append((study, study_config(study)))
    rows = [summarise(study, cfg) for study, cfg in loaded]
    cfg0 = loaded[0][1]
    default = Path(args.out_dir) / f"compare_{'+'.join(safe_name(n) for n in args.studies)}.png"
    png = plot_comparison(rows, [o.name for o in cfg0.objectives], Path(args.out or default))
    run_id = None
    if not args.no_mlflow:
        target = MlflowTarget.of(cfg0, args.out_dir, remembered_experiment(loaded[0][0]))
        try:
            run_id = log_comparison(target.view(args.studies[0]), rows, png)
        except Exception as e:
            print(f"error: MLflow at {target.tracking_uri} failed: {type(e).__name__}: {e}",
                  file=sys.stderr)  # fmt: skip
            return 1
    if args.json:
        print(json.dumps({"studies": [r.row() for r in rows], "plot": str(png),
                          "mlflow_run_id": run_id}, indent=1))  # fmt: skip
        return 0
    print(format_summary(rows))
    print(f"plot: {png}")
    if run_id:
        print(f"MLflow run compare:{'+'.join(args.studies)}: {run_id}")
    return 0


def _sync(args: argparse.Namespace) -> int:
    study, cfg = _open(args)
    target = MlflowTarget.of(cfg, args.out_dir, remembered_experiment(study))
    uri, exp_name = target.tracking_uri, target.experiment_name
    try:
        res = sync(
            study,
            tracking_uri=uri,
            experiment_name=exp_name,
            objective_names=[o.name for o in cfg.objectives],
            artifact_root=target.artifact_root,
            params=parent_params(cfg, args.storage),
            cfg=cfg,
        )
    except Exception as e:
        print(f"error: MLflow at {uri} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**asdict(res), "tracking_uri": uri, "experiment": exp_name}))
    else:
        print(f"parent run {res.parent_run_id} in {exp_name!r} at {uri}: wrote {res.written} "
              f"child runs ({res.already} were there), corrected Pareto membership of "
              f"{res.pareto_updated}")  # fmt: skip
    return 0
