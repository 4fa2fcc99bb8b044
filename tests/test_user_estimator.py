"""`search run --estimator PATH.py:FUNC`: a user's function as the accuracy objective."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest

import searchspace
from search import ConfigError, EstimatorFunctionError, load_config, load_existing_study
from search._cli import main
from search._mlflow import TAG_ESTIMATOR_ERROR, TAG_TRIAL, child_record, tracking_uri_for
from search._record import ATTR_RECORD, TrialRecord
from search._run import ESTIMATOR_FAILURES_IN_A_ROW
from search._user_estimator import (
    EstimatorCallError,
    FunctionEstimatorConfig,
    UserEstimator,
    check_signature,
    objective_of,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TOML = (ROOT / "search" / "experiments" / "default.toml").read_text()

# The function every end-to-end test builds on: its value is a function of the model's
# parameter count, so a stored objective can be checked against the trial's costed params
# (the cost model and torch count the same parameters), and each call is appended to CALLS.
SCORE = """
import json, math, os
CALLS = os.environ["ROOFNAS_TEST_CALLS"]

def score(model, arch):
    n = sum(p.numel() for p in model.parameters())
    with open(CALLS, "a") as f:
        f.write(json.dumps({"arch": arch.to_string(), "params": n}) + "\\n")
    return 1.0 / (1.0 + n / 1e6)
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def experiment(path: Path, estimator: str, *, params_limit: int = 100_000) -> Path:
    """The default experiment with ``estimator`` as its [estimator] table, no model logging."""
    head, _, rest = DEFAULT_TOML.partition("[estimator]")
    tail = rest[rest.index("[hypervolume]") :]
    text = head + "[estimator]\n" + estimator + "\n\n" + tail
    text = text.replace("params = 100_000", f"params = {params_limit}")
    return write(path, text.replace("log_models = 3", "log_models = 0"))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def feasible(t: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in t.constraints.values())


# ------------------------------------------------------------------ end to end


