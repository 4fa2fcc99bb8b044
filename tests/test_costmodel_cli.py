"""``python -m costmodel``: table, JSON, plot, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

import costmodel
from costmodel import _cli as costmodel_cli
from costmodel._cli import main
from costmodel._plot import RooflinePoint, _label_spread, overhead_share, roofline_points

REPO = Path(__file__).resolve().parents[1]

FACTORIES = """
import torch.nn as nn


def build():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )


class Net(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 4, 1))


def needs_width(width):
    return nn.Conv2d(3, width, 1)


def not_a_module():
    return 3


def odd():
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.Softmax(dim=1))
"""

# conv 3*8*3*3 = 216, BN 2*8 = 16, linear 8*10 + 10 = 90: 322 params;
# bias: BN beta 8 + linear bias 10 = 18
PARAMS = 322


def _expected_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def run_cli(argv: list[str]) -> int:
    """main()'s exit code, also when argparse exits by itself."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(FACTORIES)
    return path


def test_table(nets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"{nets}:build", "--input", "1,3,16,16", "--precision", "fp16"]) == 0
    out = capsys.readouterr().out
    assert "MACs = multiply-accumulates" in out and "FLOPs = 2 x MACs" in out
    header = next(line for line in out.splitlines() if line.startswith("name"))
    for column in (
        "kind",
        "output shape",
        "params",
        "MACs",
        "MAC bytes",
        "intensity",
        "bound",
        "latency_us",
    ):
        assert column in header
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isdigit()}
    assert rows["0"][1:4] == ["conv2d", "1x8x16x16", "216"]
    # conv MACs: 3*3*3*8 * 16*16 = 55,296
    assert rows["0"][4] == "55,296"
    assert f"params               {PARAMS:,} (of which bias 18)" in out
    assert "fp16" in out and "peak activations" in out and "latency" in out


def test_json_matches_profile(nets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                f"{nets}:build",
                "--input",
                "2,3,16,16",
                "--hw",
                "t4",
                "--precision",
                "int8",
                "--runtime",
                "graph",
                "--json",
            ]
        )
        == 0
    )
    got = json.loads(capsys.readouterr().out)
    rep = costmodel.profile(_expected_model(), (2, 3, 16, 16), "t4", "int8", "graph")
    assert got == json.loads(rep.to_json())
    assert got["total"]["params"] == PARAMS
    assert got["unsupported"] == []


