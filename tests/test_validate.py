"""``python -m costmodel validate``: the measuring protocol and the written results.

Nothing here asserts how fast a network runs; only that the protocol takes the
samples it says, and that the results carry both statistics.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from costmodel import count
from costmodel._cli import validate_main as main
from costmodel._measure import lower_quantile, measure_samples
from searchspace import REFERENCE_ARCH, sample_architectures
from tests._scripts import load_script

SPACE = Path(__file__).resolve().parents[1] / "searchspace" / "spaces" / "cifar.toml"


def test_measure_samples_takes_rounds_times_repeats_samples() -> None:
    archs = sample_architectures(str(SPACE), 2, seed=3)
    samples = measure_samples(archs, 1, "cpu", rounds=3, repeats=2, min_s=0.0)
    assert [len(s) for s in samples] == [6, 6]
    assert all(t > 0 for s in samples for t in s)


def test_validate_writes_both_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default statistic is the wall-clock median, with the p10-p90 spread and the lower
    decile beside it: fails if validation reverts to the thread clock or the lower decile
    as its first statistic, or if the spread is not p10 <= median <= p90."""
    argv = [
        "--hw",
        "t4",
        "--device",
        "cpu",
        "--space",
        str(SPACE),
        "--n",
        "3",
        "--rounds",
        "3",
        "--min-ms",
        "0.1",
        "--out",
        str(tmp_path),
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    doc = json.loads((tmp_path / "validation_cpu_b1.json").read_text())
    assert out["b1"]["summary"] == doc["summary"]
    meta = doc["meta"]
    assert meta["rounds"] == 3 and meta["quantile"] == 0.5
    assert meta["clock"] == "wall (time.perf_counter)" and "median" in meta["statistic"]
    assert len(meta["loadavg_before"]) == 3
    assert doc["summary_vs_lower_decile"]["n"] == doc["summary"]["n"] == 3
    for p in doc["points"]:
        assert p["measured_s"] == p["measured_median_s"]
        assert 0 < p["measured_p10_s"] <= p["measured_median_s"] <= p["measured_p90_s"]
    md = (tmp_path / "validation_cpu_b1.md").read_text()
    assert "| 0.5-quantile | 3 |" in md and "| lower decile | 3 |" in md
    assert "clock: wall (time.perf_counter)" in md and "load average" in md


def test_validate_networks_file_and_heldout_set(tmp_path: Path) -> None:
    """--networks FILE validates exactly the listed networks (fails if the file is ignored
    and the space is sampled instead); the held-out list parses into its three families."""
    from costmodel._cli import HELDOUT_FILE, read_networks
    from searchspace import Architecture, NB201Net, OFANet

    nets = read_networks(HELDOUT_FILE)
    kinds = [type(n) for n in nets]
    assert kinds.count(NB201Net) == 10 and kinds.count(OFANet) == 10
    assert kinds.count(Architecture) == 3
    assert all(128 <= n.resolution <= 160 for n in nets if isinstance(n, OFANet))
    listed = [str(n) for n in nets[:3]]
    f = tmp_path / "nets.txt"
    f.write_text("# three NB201 cells\n" + "\n".join(listed) + "\n")
    argv = [
        "--hw",
        "t4",
        "--networks",
        str(f),
        "--rounds",
        "2",
        "--min-ms",
        "0.1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "validation_cpu_nets_b1.json").read_text())
    assert [p["arch"] for p in doc["points"]] == listed
    bad = tmp_path / "bad.txt"
    bad.write_text("ofa:r=12\n")
    assert main(["--hw", "t4", "--networks", str(bad)]) == 2


USER_MODELS = """\
import torch
from torch import nn


class Shuffled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 1)
        self.b = nn.Conv2d(8, 8, 3, padding=1, groups=2)

    def forward(self, x):
        y = self.a(x)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return torch.cat([y, self.b(y)], 1)


def shuffled():
    return Shuffled()


def stacked():
    return nn.Sequential(nn.Conv2d(4, 4, 1), nn.Softmax(dim=1))
"""


def test_validate_a_file_of_user_modules(tmp_path: Path) -> None:
    """Lines ``FILE.py:FACTORY CxHxW`` validate a user's own modules (FILE relative to the
    list); a module with a layer that has no formula is refused by name, not timed."""
    from costmodel import profile
    from costmodel._cli import read_networks
    from costmodel._user_model import ModuleNetwork

    (tmp_path / "models.py").write_text(USER_MODELS)
    f = tmp_path / "nets.txt"
    lines = ["models.py:shuffled 4x6x6", "models.py:shuffled 4x8x8", "models.py:shuffled 4x9x9"]
    f.write_text("\n".join(lines) + "\n")
    net = read_networks(f)[0]
    assert isinstance(net, ModuleNetwork) and net.input_shape == (4, 6, 6)
    assert str(net) == "models.py:shuffled 4x6x6"
    rep = profile(net.build(), (3, 4, 6, 6))
    assert (
        [s.op for s in net.lower(3)]
        == [lc.op for lc in rep.layers]
        == ["conv2d", "channel_shuffle", "conv2d", "concat"]
    )
    argv = [
        "--hw",
        "t4",
        "--networks",
        str(f),
        "--rounds",
        "2",
        "--min-ms",
        "0.1",
        "--batch",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "validation_cpu_nets_b2.json").read_text())
    assert [p["arch"] for p in doc["points"]] == lines
    assert all(p["predicted_s"] > 0 for p in doc["points"])
    for line, why in [
        ("models.py:shuffled", "needs its input shape"),
        ("models.py:nope 4x6x6", "factory 'nope' is not a callable"),
        ("models.py:stacked 4x6x6", r"\[.1 \(Softmax\).\]"),
    ]:
        f.write_text(line + "\n")
        with pytest.raises(ValueError, match=why):
            [n.lower(1) for n in read_networks(f)]


def test_development_list_and_held_out_set_share_no_network() -> None:
    """The former held-out list is a development list now and the new held-out set holds
    none of its networks: fails if a network some decision has seen is validated as
    held out, or if the list loses its development header."""
    from costmodel._cli import DEV_LIST_FILE, HELDOUT_FILE, read_networks
    from searchspace import NB201Net

    dev = [str(n) for n in read_networks(DEV_LIST_FILE)]
    held = [str(n) for n in read_networks(HELDOUT_FILE)]
    assert DEV_LIST_FILE.read_text().startswith("# DEVELOPMENT set")
    assert len(dev) == 23 + 12 and len(held) == 23
    assert not set(dev) & set(held)
    assert sum(isinstance(n, NB201Net) for n in read_networks(DEV_LIST_FILE)) == 22


@pytest.mark.parametrize(
    "flag,value", [("--quantile", "1.5"), ("--rounds", "0"), ("--min-ms", "0")]
)
def test_validate_rejects_bad_protocol_values(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--hw", "t4", flag, value]) == 2
    assert f"{flag}={value}" in capsys.readouterr().err


def test_an_out_folder_that_cannot_be_made_is_refused_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from costmodel import _validate

    monkeypatch.setattr(_validate, "validate", lambda *a, **k: pytest.fail("measured"))
    (tmp_path / "file").write_text("")
    out = str(tmp_path / "file" / "results")  # its parent is a file
    assert main(["--hw", "t4", "--n", "3", "--out", out]) == 2
    assert f"--out={out!r}: cannot create it" in capsys.readouterr().err


def test_lower_quantile_ignores_a_slow_burst() -> None:
    # 100 clean samples 5 ms x (1 + i / 1000) and 30 slowed to 7.5 ms by a neighbour.
    # Decile: position 0.1 x 129 = 12.9 -> 5 ms x 1.0129 = 5.0645 ms, a clean sample;
    # the median, position 64.5 -> 5 ms x 1.0645 = 5.3225 ms, moved with the burst.
    samples = [5e-3 * (1 + i / 1000) for i in range(100)] + [7.5e-3] * 30
    assert lower_quantile(samples, 0.1) == pytest.approx(5.0645e-3)
    assert lower_quantile(samples, 0.5) == pytest.approx(5.3225e-3)


def test_speed_factor_from_the_calibration_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from costmodel._validate import calibration_reference
    from hw_profiles._schema import DATA_DIR

    prof = tmp_path / "cal.toml"
    prof.write_text(
        (DATA_DIR / "t4.toml").read_text() + "\n[calibration]\n"
        f'reference_arch = "{REFERENCE_ARCH}"\n'
        "reference_s = { b1 = 0.004, b32 = 0.09 }\n"
    )
    assert calibration_reference(str(prof), REFERENCE_ARCH) == {1: 0.004, 32: 0.09}
    assert calibration_reference("t4", REFERENCE_ARCH) == {}  # a datasheet profile has none
    argv = [
        "--hw",
        str(prof),
        "--space",
        str(SPACE),
        "--n",
        "3",
        "--rounds",
        "3",
        "--out",
        str(tmp_path),
        "--json",
    ]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "validation_cpu_b1.json").read_text())
    factor = doc["meta"]["speed_factor"]
    assert factor == pytest.approx(0.004 / doc["meta"]["reference_s"])
    # The normalized summary is the plain one on measured times scaled by the factor.
    errs = sorted(abs(p["predicted_s"] / (p["measured_s"] * factor) - 1) for p in doc["points"])
    assert doc["summary_speed_normalized"]["median_abs_error"] == pytest.approx(errs[1])
    assert json.loads(capsys.readouterr().out)["b1"]["speed_factor"] == factor


