"""Experiment config validation: every bad key or value is named in the message."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import searchspace
from search import ConfigError, load_config, parse_config
from search._config import EXPERIMENTS_DIR, available_experiments
from search._objectives import cost_value

ROOT = Path(__file__).resolve().parents[1]


def base(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": "t",
        "space": "cifar",
        "objectives": ["accuracy", "latency_s"],
        "hardware": [{"profile": "t4", "precision": "fp16"}],
        "constraints": {"params": 1e5, "latency_s": 1e-3},
        "estimator": {"kind": "none"},
    }
    d.update(over)
    return d


def error_of(d: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(d)
    return str(e.value)


def test_default_experiment_loads_with_two_targets_and_directions() -> None:
    cfg = load_config()
    assert cfg.name == "default"
    assert [t.name for t in cfg.hardware] == ["t4", "jetson-orin"]
    assert cfg.directions == ["maximize", "minimize"]
    assert {c.name for c in cfg.constraints} == {"params", "latency_s", "latency_s@jetson-orin"}
    assert cfg.sampler.name == "nsga2"
    # one file: experiments/default.toml is a link to the packaged one
    assert (ROOT / "experiments" / "default.toml").resolve() == (
        ROOT / "search" / "experiments" / "default.toml"
    )


def test_shipped_experiments_load_by_name_and_the_repo_links_to_them() -> None:
    names = available_experiments()
    assert {"default", "mobile_t4", "t4_fp32", "t4_int8", "seed_convs"} <= set(names)
    for name in names:
        link = ROOT / "experiments" / f"{name}.toml"
        assert link.is_symlink() and link.resolve() == EXPERIMENTS_DIR / f"{name}.toml"
        by_path = load_config(EXPERIMENTS_DIR / f"{name}.toml")
        assert load_config(name) == dataclasses.replace(by_path, source=name)
    assert load_config("default") == load_config()
    with pytest.raises(ConfigError, match=r"did you mean 't4_int8'\?"):
        load_config("t4_int9")


EXPERIMENTS = sorted((ROOT / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_loads(path: Path) -> None:
    cfg = load_config(path)
    assert len(cfg.objectives) >= 2
    assert Path(cfg.space).is_file()


def test_round_trip_through_to_dict() -> None:
    cfg = load_config()
    again = parse_config(cfg.to_dict(), source=cfg.source)
    assert again == cfg


def test_unknown_top_level_key_is_named_with_a_hint() -> None:
    msg = error_of(base(trails=10))
    assert "'trails'" in msg and "did you mean 'trials'" in msg


def test_unknown_profile_lists_known_ones() -> None:
    msg = error_of(base(hardware=[{"profile": "t5"}]))
    assert "hardware[0].profile='t5'" in msg
    assert "'t4'" in msg and "jetson-orin" in msg


def test_unknown_objective_and_constraint_names() -> None:
    msg = error_of(base(objectives=["accuracy", "latencey_s"]))
    assert "'latencey_s'" in msg and "latency_s" in msg
    msg = error_of(base(constraints={"flops": 1e6}))
    assert "'flops'" in msg and "macs" in msg


def test_unknown_hardware_target_in_a_reference() -> None:
    msg = error_of(base(constraints={"latency_s@orin": 1e-3}))
    assert "'orin'" in msg and "['t4']" in msg


def test_wrong_types_are_named() -> None:
    assert "trials='10'" in error_of(base(trials="10"))
    assert "trials=True" in error_of(base(trials=True))
    assert "hardware[0].batch=0" in error_of(base(hardware=[{"profile": "t4", "batch": 0}]))
    assert "constraints.params=-1" in error_of(base(constraints={"params": -1}))


def test_single_objective_is_refused() -> None:
    assert "two or more" in error_of(base(objectives=["accuracy"]))


def test_precision_without_a_peak_on_the_profile() -> None:
    msg = error_of(base(hardware=[{"profile": "t4", "precision": "fp64"}]))
    assert "precision='fp64'" in msg


def test_estimator_errors_come_through_with_the_key() -> None:
    msg = error_of(base(estimator={"kind": "none", "epochz": 3}))
    assert "estimator" in msg and "'epochz'" in msg


def test_unknown_sampler() -> None:
    assert "sampler.name='cmaes'" in error_of(base(sampler={"name": "cmaes"}))


def test_hypervolume_bounds_needed_for_an_unconstrained_cost() -> None:
    msg = error_of(base(objectives=["accuracy", "macs"]))
    assert "'macs'" in msg and "[hypervolume]" in msg
    cfg = parse_config(base(objectives=["accuracy", "macs"], hypervolume={"macs": [0, 1e8]}))
    assert cfg.hv_bounds["macs"] == (0.0, 1e8)
    # defaults: accuracy (1, 0), a constrained cost (0, its limit)
    cfg = parse_config(base())
    assert cfg.hv_bounds == {"accuracy": (1.0, 0.0), "latency_s": (0.0, 1e-3)}


def test_missing_space_names_where_it_looked() -> None:
    msg = error_of(base(space="no_such_space"))
    assert "space='no_such_space'" in msg and "cifar" in msg


def test_overrides_replace_the_primary_target() -> None:
    cfg = load_config().with_overrides(hw="a100", precision="fp32", trials=7, seed=3)
    assert cfg.primary.name == "a100" and cfg.primary.profile == "a100"
    assert cfg.primary.precision == "fp32"
    assert cfg.trials == 7 and cfg.seed == 3
    # "latency_s" (no target) now means the new primary target
    assert cfg.target(None).profile == "a100"
    with pytest.raises(ConfigError, match=r"sampler\.name='bogus'"):
        load_config().with_overrides(sampler="bogus")
    with pytest.raises(ConfigError, match="unknown hardware profile 'nope'"):
        load_config().with_overrides(hw="nope")


def test_fingerprint_tracks_the_search_not_the_budget() -> None:
    cfg = load_config()
    assert cfg.fingerprint() == cfg.with_overrides(trials=5, study="other").fingerprint()
    assert cfg.fingerprint() != cfg.with_overrides(seed=1).fingerprint()
    assert cfg.fingerprint() != cfg.with_overrides(sampler="tpe").fingerprint()


def test_peak_activation_bytes_as_objective_and_constraint() -> None:
    # the cost model reports total.peak_activation_bytes; both roles read it
    cfg = parse_config(
        base(
            objectives=["accuracy", "peak_activation_bytes"],
            constraints={"peak_activation_bytes": 2e6},
        )
    )
    assert cfg.objectives[1].name == "peak_activation_bytes"
    assert cfg.hv_bounds["peak_activation_bytes"] == (0.0, 2e6)  # from the constraint
    arch = searchspace.mobilenet_v2()
    reports = cfg.cost_reports(arch)
    value = cost_value(cfg.objectives[1].metric, reports, cfg.primary.name)
    assert value == reports[cfg.primary.name].total.peak_activation_bytes > 0
