"""searchspace: TOML spaces, sampling, the canonical string, build and export."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import costmodel
import searchspace as ss
from searchspace import Architecture, Block, Head, SpaceError, Stem

ROOT = Path(__file__).resolve().parents[1]
SPACES = {
    n: ROOT / "searchspace" / "spaces" / f"{n}.toml" for n in ("cifar", "mobile", "seed_convs")
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def spaces() -> dict[str, ss.SearchSpace]:
    return {n: ss.load_space(p) for n, p in SPACES.items()}


def sampled(space: ss.SearchSpace, seed: int, n: int = 1) -> list[Architecture]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [ss.sample(study.ask(), space) for _ in range(n)]


# -- the space file -------------------------------------------------------------
def minimal_space() -> dict:
    return {
        "name": "t",
        "input_channels": 3,
        "resolutions": [32],
        "num_classes": 10,
        "groups": [2, 4],
        "stem": {"kernels": [3], "widths": [16], "stride": 1, "activations": ["relu"]},
        "stages": [
            {
                "stride": 1,
                "depths": [1, 2],
                "widths": [16, 32],
                "ops": ["conv", "gconv", "ir"],
                "kernels": [3],
                "expansions": [6],
                "activations": ["relu"],
            }
        ],
        "head": {"widths": [0], "activations": ["relu"]},
    }


def with_change(path: tuple, value: object) -> dict:
    d = minimal_space()
    target = d
    for k in path[:-1]:
        target = target[k]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("colour",), "red", "colour='red'"),
        (("stem", "kernel"), [3], "kernel=[3]"),
        (("stages", 0, "expansion"), [6], "expansion=[6]"),
        (("head", "dropout"), 0.2, "dropout=0.2"),
        (("input_channels",), "3", "input_channels='3'"),
        (("num_classes",), 0, "num_classes=0"),
        (("resolutions",), [], "resolutions=[]"),
        (("stages", 0, "depths"), [-1], "depths=[-1]"),
        (("stages", 0, "kernels"), [4], "kernels=[4]"),
        (("stages", 0, "ops"), ["ir", "mbconv"], "'mbconv'"),
        (("stages", 0, "activations"), ["gelu"], "'gelu'"),
        (("stages", 0, "expansions"), KeyError, "expansions=None"),
        (("groups",), KeyError, "groups=[]"),
        (("groups",), [1, 2], "groups=[1, 2]"),
        (("stages", 0, "widths"), [16, 16], "widths=[16, 16]"),
        (("stem", "pool"), [1], "pool=[1]"),
        (("stages",), [], "stages=[]"),
        (("stem", "stride"), KeyError, "'stride' is missing"),
    ],
)
def test_space_errors_name_key_and_value(path: tuple, value: object, needle: str) -> None:
    with pytest.raises(SpaceError) as e:
        ss.parse_space(with_change(path, value), "t.toml")
    assert needle in str(e.value)
    assert str(e.value).startswith("t.toml")


def test_space_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="does not exist"):
        ss.load_space(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(SpaceError, match="not valid TOML"):
        ss.load_space(bad)


def test_widths_round_to_multiples_every_group_divides() -> None:
    d = minimal_space()
    d["groups"] = [2, 4, 8]  # lcm 8
    d["stem"]["widths"] = [12]  # -> 16 (nearest multiple of 8, halves up)
    d["stages"][0]["widths"] = [3, 20, 24, 27]  # -> 8, 24, 24, 24: duplicates dropped
    space = ss.parse_space(d)
    assert space.stem.widths == (16,)
    assert space.stages[0].widths == (8, 24)
    d["stages"][0]["ops"] = ["sh"]  # the ShuffleNet bottleneck is width / 4: multiples of 32
    del d["stages"][0]["expansions"]
    assert ss.parse_space(d).stages[0].widths == (32,)
    # Without group ops nothing is rounded.
    d = minimal_space()
    d["stages"][0]["ops"] = ["ir"]
    d["stages"][0]["widths"] = [17]
    assert ss.parse_space(d).stages[0].widths == (17,)


def test_ready_spaces_load(spaces: dict[str, ss.SearchSpace]) -> None:
    assert spaces["cifar"].resolutions == (32,) and spaces["cifar"].num_classes == 10
    assert spaces["mobile"].resolutions == (224,) and spaces["mobile"].num_classes == 1000
    seed = spaces["seed_convs"]
    assert seed.groups == (2, 4, 8)
    assert all(s.ops == ("conv", "gconv", "ds") and len(s.depths) == 1 for s in seed.stages)


# -- fixed architectures ---------------------------------------------------------
def test_mobilenet_v2_reproduces_published_figures(spaces: dict[str, ss.SearchSpace]) -> None:
    a = ss.mobilenet_v2()
    model = ss.build(a)
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # torchvision num_params
    rep = costmodel.estimate(a)
    assert rep.total.params == 3_504_872
    conv_linear = sum(layer.macs for layer in rep.layers if layer.op in ("conv2d", "linear"))
    # torchvision: "0.30 GFLOPS" (MACs); BatchNorm, folded, adds one MAC per element:
    # 300,774,272 + 6,678,112 = 307,452,384.
    assert conv_linear == 300_774_272
    assert rep.total.macs == 307_452_384
    assert spaces["mobile"].contains(a)
    assert spaces["mobile"].contains(ss.shufflenet_v1_like(groups=8))
    assert a in spaces["mobile"]
    assert not spaces["cifar"].contains(a)
    assert "resolutions=[32]" in spaces["cifar"].explain(a)


def test_shufflenet_like_uses_channel_shuffle() -> None:
    model = ss.build(ss.shufflenet_v1_like(groups=3))
    shuffles = [m for m in model.modules() if isinstance(m, torch.nn.ChannelShuffle)]
    assert len(shuffles) == 16  # 4 + 8 + 4 units (ShuffleNet V1, Table 1)


# -- canonical string and JSON ---------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(sorted(SPACES)))
def test_round_trip_sampled(seed: int, name: str) -> None:
    space = ss.load_space(SPACES[name])
    (a,) = sampled(space, seed)
    s = a.to_string()
    assert Architecture.from_string(s) == a
    assert Architecture.from_string(s).to_string() == s
    assert Architecture.from_json(a.to_json()) == a
    assert space.contains(a), space.explain(a)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(sorted(SPACES)))
def test_same_params_same_architecture(seed: int, name: str) -> None:
    space = ss.load_space(SPACES[name])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    a = ss.sample(trial, space)
    assert ss.sample(optuna.trial.FixedTrial(trial.params), space) == a


def test_sampling_works_in_a_real_study(spaces: dict[str, ss.SearchSpace]) -> None:
    # A multi-trial TPE study: Optuna raises if a name's distribution ever changes.
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    study.optimize(lambda t: costmodel.estimate(ss.sample(t, spaces["mobile"])).total.macs, 15)
    assert len(study.trials) == 15


BAD_STRINGS = [
    ("in_c3_h32_w32_n10:stem_k3_c16_s1_nre:ir_k3_e6_c16_s1_nxx:head_c0_nre", "ir_k3_e6_c16_s1_nxx"),
    ("in_c3_h32_w32_n10:stem_k3_c16_s1_nre:mb_k3_c16_s1_nre:head_c0_nre", "mb_k3_c16_s1_nre"),
    ("in_c3_h32_w32_n10:stem_k3_c16_s1_nre:ir_k3_c16_e6_s1_nre:head_c0_nre", "ir_k3_c16_e6_s1_nre"),
    ("in_c3_h32_w32_n10:stem_k3_c16_s1_nre:ds_k3_c016_s1_nre:head_c0_nre", "ds_k3_c016_s1_nre"),
    ("in_c3_h32_w32_n10:stem_k3_c16_s1_nre:ds_k3_c16_s1:head_c0_nre", "ds_k3_c16_s1"),
    ("in_c3_h32_w32_n10:stem_k3_c16_s1_nre::head_c0_nre", "''"),
    ("in_c3_h32_n10:stem_k3_c16_s1_nre:-:head_c0_nre", "in_c3_h32_n10"),
    ("in_c3_h32_w32_n10:stem_k3_c16_s1_nre_pool:-:head_c0_nre", "stem_k3_c16_s1_nre_pool"),
    ("in_c3_h32_w32_n10:stem_k3_c16_s1_nre:-:head_c0", "head_c0"),
    ("in_c3_h32_w32_n10:stem_k3_c16_s1_nre:ds_k3_c16_s1_nre,:head_c0_nre", "''"),
]


@pytest.mark.parametrize(("s", "token"), BAD_STRINGS)
def test_malformed_string_names_the_token(s: str, token: str) -> None:
    with pytest.raises(ValueError) as e:
        Architecture.from_string(s)
    assert token in str(e.value) and s in str(e.value)


def test_unbuildable_string_is_rejected() -> None:
    s = "in_c3_h32_w32_n10:stem_k3_c16_s1_nre:conv_k3_g3_c24_s1_nre:head_c0_nre"
    with pytest.raises(ValueError, match=r"groups=3 must divide in_channels=16"):
        Architecture.from_string(s)
    s = "in_c3_h32_w32_n10:stem_k3_c16_s1_nre:sh_k3_g4_c24_s1_nre:head_c0_nre"
    with pytest.raises(ValueError, match=r"width=24 must be a multiple of 4 \* groups=4"):
        Architecture.from_string(s)
    for bad in ("", "in_c3_h32_w32_n10:head_c0_nre"):
        with pytest.raises(ValueError, match="sections"):
            Architecture.from_string(bad)


def test_json_carries_fields_and_string() -> None:
    a = ss.shufflenet_v1_like(groups=4)
    d = json.loads(a.to_json())
    assert d["string"] == a.to_string() and d["stem"]["pool"] is True
    d["stages"][2][0]["width"] = 544
    with pytest.raises(ValueError, match="does not match its fields"):
        Architecture.from_dict(d)


def test_dataclasses_validate() -> None:
    with pytest.raises(ValueError, match=r"kernel=4 must be odd"):
        Architecture((3, 32, 32), 10, Stem(4, 16, 1, "relu"), ((),), Head(0, "relu"))
    with pytest.raises(ValueError, match=r"expansion is for ir blocks only"):
        Architecture(
            (3, 32, 32), 10, Stem(3, 16, 1, "relu"),
            ((Block("ds", 3, 16, 1, "relu", expansion=6),),), Head(0, "relu"),
        )  # fmt: skip


# -- build and lower -------------------------------------------------------------------
def test_build_names_and_lower_agree(spaces: dict[str, ss.SearchSpace]) -> None:
    for a in [*sampled(spaces["cifar"], 3, 3), ss.shufflenet_v1_like(3)]:
        model = ss.build(a)
        modules = dict(model.named_modules())
        specs = a.lower(batch=2)
        for spec in specs:
            if spec.op == "add":
                assert spec.name.endswith(".add") and spec.name[: -len(".add")] in modules
            else:
                assert spec.name in modules, spec.name
        assert {s.name.split(".")[0] for s in specs} == {"stem", "stages", "head"}
        assert sum(costmodel.count(s).params for s in specs) == sum(
            p.numel() for p in model.parameters()
        )
        out = model.eval()(torch.zeros(2, *a.input_shape))
        assert tuple(out.shape) == costmodel.output_shape(specs[-1]) == (2, a.num_classes)


def test_build_uses_only_the_agreed_modules() -> None:
    allowed = (
        torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Hardswish,
        torch.nn.SiLU, torch.nn.MaxPool2d, torch.nn.AdaptiveAvgPool2d, torch.nn.ChannelShuffle,
        torch.nn.Flatten, torch.nn.Linear,
    )  # fmt: skip
    for a in (ss.mobilenet_v2(), ss.shufflenet_v1_like()):
        leaves = [
            m for m in ss.build(a).modules()
            if not list(m.children()) and not isinstance(m, torch.nn.ModuleList)  # empty stage
        ]  # fmt: skip
        assert leaves and all(isinstance(m, allowed) for m in leaves)
    with pytest.raises(TypeError, match=r"searchspace\.Architecture"):
        ss.build("ir_k3")  # type: ignore[arg-type]


def test_lower_rejects_bad_batch() -> None:
    with pytest.raises(ValueError, match="batch=0"):
        ss.mobilenet_v2().lower(0)


# -- export ---------------------------------------------------------------------------
def check_export_standalone(a: Architecture, path: Path) -> None:
    src = ss.export_source(a, class_name="Found")
    assert a.to_string() in src.splitlines()[2]
    rep = costmodel.estimate(a)
    assert f"{rep.total.params:,}" in src and f"{rep.total.macs:,}" in src
    imports = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in imports if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in imports if isinstance(n, ast.ImportFrom)]
    assert names and all(n == "torch" or n.startswith("torch.") for n in names), names
    path.write_text(src)
    # -I: isolated mode, so nothing of this repository is importable.
    out = subprocess.run(
        [sys.executable, "-I", str(path)], capture_output=True, text=True, check=True,
        cwd=path.parent, timeout=300,
    ).stdout  # fmt: skip
    model = ss.build(a)
    assert f"params {sum(p.numel() for p in model.parameters())}" in out
    assert f"output_shape (1, {a.num_classes})" in out


def test_export_runs_standalone_in_a_fresh_interpreter(tmp_path: Path) -> None:
    check_export_standalone(ss.shufflenet_v1_like(8), tmp_path / "net.py")
    with pytest.raises(ValueError, match="class_name='1x'"):
        ss.export_source(ss.mobilenet_v2(), class_name="1x")


@pytest.mark.slow
def test_export_of_sampled_architectures(tmp_path: Path, spaces: dict[str, ss.SearchSpace]) -> None:
    for i, a in enumerate([*sampled(spaces["cifar"], 11, 3), ss.mobilenet_v2()]):
        check_export_standalone(a, tmp_path / f"net{i}.py")


def test_spaces_ship_with_the_package_and_load_by_name() -> None:
    assert ss.available_spaces() == ["cifar", "cifar_half16", "mobile", "seed_convs"]
    cifar = ss.load_space("cifar")
    assert Path(cifar.path).resolve() == SPACES["cifar"].resolve()
    assert dataclasses.replace(cifar, path="") == dataclasses.replace(
        ss.load_space(SPACES["cifar"]), path=""
    )
    shipped = r"\['cifar', 'cifar_half16', 'mobile', 'seed_convs'\]"
    with pytest.raises(SpaceError, match=r"'cifr'.*shipped: " + shipped):
        ss.load_space("cifr")