@pytest.mark.parametrize("where", ["calibrated_cpu.toml", "epyc_op_chains/calibrated_cpu.toml"])
def test_committed_calibrated_profile_loads_and_costs_a_search_space_network(where: str) -> None:
    import costmodel
    import searchspace
    from costmodel._validate import calibration_reference
    from hw_profiles import load

    path = Path(__file__).resolve().parents[1] / "experiments" / "results" / where
    hw = load(str(path))
    assert hw.device_type == "cpu" and hw.conv_dispatch == "pytorch_cpu"
    # fp32 lanes of the calibrating machine's widest vector unit: 8 for AVX2, 16 for AVX-512
    assert hw.simd_lanes in (4.0, 8.0, 16.0)
    assert set(calibration_reference(str(path), REFERENCE_ARCH)) == {1, 8, 32}
    arch = searchspace.mobilenet_v2()
    rep = costmodel.estimate(arch, hw=hw, batch=1)
    # MobileNetV2's 1x1 convs at batch 1 run natively under PyTorch's dispatch, at the
    # native class's fixed cost: without the dispatch the prediction changes.
    plain = dataclasses.replace(hw, conv_dispatch="none")
    assert rep.total.latency_s > 0
    assert costmodel.estimate(arch, hw=plain, batch=1).total.latency_s != pytest.approx(
        rep.total.latency_s, rel=1e-3
    )


