"""experiments/help_latency.py on small synthetic tables of HELP's and DeepBench's layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import ModuleType

import pytest

import costmodel
from searchspace import NB201Net, OFANet
from tests._scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
NB201 = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
]
OFA = [
    ("204", "7-5-5-5-7-7-5-7-5-7-3-7-5-3-7-3-5-3-5-3",
     "6-4-4-6-6-3-4-3-3-6-3-3-3-6-3-4-6-4-3-6", "2-2-2-2-3"),
    ("136", "7-3-5-3-3-7-3-7-3-7-3-7-3-7-7-3-5-5-7-3",
     "4-6-3-4-4-4-4-6-3-6-6-4-4-6-6-4-3-6-6-4", "2-3-4-3-4"),
    ("132", "3-5-5-7-3-3-5-3-3-3-5-5-3-5-3-3-5-7-7-3",
     "6-3-3-3-4-3-3-4-4-4-4-4-6-6-4-4-6-4-3-6", "4-4-2-2-4"),
]  # fmt: skip
DEEPBENCH = ("gpu", "precision_note", "N", "C", "H", "W", "K", "R", "S", "pad_h", "pad_w",
             "stride_h", "stride_w", "fwd_ms")  # fmt: skip


def help_latency() -> ModuleType:
    return load_script("help_latency")


def write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def tables(tmp_path: Path, mod: ModuleType) -> None:
    """Every latency column counts up with the row, except 1080ti_1 / gold_6226 /
    2080ti_64 / V100, which hold the model's own prediction: there the agreement must
    be perfect."""
    nb = mod.SPACES["nb201"]
    cols = [f"{d}_{b}" for d in (*nb.devices, *nb.unmapped) for b in nb.batches]
    cols += list(nb.batch1_columns)
    rows = []
    for i, s in enumerate(NB201):
        specs = NB201Net.from_string(s).eager_layers(1)
        own = {
            "1080ti_1": costmodel.analyze(specs, "gtx1080ti").total.latency_s,
            "gold_6226": costmodel.analyze(specs, "xeon-gold-6226").total.latency_s,
        }
        rows.append([i, s, *[own[c] * 1e3 if c in own else 1.0 + i for c in cols]])
    write(tmp_path / nb.csv, ["arch_idx", "arch_str", *cols], rows)
    ofa = mod.SPACES["ofa"]
    cols = [f"{d}_{b}" for d in ofa.devices for b in ofa.batches]
    rows = []
    for i, r in enumerate(OFA):
        net = OFANet.from_help_row(dict(zip(("r", "ks20", "e20", "d5"), r, strict=True)))
        own = costmodel.analyze(net.eager_layers(64), "rtx2080ti").total.latency_s
        rows.append([i, *r, *[own * 1e3 if c == "2080ti_64" else 2.0 + i for c in cols]])
    write(tmp_path / ofa.csv, ["arch_idx", "r", "ks20", "e20", "d5", *cols], rows)
    rows = []
    for gpu in (*mod.DEEPBENCH_GPUS, "Nvidia Tesla M40"):
        for i, (n, c, hw, k) in enumerate([(1, 16, 32, 32), (8, 64, 28, 128), (16, 32, 56, 64)]):
            spec = costmodel.LayerSpec("conv2d", (n, c, hw, hw), out_channels=k, kernel_size=3,
                                       padding=1)  # fmt: skip
            ms = costmodel.analyze([spec], "v100", "fp32", "graph").total.latency_s * 1e3
            rows.append([gpu, "Float", n, c, hw, hw, k, 3, 3, 1, 1, 1, 1,
                         ms if gpu == "NVIDIA V100" else 0.1 * (i + 1)])  # fmt: skip
        rows.append([gpu, "16 bit inputs", 1, 1, 8, 8, 1, 1, 1, 0, 0, 1, 1, 9.0])
    write(tmp_path / "deepbench_conv.csv", list(DEEPBENCH), rows)


def test_help_latency_script_on_small_tables(tmp_path: Path) -> None:
    mod = help_latency()
    tables(tmp_path, mod)
    out = tmp_path / "res"
    assert mod.main(["--data", str(tmp_path), "--sample", "3", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    nb = res["spaces"]["nb201"]
    assert (nb["rows"], nb["sampled"]) == (4, 3)
    # Five GPUs at three batches, four CPUs at batch 1.
    assert len(nb["results"]) == 5 * 3 + 4 and nb["missing"] == list(mod.SPACES["nb201"].unmapped)
    by = {(r["space"], r["device"], r["batch"]): r for s in res["spaces"].values()
          for r in s["results"]}  # fmt: skip
    for key in (("nb201", "1080ti", 1), ("nb201", "gold_6226", 1), ("ofa", "2080ti", 64)):
        assert by[key]["median_ratio"] == pytest.approx(1.0)
        assert by[key]["mdape"] == pytest.approx(0.0, abs=1e-12)
        assert by[key]["within_10"] == 1.0 and by[key]["spearman"] == pytest.approx(1.0)
    db = {r["gpu"]: r for r in res["deepbench"]["results"]}
    assert set(db) == set(mod.DEEPBENCH_GPUS) and res["deepbench"]["missing"] == [
        "Nvidia Tesla M40"
    ]
    assert db["NVIDIA V100"]["n"] == 3 and db["NVIDIA V100"]["mdape"] == pytest.approx(0.0)
    md = out.with_suffix(".md").read_text()
    assert md.splitlines()[3].startswith("python ") and "load average" in md


def test_help_latency_names_a_missing_folder(tmp_path: Path) -> None:
    mod = help_latency()
    with pytest.raises(SystemExit, match="does not exist"):
        mod.main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
