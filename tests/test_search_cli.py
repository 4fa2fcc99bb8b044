"""`python -m search`: exit codes (0 ok, 1 failure, 2 usage) and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import costmodel
import searchspace
from search import load_config
from search._cli import main
from search._results import bound_shares

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse: --help and usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("cmd", ["run", "pareto", "export", "ui", "sync-mlflow"])
def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str], cmd: str) -> None:
    code, out, _ = run_cli(capsys, cmd, "--help")
    assert code == 0 and "usage: python -m search " + cmd in out


def test_run_help_explains_storage_and_resume(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "run", "--help")
    assert "--trials" in out and "--storage" in out and "continues" in out and "130" in out


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "run", "--trails", "3")
    assert code == 2 and "--trails" in err


def test_unknown_config_key_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "bad.toml"
    text = (ROOT / "experiments" / "default.toml").read_text()
    cfg.write_text(text.replace("seed = 0", "seed = 0\npopulation = 3"))
    code, _, err = run_cli(capsys, "run", "--config", str(cfg), "--out-dir", str(tmp_path))
    assert code == 2 and "unknown key 'population'" in err


def test_unknown_profile_exits_2_listing_known_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "run", "--hw", "t5", "--out-dir", str(tmp_path))
    assert code == 2 and "unknown hardware profile 't5'" in err and "'t4'" in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [(("--timeout", "0"), "--timeout=0.0"), (("--timeout", "5", "--workers", "2"), "--workers=2")],
)
def test_bad_timeout_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...], named: str
) -> None:
    code, _, err = run_cli(capsys, "run", *argv, "--out-dir", str(tmp_path))
    assert code == 2 and named in err
    assert not (tmp_path / "optuna.journal").exists()  # refused before any storage work


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "run", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "nope.toml" in err


def test_unwritable_storage_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where a directory is needed: unwritable even as root
    code, _, err = run_cli(
        capsys, "run", "--trials", "2", "--estimator", "none", "--no-mlflow", "--quiet",
        "--storage", str(blocker / "sub" / "optuna.journal"), "--out-dir", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 1 and "cannot create directory" in err and "storage=" in err


def test_pareto_on_a_missing_store_or_study(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "pareto", "--study", "s", "--storage", str(tmp_path / "x"))
    assert code == 1 and "does not exist" in err


def test_run_pareto_export_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store = str(tmp_path / "o" / "optuna.journal")
    code, out, err = run_cli(
        capsys, "run", "--trials", "6", "--study", "S", "--storage", store, "--seed", "1",
        "--estimator", "none", "--no-mlflow", "--out-dir", str(tmp_path / "o"), "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n_finished"] == 6 and summary["study_name"] == "S"

    code, out, _ = run_cli(capsys, "pareto", "--study", "S", "--storage", store, "--json")
    assert code == 0
    rows = json.loads(out)["pareto"]
    assert sorted(r["trial"] for r in rows) == sorted(summary["pareto"])
    # best accuracy first (maximised), then by trial number
    assert [(-r["accuracy"], r["trial"]) for r in rows] == sorted(
        (-r["accuracy"], r["trial"]) for r in rows
    )
    code, out, _ = run_cli(capsys, "pareto", "--study", "S", "--storage", store)
    assert code == 0 and "accuracy" in out and "FLOPs = 2 x MACs" in out
    assert rows[0]["arch"][:57] + "..." in out and rows[0]["arch"] not in out  # cut, not whole

    code, out, _ = run_cli(capsys, "run", "--trials", "3", "--seed", "1", "--study", "S",
                           "--storage", store, "--estimator", "none", "--no-mlflow", "--quiet",
                           "--out-dir", str(tmp_path / "o"))  # fmt: skip
    assert code == 0 and "already has 6 finished trials" in out and "M > 6" in out

    n = rows[0]["trial"]
    target = tmp_path / "m.py"
    code, out, _ = run_cli(
        capsys, "export", "--study", "S", "--storage", store, "--trial", str(n),
        "--out", str(target),
    )  # fmt: skip
    assert code == 0 and target.is_file() and target.with_suffix(".cost.json").is_file()
    assert "class Net" in target.read_text()
    # the header is costed on the study's primary target (the default: t4 fp16 batch 1 eager)
    doc = json.loads(target.with_suffix(".cost.json").read_text())
    p = doc["primary_target"]
    assert f'(profile "{p["profile"]}", {p["precision"]}, batch {p["batch"]}' in target.read_text()
    assert doc["feasible"] is True
    assert all(c["met"] and c["value"] <= c["limit"] for c in doc["constraints"].values())
    # each architecture once on the front
    assert len({r["arch"] for r in rows}) == len(rows)
    code, _, err = run_cli(
        capsys, "export", "--study", "S", "--storage", store, "--trial", "99", "--out",
        str(target),
    )  # fmt: skip
    assert code == 1 and "trial=99" in err
    code, out, _ = run_cli(
        capsys, "export", "--study", "S", "--storage", store, "--pareto",
        "--out", str(tmp_path / "front"), "--json",
    )  # fmt: skip
    assert code == 0 and len(json.loads(out)) == 2 * len(rows)

    code, _, err = run_cli(capsys, "pareto", "--study", "T", "--storage", store)
    assert code == 1 and "studies: ['S']" in err

    code, _, err = run_cli(capsys, "export", "--study", "S", "--storage", store, "--pareto",
                           "--out", str(tmp_path / "front.py"))  # fmt: skip
    assert code == 2 and "give a directory" in err


def test_export_of_an_infeasible_trial_names_each_broken_constraint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "tight.toml"
    text = (ROOT / "experiments" / "default.toml").read_text()
    cfg.write_text(text.replace("params = 100_000", "params = 10"))
    store = str(tmp_path / "o" / "optuna.journal")
    run_cli(capsys, "run", "--config", str(cfg), "--trials", "2", "--estimator", "none",
            "--no-mlflow", "--quiet", "--study", "S", "--storage", store)  # fmt: skip
    out = tmp_path / "m.py"
    argv = ["export", "--study", "S", "--storage", store, "--trial", "0", "--out", str(out)]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and "infeasible" in err and "params = " in err and "> limit 10" in err
    assert not out.exists()
    code, _, err = run_cli(capsys, *argv, "--allow-infeasible")
    assert code == 0, err
    doc = json.loads(out.with_suffix(".cost.json").read_text())
    assert doc["feasible"] is False
    params = doc["constraints"]["params"]
    assert params["limit"] == 10 and params["value"] == doc["params"] > 10 and not params["met"]


def test_export_any_architecture_string_on_a_chosen_target(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    arch = searchspace.mobilenet_v2().to_string()
    out = tmp_path / "a.py"
    code, _, err = run_cli(capsys, "export", "--arch", arch, "--out", str(out), "--hw",
                           "jetson-orin", "--precision", "int8", "--batch", "4")  # fmt: skip
    assert code == 0, err
    assert '(profile "jetson-orin", int8, batch 4' in out.read_text()
    doc = json.loads(out.with_suffix(".cost.json").read_text())
    assert doc["arch"] == arch and doc["primary_target"]["batch"] == 4
    code, _, err = run_cli(capsys, "export", "--arch", "nonsense", "--out", str(out))
    assert code == 1 and "nonsense" in err


def test_no_feasible_candidate_exits_1_with_the_culprit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "tight.toml"
    text = (ROOT / "experiments" / "default.toml").read_text()
    cfg.write_text(text.replace("params = 100_000", "params = 10"))
    code, _, err = run_cli(
        capsys, "run", "--config", str(cfg), "--trials", "3", "--estimator", "none",
        "--no-mlflow", "--quiet", "--out-dir", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 1 and "'params' rejected the most (3 of 3)" in err and "closest seen" in err


def test_ui_dry_run_prints_the_store_and_url(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out, _ = run_cli(capsys, "ui", "--out-dir", str(tmp_path), "--port", "5123", "--dry-run")
    assert code == 0 and "http://127.0.0.1:5123" in out
    assert f"sqlite:///{tmp_path.resolve()}/mlflow.db" in out
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    code, out, _ = run_cli(capsys, "ui", "--dry-run")
    assert code == 0 and "http://127.0.0.1:5999" in out


def test_bound_shares_tell_which_bound_the_latency_is_made_of() -> None:
    arch = searchspace.sample_architectures("cifar", 1, seed=0)[0]
    eager_b1 = bound_shares(costmodel.estimate(arch, hw="t4", precision="fp16", batch=1))
    # batch 1 eager on a T4: the fixed per-kernel cost exceeds most layers' roofline time
    assert eager_b1["overhead"] > max(eager_b1["memory"], eager_b1["compute"])
    primary = load_config().primary  # T4 fp16 batch 256 fused
    shares = bound_shares(primary.estimate(arch))
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["memory"] > shares["overhead"] < eager_b1["overhead"] and shares["compute"] > 0