def test_shufflenet_guidelines_script_runs(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    mod = load_script("shufflenet_guidelines")
    argv = [
        "--hw",
        str(root / "experiments" / "results" / "calibrated_cpu.toml"),
        "--size",
        "4",
        "--rounds",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert mod.main(argv) == 0
    res = json.loads((tmp_path / "shufflenet_guidelines.json").read_text())
    assert [r["guideline"] for r in res["rows"]] == ["G1"] * 4 + ["G2"] * 4
    assert all(r["measured_ms"] > 0 and r["predicted_ms"] > 0 for r in res["rows"])
    assert all(
        r["measured_p10_ms"] <= r["measured_ms"] <= r["measured_p90_ms"] for r in res["rows"]
    )


def test_unseen_families_list_traces_completely() -> None:
    """experiments/unseen_families.txt: 20 published networks, each traced with every layer
    costed (FBNet's untraceable ChannelShuffle and ShuffleNet V2's split / concat included)
    and its parameter count equal to PyTorch's."""
    from costmodel._cli import read_networks
    from costmodel._user_model import ModuleNetwork

    nets = read_networks(
        Path(__file__).resolve().parents[1] / "experiments" / "unseen_families.txt"
    )
    assert len(nets) == 20 and all(isinstance(n, ModuleNetwork) for n in nets)
    ops_seen: set[str] = set()
    for net in nets:
        specs = net.lower(1)  # raises, naming the layer, if one has no formula
        ops_seen |= {s.op for s in specs}
        params = sum(count(s).params for s in specs)
        assert params == sum(p.numel() for p in net.build().parameters()), str(net)
    assert {"channel_shuffle", "concat", "split", "add"} <= ops_seen