def test_class_factory_and_toml_path(
    nets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "mine.toml"
    toml.write_text(
        'name = "mine"\nsource = "a test"\ndevice_type = "gpu"\nmemory_bytes = 1000000\n'
        "bandwidth_bytes_per_s = 1e9\n[peak_ops_per_s]\nfp32 = 1e12\n"
    )
    assert main([f"{nets}:Net", "--input", "1,3,4,4", "--hw", str(toml), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["hw"] == "mine"
    assert [layer["name"] for layer in got["layers"]] == ["0"]


def test_plot_writes_a_png(nets: Path, tmp_path: Path) -> None:
    png = tmp_path / "roof.png"
    assert main([f"{nets}:build", "--input", "1,3,16,16", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unsupported_warns_and_is_in_json(nets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"{nets}:odd", "--input", "1,3,4,4", "--json"]) == 0
    cap = capsys.readouterr()
    assert "1 (Softmax)" in cap.err and "NOT" in cap.err
    assert json.loads(cap.out)["unsupported"] == ["1 (Softmax)"]
    assert main([f"{nets}:odd", "--input", "1,3,4,4", "--strict"]) == 1
    assert "1 (Softmax)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{dir}/missing.py:build"], "missing.py' does not exist"),
        (["{nets}:nope"], "factory 'nope' is not a callable"),
        (["{nets}"], "must be FILE.py:FACTORY"),
        (["{nets}:build", "--input", "1,3,x,4"], "--input='1,3,x,4'"),
        (["{nets}:build", "--input", "1,0,4,4"], "--input='1,0,4,4'"),
        (["{nets}:build", "--hw", "t5"], "unknown hardware profile 't5'"),
        (["{nets}:build", "--hw", "{dir}/none.toml"], "none.toml' does not exist"),
        (["{nets}:build", "--precision", "fp8"], "invalid choice: 'fp8'"),
        (["{nets}:build", "--precision", "bf16"], "precision='bf16'"),  # t4 has no bf16
        (["{nets}:needs_width"], "factory 'needs_width'(width) must be callable without"),
        (["{nets}:not_a_module"], "returned int, not a torch.nn.Module"),
        (["{nets}:build", "--input", "1,3"], "input_shape=(1, 3)"),
    ],
)
def test_bad_input_exits_2_naming_the_value(
    nets: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert run_cli([a.format(nets=nets, dir=nets.parent) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "unknown hardware" in message:
        assert "'t4'" in err  # the known ones are listed


def test_validate_subcommand_is_delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(costmodel_cli, "validate_main", lambda argv: seen.append(list(argv)) or 0)
    assert main(["validate", "--hw", "t4"]) == 0
    assert seen == [["--hw", "t4"]]


def test_validate_unknown_profile_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--hw", "t5"]) == 2
    assert "'t5'" in capsys.readouterr().err


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--help"]) == 0
    helptext = capsys.readouterr().out
    for option in (
        "--input",
        "--hw",
        "--precision",
        "--runtime",
        "--json",
        "--plot",
        "--strict",
        "multiply-accumulates",
        "FLOPs = 2 x MACs",
        "validate",
    ):
        assert option in helptext


@pytest.mark.slow
def test_subprocess_json(nets: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "costmodel", f"{nets}:build", "--input", "1,3,8,8", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"]["params"] == PARAMS


def test_plot_networks_api(tmp_path: Path) -> None:
    reps = [
        costmodel.profile(nn.Sequential(nn.Conv2d(3, c, 3), nn.ReLU()), (1, 3, 16, 16))
        for c in (4, 8, 16)
    ]
    out = costmodel.plot_roofline_networks(
        reps, ["a", "b", "c"], "t4", "fp32", tmp_path / "nets.png", highlight=[2]
    )
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"len\(reports\)=3.*len\(labels\)=2"):
        costmodel.plot_roofline_networks(reps, ["a", "b"], "t4", "fp32", tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"highlight=\[3\]"):
        costmodel.plot_roofline_networks(
            reps, list("abc"), "t4", "fp32", tmp_path / "x.png", highlight=[3]
        )
    with pytest.raises(ValueError, match=r"precision='fp16' but some reports.*'fp32'"):
        costmodel.plot_roofline_networks(reps, list("abc"), "t4", "fp16", tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        costmodel.plot_roofline_layers(reps[0], "t4", tmp_path / "no" / "x.png")


def test_roofline_points_mark_overhead_bound_layers() -> None:
    net = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 1))
    small = costmodel.profile(net, (1, 16, 8, 8), hw="t4", precision="fp16")
    big = costmodel.profile(net, (64, 16, 64, 64), hw="t4", precision="fp16", runtime="fused")
    # a tiny input on an eager runtime: each kernel's fixed cost is its whole time
    assert all(p.overhead_bound for p in roofline_points(small))
    assert overhead_share(small) == 1.0
    # 64 x 16 x 64 x 64 fused: the layers move megabytes, the fixed cost is a small part
    assert not any(p.overhead_bound for p in roofline_points(big))
    assert overhead_share(big) < 0.5
    # labels: at most k, spread from the lowest to the highest intensity
    pts = [RooflinePoint(str(i), "x", float(i), 1.0) for i in range(20)]
    shown = _label_spread(pts, 6)
    assert len(shown) == 6 and shown[0].intensity == 0 and shown[-1].intensity == 19