def test_cli_float_function_is_the_accuracy_objective_and_skips_rejected(tmp_path: Path) -> None:
    # Through the real command line, with the TOML's `function` relative to the TOML's folder
    # and the command run from elsewhere; a params limit of 150k rejects a good share of
    # random candidates, which must never reach the function.
    write(tmp_path / "cfg" / "est" / "mine.py", SCORE)
    toml = experiment(tmp_path / "cfg" / "exp.toml", 'function = "est/mine.py:score"',
                      params_limit=150_000)  # fmt: skip
    log = tmp_path / "calls.jsonl"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ROOFNAS_TEST_CALLS": str(log)}
    proc = subprocess.run(
        [sys.executable, "-m", "search", "run", "--config", str(toml), "--trials", "12",
         "--study", "s", "--no-mlflow", "--quiet", "--json", "--out-dir", str(tmp_path / "o")],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    trials = load_existing_study("s", str(tmp_path / "o" / "optuna.journal")).get_trials()
    ok = [t for t in trials if feasible(t)]
    rejected = [t for t in trials if not feasible(t)]
    assert len(trials) == 12 and ok and rejected
    seen = calls(log)
    # once per feasible candidate, never for a rejected one
    assert summary["estimator_calls"] == len(seen) == len(ok)
    assert sorted(c["arch"] for c in seen) == sorted(TrialRecord.of(t).arch for t in ok)
    for t in ok:
        params = TrialRecord.of(t).costs["t4"]["params"]
        # objective 0 is accuracy: the function's 1 / (1 + params / 1e6) of the built model
        assert t.values[0] == pytest.approx(1.0 / (1.0 + params / 1e6), rel=1e-12)
    for t in rejected:
        assert TrialRecord.of(t).estimator_skipped and t.values[0] == 0.0


@pytest.mark.slow  # MLflow's import and sqlite store: about 15 s
def test_dict_return_extra_metrics_and_a_raising_function_in_mlflow(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An architecture string of odd length raises, any other gets a dict with an extra
    # metric: the odd trials FAIL with their traceback kept, the search goes on, MLflow shows
    # both.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write(tmp_path / "e.py", """
        def f(model, arch) -> dict[str, float]:
            n = sum(p.numel() for p in model.parameters())
            if len(arch.to_string()) % 2:
                raise ZeroDivisionError(f"odd length {len(arch.to_string())}")
            return {"acc": 1.0 / (1.0 + n / 1e6), "params_m": n / 1e6, "note": "text"}
    """)  # fmt: skip
    toml = experiment(tmp_path / "exp.toml", 'function = "e.py:f"\nmetric = "acc"')
    code, out, err = run_cli(
        capsys, "run", "--config", str(toml), "--trials", "14", "--study", "d",
        "--out-dir", str(tmp_path / "o"), "--quiet", "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    study = load_existing_study("d", str(tmp_path / "o" / "optuna.journal"))
    trials = study.get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    scored = [t for t in trials if feasible(t) and t.state == optuna.trial.TrialState.COMPLETE]
    assert failed and scored, "seed 0 gives both odd and even lengths among feasible ones"
    assert summary["estimator_failures"] == len(failed)
    assert summary["estimator_first_error"].startswith("ZeroDivisionError: odd length")
    assert f"{len(failed)} trial(s) failed in the estimator" in err
    for t in failed:
        rec = TrialRecord.of(t)
        assert rec.estimator_error is not None
        assert "Traceback (most recent call last)" in rec.estimator_error
        assert 'raise ZeroDivisionError(f"odd length' in rec.estimator_error
    for t in scored:
        rec = TrialRecord.of(t)
        params = rec.costs["t4"]["params"]
        assert t.values[0] == pytest.approx(1.0 / (1.0 + params / 1e6))
        # the non-numeric entry is left out, the other number kept
        assert dict(rec.estimator_metrics) == {"params_m": pytest.approx(params / 1e6)}

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri_for(tmp_path / "o"))
    runs = client.search_runs(
        [summary_experiment(client)],
        filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'",
    )
    by_trial = {int(r.data.tags[TAG_TRIAL]): r for r in runs}
    for t in failed:
        run = by_trial[t.number]
        assert run.info.status == "FAILED"
        assert run.data.tags[TAG_ESTIMATOR_ERROR] == TrialRecord.of(t).estimator_error
        assert "odd length" in run.data.tags["mlflow.note.content"]
    for t in scored:
        run = by_trial[t.number]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["estimator/params_m"] == pytest.approx(
            TrialRecord.of(t).costs["t4"]["params"] / 1e6
        )


def summary_experiment(client: Any) -> str:
    (exp,) = [e for e in client.search_experiments() if e.name != "Default"]
    return str(exp.experiment_id)


def test_a_function_that_always_raises_stops_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(tmp_path / "e.py", """
        def f(model, arch):
            raise KeyError("no such checkpoint")
    """)  # fmt: skip
    code, out, err = run_cli(
        capsys, "run", "--estimator", str(tmp_path / "e.py") + ":f", "--trials", "60",
        "--study", "r", "--no-mlflow", "--quiet", "--json", "--out-dir", str(tmp_path / "o"),
    )  # fmt: skip
    summary = json.loads(out)
    assert code == 1
    assert summary["estimator_gave_up"] is True
    assert summary["estimator_failures"] == ESTIMATOR_FAILURES_IN_A_ROW
    assert summary["estimator_first_error"] == "KeyError: 'no such checkpoint'"
    assert f"stopped after {ESTIMATOR_FAILURES_IN_A_ROW} failures in a row" in err
    trials = load_existing_study("r", str(tmp_path / "o" / "optuna.journal")).get_trials()
    fails = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(fails) == ESTIMATOR_FAILURES_IN_A_ROW < len(trials) < 60


# ------------------------------------------------------------------ errors before any trial


@pytest.mark.parametrize(
    ("source", "func", "message"),
    [
        ("def f(model):\n    return 1.0\n", "f", "cannot be called as f(model, arch)"),
        ("def f(model, arch, *, k):\n    return 1.0\n", "f", "missing a required argument: 'k'"),
        ("def f(model, arch, budget):\n    return 1.0\n", "f", "takes 'budget' but not 'report'"),
        ("def f(model, arch, budget, report):\n    return 1.0\n", "f",
         "needs a [fidelity] table with min_budget and max_budget"),
        ("def f(model, arch) -> str:\n    return 'x'\n", "f", "return annotation 'str'"),
        ("import torch\ndef f(model, arch) -> torch.Tensor:\n    return 1.0\n", "f",
         "return annotation 'Tensor'"),
        ("def f(model, arch):\n    return 1.0\n", "g", "has no 'g'; its callables: ['f']"),
        ("f = 3\n", "f", "f=3 (int) is not callable"),
        ("import no_such_module_here\n", "f", "raised ModuleNotFoundError"),
    ],
    ids=["one-arg", "required-kwonly", "budget-only", "fidelity-needed", "ann-str",
         "ann-tensor", "missing-name", "not-callable", "import-error"],
)  # fmt: skip
def test_unusable_function_exits_2_before_the_storage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str, func: str, message: str
) -> None:
    path = write(tmp_path / "e.py", source)
    spec = f"{path}:{func}"
    out_dir = tmp_path / "o"
    code, _, err = run_cli(capsys, "run", "--estimator", spec, "--trials", "3", "--no-mlflow",
                           "--out-dir", str(out_dir))  # fmt: skip
    assert code == 2, err
    assert message in err and spec in err
    assert not out_dir.exists()  # no run directory, storage or MLflow store made


def test_run_help_describes_the_function_form(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0 and "KIND|PATH.py:FUNC" in out and "FUNC(model, arch)" in out


def test_workers_check_the_function_before_the_storage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path / "e.py", "def f(model):\n    return 1.0\n")
    code, _, err = run_cli(capsys, "run", "--estimator", f"{path}:f", "--workers", "2",
                           "--no-mlflow", "--out-dir", str(tmp_path / "o"))  # fmt: skip
    assert code == 2 and "cannot be called as f(model, arch)" in err
    assert not (tmp_path / "o").exists()


def test_child_run_of_a_failed_trial_carries_the_traceback() -> None:
    rec = TrialRecord(arch="a", estimator_error="Traceback ...\nValueError: bad", feasible=True)
    t = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={}, distributions={},
        user_attrs={ATTR_RECORD: rec.to_dict()},
    )  # fmt: skip
    child = child_record(t, ["accuracy", "latency_s"], set(), "s")
    assert child.status == "FAILED"
    assert child.tags[TAG_ESTIMATOR_ERROR] == "Traceback ...\nValueError: bad"
    ok = TrialRecord(arch="a", estimator_metrics={"top5": 0.9, "loss/val": 1.5})
    t = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, values=[0.5, 1e-3], params={},
        distributions={}, user_attrs={ATTR_RECORD: ok.to_dict()},
    )  # fmt: skip
    child = child_record(t, ["accuracy", "latency_s"], set(), "s")
    assert child.status == "FINISHED" and TAG_ESTIMATOR_ERROR not in child.tags
    assert child.metrics["estimator/top5"] == 0.9 and child.metrics["estimator/loss/val"] == 1.5
    assert TrialRecord.from_dict(ok.to_dict()) == ok


def test_missing_file_exits_2_naming_the_spec(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "run", "--estimator", "nope.py:f", "--trials", "3",
                           "--no-mlflow", "--out-dir", str(tmp_path / "o"))  # fmt: skip
    assert code == 2
    assert f"{tmp_path / 'nope.py'}:f: no such file" in err  # relative to the cwd
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("return 'high'", "returned 'high' (type str)"),
        ("return True", "returned True (type bool)"),
        ("return float('nan')", "the objective nan is not finite"),
        ("return {'acc': 0.5}", "returned {'acc': 0.5} (type dict) without the objective key "
         "'accuracy'"),
        ("return {'accuracy': None}", "its 'accuracy' entry is None"),
        ("import torch; return torch.tensor(0.5)", "(type Tensor)"),
    ],
    ids=["str", "bool", "nan", "no-key", "none-entry", "tensor"],
)  # fmt: skip
def test_wrong_return_stops_the_run_with_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, body: str, shown: str
) -> None:
    path = write(tmp_path / "e.py", f"def f(model, arch):\n    {body}\n")
    code, _, err = run_cli(capsys, "run", "--estimator", f"{path}:f", "--trials", "8",
                           "--study", "w", "--no-mlflow", "--quiet",
                           "--out-dir", str(tmp_path / "o"))  # fmt: skip
    assert code == 2, err
    assert f"estimator function {path}:f" in err and shown in err


# ------------------------------------------------------------------ units


def fn_of(tmp_path: Path, source: str, name: str = "f") -> Any:
    path = write(tmp_path / f"m{abs(hash(source))}.py", source)
    from search._user_estimator import load_function

    return load_function(FunctionEstimatorConfig.from_dict({"function": f"{path}:{name}"}))


@pytest.mark.parametrize(
    "annotation",
    ["float", "int", "dict", "dict[str, float]", "typing.Dict[str, float]",
     "typing.Mapping[str, float]", "collections.abc.Mapping", "float | dict[str, float]"],
)  # fmt: skip
@pytest.mark.parametrize("future", [False, True], ids=["evaluated", "string"])
def test_accepted_return_annotations(tmp_path: Path, annotation: str, future: bool) -> None:
    head = "from __future__ import annotations\n" if future else ""
    src = f"{head}import typing, collections.abc\ndef f(model, arch) -> {annotation}:\n  return 1\n"
    assert check_signature(fn_of(tmp_path, src), "x.py:f").takes_fidelity is False


@pytest.mark.parametrize("annotation", ["bool", "str", "typing.Optional[float]", "list[float]"])
def test_rejected_return_annotations(tmp_path: Path, annotation: str) -> None:
    src = f"import typing\ndef f(model, arch) -> {annotation}:\n  return 1\n"
    with pytest.raises(EstimatorFunctionError, match="return annotation"):
        check_signature(fn_of(tmp_path, src), "x.py:f")


def test_unresolvable_string_annotation_is_judged_by_its_text(tmp_path: Path) -> None:
    src = "from __future__ import annotations\ndef f(model: Model, arch) -> Dict[str, float]:\n"
    assert not check_signature(fn_of(tmp_path, src + "  return {}\n"), "x.py:f").takes_fidelity
    bad = "from __future__ import annotations\ndef f(model, arch) -> Tensor:\n  return 1\n"
    with pytest.raises(EstimatorFunctionError, match="'Tensor'"):
        check_signature(fn_of(tmp_path, bad), "x.py:f")


def test_two_files_with_one_name_do_not_collide(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "estimator.py", "def f(model, arch):\n    return 1.0\n")
    b = write(tmp_path / "b" / "estimator.py", "def f(model, arch):\n    return 2.0\n")
    fa = fn_of_path(a)
    fb = fn_of_path(b)
    assert (fa(None, None), fb(None, None)) == (1.0, 2.0)
    assert fa.__module__ != fb.__module__ and fa.__module__ in sys.modules
    assert fn_of_path(a) is fa  # imported once per process


def test_a_function_file_can_import_the_modules_beside_it(tmp_path: Path) -> None:
    write(tmp_path / "est" / "roofnas_test_neighbour.py", "VALUE = 0.25\n")
    est = write(
        tmp_path / "est" / "estimator.py",
        "from roofnas_test_neighbour import VALUE\n\ndef f(model, arch):\n    return VALUE\n",
    )
    assert fn_of_path(est)(None, None) == 0.25
    assert str(est.parent) not in sys.path  # only while the file is imported


def fn_of_path(path: Path) -> Any:
    from search._user_estimator import load_function

    return load_function(FunctionEstimatorConfig.from_dict({"function": f"{path}:f"}))


class FakeReporter:
    """A Reporter that prunes once a reported value falls below ``floor``."""

    def __init__(self, max_budget: float, floor: float = -math.inf) -> None:
        self.max_budget = max_budget
        self.floor = floor
        self.seen: list[tuple[float, float]] = []

    def __call__(self, value: float, step: float) -> None:
        self.seen.append((value, step))
        if value < self.floor:
            raise optuna.TrialPruned(f"{value} at {step}")


FIDELITY_FN = """
def f(model, arch, budget, report):
    value = 0.0
    for step in range(1, int(budget) + 1):
        value = step / 10
        report({"acc": value, "loss": 1 - value} if step % 2 else value, step)
    return {"acc": value, "loss": 1 - value}
"""


def small_arch() -> searchspace.Architecture:
    arch = "in_c3_h8_w8_n10:stem_k3_c8_s1_nre:conv_k3_g1_c8_s1_nre:head_c0_nre"
    return searchspace.Architecture.from_string(arch)


def test_budget_and_report_forward_the_objective_to_the_reporter(tmp_path: Path) -> None:
    path = write(tmp_path / "fid.py", FIDELITY_FN)
    cfg = FunctionEstimatorConfig.from_dict({"function": f"{path}:f", "metric": "acc"})
    est = UserEstimator(cfg, seed=0, has_fidelity=True)
    rep = FakeReporter(max_budget=3)
    assert est.score(small_arch(), report=rep) == pytest.approx(0.3)
    assert rep.seen == [(1 / 10, 1), (2 / 10, 2), (3 / 10, 3)]  # floats and dicts alike
    assert est.last_values == {"loss": pytest.approx(0.7)}
    with pytest.raises(optuna.TrialPruned):  # not turned into a trial failure
        est.score(small_arch(), report=FakeReporter(max_budget=3, floor=0.15))


def test_defaulted_budget_and_report_run_without_fidelity(tmp_path: Path) -> None:
    path = write(tmp_path / "d.py", """
        def f(model, arch, budget=2, report=None):
            return float(budget)
    """)  # fmt: skip
    est = UserEstimator(FunctionEstimatorConfig.from_dict({"function": f"{path}:f"}), seed=0)
    assert est.score(small_arch()) == 2.0
    assert est.score(small_arch(), report=FakeReporter(max_budget=5)) == 5.0


def test_model_is_built_from_the_seeded_arch(tmp_path: Path) -> None:
    path = write(tmp_path / "w.py", """
        def f(model, arch):
            return float(next(model.parameters()).detach().flatten()[0])
    """)  # fmt: skip
    cfg = FunctionEstimatorConfig.from_dict({"function": f"{path}:f"})
    a, b = UserEstimator(cfg, seed=3), UserEstimator(cfg, seed=4)
    assert a.score(small_arch()) == a.score(small_arch()) != b.score(small_arch())


def test_exception_in_the_function_is_a_call_error_with_its_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "r.py", "def f(model, arch):\n    return 1 / 0\n")
    est = UserEstimator(FunctionEstimatorConfig.from_dict({"function": f"{path}:f"}), seed=0)
    with pytest.raises(EstimatorCallError) as info:
        est.score(small_arch())
    assert isinstance(info.value, RuntimeError)  # CAUGHT_IN_TRIALS: that trial fails
    assert "return 1 / 0" in info.value.traceback_text
    assert info.value.traceback_text.rstrip().endswith("ZeroDivisionError: division by zero")


def test_objective_of_numbers_and_mappings() -> None:
    import numpy as np

    assert objective_of(3, "accuracy", "x") == (3.0, {})
    assert objective_of(np.float32(0.5), "accuracy", "x") == (0.5, {})
    got = objective_of({"accuracy": 0.25, "a": 1, "b": math.inf, "c": "s"}, "accuracy", "x")
    assert got == (0.25, {"a": 1.0})
    with pytest.raises(EstimatorFunctionError, match=r"returned \[0.5\] \(type list\)"):
        objective_of([0.5], "accuracy", "x")


# ------------------------------------------------------------------ config


def test_toml_function_is_resolved_against_the_toml_folder(tmp_path: Path) -> None:
    toml = experiment(tmp_path / "sub" / "exp.toml", 'function = "../e.py:f"')
    cfg = load_config(toml)
    assert dict(cfg.estimator) == {"function": f"{tmp_path / 'e.py'}:f", "metric": "accuracy"}
    # the stored form parses back to an equal config (a worker, a later `pareto`)
    assert load_config(toml).with_overrides(trials=5).estimator == cfg.estimator


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('function = "e.py:f"\nkind = "train"', "estimator.kind='train' does not go with"),
        ('function = "e.py:f"\nepochs = 3', "estimator.epochs=3 does not go with"),
        ('function = "e.py"', "estimator.function='e.py' must be PATH.py:FUNC"),
        ('function = "e.txt:f"', "estimator.function='e.txt:f' must be PATH.py:FUNC"),
        ('function = "e.py:f-g"', "estimator.function='e.py:f-g' must be PATH.py:FUNC"),
        ("function = 3", "estimator.function=3 must be a string"),
        ('function = "e.py:f"\nmetric = ""', "estimator.metric='' must be a non-empty string"),
    ],
)
def test_bad_function_table_is_a_config_error(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match="estimator") as info:
        load_config(experiment(tmp_path / "exp.toml", table))
    assert message in str(info.value)


def test_estimator_flag_switches_between_kinds_and_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = load_config()
    fn = base.with_overrides(estimator="est/e.py:score")
    assert dict(fn.estimator) == {"function": f"{tmp_path}/est/e.py:score", "metric": "accuracy"}
    back = fn.with_overrides(estimator="synflow")
    assert dict(back.estimator) == {"kind": "synflow"}
    assert base.with_overrides(estimator="none").estimator["proxies"] == ["params", "tse"]
    with pytest.raises(ConfigError, match=r"--estimator: estimator\.function='e\.py' must be"):
        base.with_overrides(estimator="e.py")
    assert fn.fingerprint() != base.fingerprint()


# ------------------------------------------------------------------ study fingerprint


def test_the_fingerprint_follows_the_estimator_file_contents_not_its_path(
    tmp_path: Path,
) -> None:
    """Workers with checkouts at different paths share a study; an edited estimator does not.

    Fails if the fingerprint hashed the function's path (the two copies then differ) or
    ignored the file (the edit then continues a study the old code scored).
    """
    source = "def f(model, arch):\n    return 1.0\n"
    a = write(tmp_path / "machine_a" / "est.py", source)
    b = write(tmp_path / "machine_b" / "est.py", source)
    base = load_config()
    cfg_a = base.with_overrides(estimator=f"{a}:f")
    assert cfg_a.fingerprint() == base.with_overrides(estimator=f"{b}:f").fingerprint()
    before = cfg_a.fingerprint()
    write(a, source.replace("1.0", "2.0"))
    assert cfg_a.fingerprint() != before
    assert base.with_overrides(estimator=f"{a}:g").fingerprint() != cfg_a.fingerprint()


def test_an_edited_estimator_file_cannot_continue_the_study(tmp_path: Path) -> None:
    from search._study import ATTR_FINGERPRINT, StudyMismatchError, create_or_load_study

    est = write(tmp_path / "est.py", "def f(model, arch):\n    return 1.0\n")
    cfg = load_config().with_overrides(
        estimator=f"{est}:f", storage=str(tmp_path / "j.journal"), study="s"
    )
    study = create_or_load_study(cfg)
    assert create_or_load_study(cfg).user_attrs[ATTR_FINGERPRINT] == cfg.fingerprint()
    write(est, "def f(model, arch):\n    return 0.5\n")
    with pytest.raises(StudyMismatchError, match="contents of the space or estimator file"):
        create_or_load_study(cfg)
    # A study stamped before contents were hashed (by the file's path) still continues.
    legacy = cfg.accepted_fingerprints()[-1]
    assert legacy != cfg.fingerprint()
    study.set_user_attr(ATTR_FINGERPRINT, legacy)
    assert create_or_load_study(cfg).study_name == "s"


def test_a_refused_study_names_the_settings_that_differ(tmp_path: Path) -> None:
    from search._study import StudyMismatchError, create_or_load_study

    cfg = load_config().with_overrides(storage=str(tmp_path / "j.journal"), study="s")
    create_or_load_study(cfg)
    with pytest.raises(StudyMismatchError, match=r"differs in seed\b"):
        create_or_load_study(cfg.with_overrides(seed=cfg.seed + 1))
