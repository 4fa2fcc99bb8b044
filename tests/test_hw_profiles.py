"""Hardware profiles: built-in data files, schema validation, `python -m hw_profiles`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hw_profiles
from hw_profiles import ProfileError, load, parse_profile
from hw_profiles import _cli as hw_cli
from hw_profiles._cli import main as cli_main

BUILT_INS = [
    "a100",
    "gtx1080ti",
    "h100",
    "h200",
    "jetson-orin",
    "l4",
    "rtx2080ti",
    "rtx3090",
    "rtx4090",
    "t4",
    "titan-rtx",
    "titan-x-pascal",
    "titan-xp",
    "v100",
]

MINIMAL_TOML = """\
name = "mydev"
source = "my own measurements, 2026"
device_type = "gpu"
memory_bytes = 8589934592
bandwidth_bytes_per_s = 100e9
[peak_ops_per_s]
fp32 = 4e12
fp16 = 16e12
"""


def _doc(**overrides: Any) -> dict[str, Any]:
    """A valid decoded profile document, with some keys replaced or added."""
    d: dict[str, Any] = {
        "name": "mydev",
        "source": "my own measurements, 2026",
        "device_type": "gpu",
        "memory_bytes": 8589934592,
        "bandwidth_bytes_per_s": 100e9,
        "peak_ops_per_s": {"fp32": 4e12, "fp16": 16e12},
    }
    d.update(overrides)
    return d


# --- built-in data files ------------------------------------------------------------------


def test_available_lists_the_built_ins_sorted() -> None:
    names = hw_profiles.available()
    assert set(BUILT_INS) <= set(names) and names == sorted(names)


@pytest.mark.parametrize("name", BUILT_INS)
def test_built_in_loads_with_source_and_complete_fields(name: str) -> None:
    p = load(name)
    assert p.name == name  # name = file stem, so `load(p.name)` finds it again
    assert p.source.strip() and p.display_name.strip() and p.notes.strip()
    assert p.device_type in hw_profiles.DEVICE_TYPES
    assert p.memory_bytes > 2**30 and p.bandwidth_bytes_per_s > 1e11 and p.cache_bytes > 2**20
    assert "fp32" in p.peak_ops_per_s and "fp16" in p.peak_ops_per_s and "int8" in p.peak_ops_per_s
    assert set(p.runtimes) == set(hw_profiles.RUNTIMES)
    # eager pays per-op host dispatch; graph replay does not
    assert p.runtime("eager").host_overhead_s > p.runtime("graph").host_overhead_s
    for kc in hw_profiles.KERNEL_CLASSES:
        c, m = p.efficiency(kc, "fp32")
        assert 0 < c <= 1 and 0 < m <= 1


def test_t4_has_the_seed_figures_exactly() -> None:
    p = load("t4")
    assert dict(p.peak_ops_per_s) == {
        "fp32": 8.1e12,
        "fp16": 65e12,
        "int8": 130e12,
        "int4": 260e12,
    }
    assert p.bandwidth_bytes_per_s == 300e9
    assert p.memory_bytes == 16 * 2**30
    # ridge point = peak / bandwidth: 8.1e12 / 300e9 = 27 FLOP/byte (fp32);
    # 65e12 / 300e9 = 216.67 (fp16); 130e12 / 300e9 = 433.33 ops/byte (int8)
    assert p.ridge_point("fp32") == pytest.approx(27.0)
    assert p.ridge_point("fp16") == pytest.approx(216.6667, rel=1e-6)
    assert p.ridge_point("int8") == pytest.approx(433.3333, rel=1e-6)


def test_datasheet_choices_for_other_cards() -> None:
    # GeForce: fp16 is the fp32-accumulate tensor rate (half the fp16-accumulate headline),
    # as PyTorch accumulates fp16 GEMMs in fp32.
    assert load("rtx2080ti").peak("fp16") == 56.9e12
    assert load("rtx3090").peak("fp16") == 71e12
    assert load("rtx4090").peak("fp16") == 165.2e12
    # TITAN RTX and data-center parts run fp32 accumulate at full rate.
    assert load("titan-rtx").peak("fp16") == 130.5e12
    assert load("a100").peak("fp16") == 312e12 and load("a100").peak("tf32") == 156e12
    # Hopper tensor figures are dense: half the datasheet's sparse 1,979 TFLOPS.
    assert load("h100").peak("fp16") == load("h200").peak("fp16") == 989.4e12
    assert load("h200").bandwidth_bytes_per_s == 4.8e12
    # Pascal GP102: fp16 at 1/64 of fp32 (11.34 / 64 = 0.177), int8 DP4A at 4x fp32 (45.4)
    p = load("gtx1080ti")
    assert p.peak("fp16") == pytest.approx(p.peak("fp32") / 64, rel=0.01)
    assert p.peak("int8") == pytest.approx(4 * p.peak("fp32"), rel=0.01)
    assert "bf16" not in p.peak_ops_per_s
    assert load("jetson-orin").device_type == "soc"


# HELP's CPUs: (cores, base GHz, AVX-512 FMA units per core, DDR4 MT/s), Intel ARK.
XEONS = {
    "xeon-gold-6226": (12, 2.7, 2, 2933),
    "xeon-gold-6240": (18, 2.6, 2, 2933),
    "xeon-silver-4114": (10, 2.2, 1, 2400),
    "xeon-silver-4210r": (10, 2.4, 1, 2400),
}


@pytest.mark.parametrize("name", XEONS)
def test_xeon_datasheet_arithmetic(name: str) -> None:
    cores, ghz, fma, mts = XEONS[name]
    p = load(name)
    assert p.device_type == "cpu" and "Intel ARK" in p.source and p.threads == cores
    # fp32 peak: cores x base clock x FMA units x 16 AVX-512 lanes x 2 FLOPs per FMA,
    # e.g. Gold 6226: 12 x 2.7e9 x 2 x 16 x 2 = 2.074e12.
    assert p.peak("fp32") == pytest.approx(cores * ghz * 1e9 * fma * 16 * 2, rel=1e-3)
    # Six DDR4 channels of 8 bytes: 6 x 2933e6 x 8 = 140.8 GB/s.
    assert p.bandwidth_bytes_per_s == pytest.approx(6 * mts * 1e6 * 8, rel=1e-3)
    assert p.conv_dispatch == "pytorch_cpu" and p.simd_lanes == 16
    for kc in hw_profiles.KERNEL_CLASSES:
        c, m = p.efficiency(kc, "fp32")
        assert 0 < c <= 1 and 0 < m <= 1
    with pytest.raises(hw_profiles.ProfileError, match="precision='fp16'"):
        p.peak("fp16")


def test_load_caches_and_passes_profiles_through() -> None:
    p = load("t4")
    assert load("t4") is p
    assert load(p) is p


# --- user files ---------------------------------------------------------------------------


def test_user_toml_loads_by_path(tmp_path: Path) -> None:
    f = tmp_path / "mydev.toml"
    f.write_text(MINIMAL_TOML)
    for arg in (f, str(f)):
        p = load(arg)
        assert p.name == "mydev" and p.peak("fp16") == 16e12 and p.path == str(f)
    # runtimes the file omits come from the device-type defaults (gpu eager: 3 us + 11 us)
    assert p.runtime("eager").kernel_overhead_s == 3e-6
    assert p.runtime("eager").host_overhead_s == 11e-6


def test_user_toml_is_read_again_when_it_changes(tmp_path: Path) -> None:
    import os

    f = tmp_path / "mydev.toml"
    f.write_text(MINIMAL_TOML)
    first = load(f)
    assert load(f) is first  # unchanged file: cached
    f.write_text(MINIMAL_TOML.replace("mydev", "mydev2"))
    st_ = f.stat()
    os.utime(f, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000))  # a later edit
    assert load(f).name == "mydev2"


def test_missing_file_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load(bad)


def test_unknown_profile_name_lists_known_ones() -> None:
    with pytest.raises(ProfileError) as e:
        load("rtx309")
    msg = str(e.value)
    assert "'rtx309'" in msg and "did you mean 'rtx3090'" in msg
    assert all(n in msg for n in BUILT_INS)


# --- rejections ---------------------------------------------------------------------------


def test_unknown_key_is_named_with_a_suggestion() -> None:
    d = _doc()
    d["bandwidth"] = d.pop("bandwidth_bytes_per_s")
    with pytest.raises(
        ProfileError,
        match=r"unknown key 'bandwidth'.*did you mean "
        r"'bandwidth_bytes_per_s'",
    ):
        parse_profile(d)
    with pytest.raises(ProfileError, match=r"unknown key 'memory_gb'.*'memory_bytes'"):
        parse_profile(_doc(memory_gb=16))


def test_missing_or_empty_source_is_rejected() -> None:
    d = _doc()
    del d["source"]
    with pytest.raises(ProfileError, match="missing required key 'source'"):
        parse_profile(d)
    with pytest.raises(ProfileError, match="source must say"):
        parse_profile(_doc(source="   "))


def test_wrong_types_are_rejected() -> None:
    with pytest.raises(ProfileError, match=r"memory_bytes='16GB' must be of type int"):
        parse_profile(_doc(memory_bytes="16GB"))
    with pytest.raises(ProfileError, match=r"bandwidth_bytes_per_s=True must be of type float"):
        parse_profile(_doc(bandwidth_bytes_per_s=True))
    with pytest.raises(ProfileError, match=r"peak_ops_per_s.fp16='fast' must be a finite number"):
        parse_profile(_doc(peak_ops_per_s={"fp32": 1e12, "fp16": "fast"}))
    with pytest.raises(ProfileError, match=r"device_type='tpu'"):
        parse_profile(_doc(device_type="tpu"))


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"bandwidth_bytes_per_s": 0}, r"bandwidth_bytes_per_s=0 must be > 0"),
        ({"memory_bytes": -1}, r"memory_bytes=-1 must be > 0"),
        ({"peak_ops_per_s": {"fp32": -1.0}}, r"peak_ops_per_s.fp32=-1.0 must be > 0"),
        ({"peak_ops_per_s": {"fp32": float("inf")}}, r"peak_ops_per_s.fp32=inf must be a finite"),
        ({"cache_bytes": -4}, r"cache_bytes=-4 must be >= 0"),
        (
            {"runtime": {"eager": {"kernel_overhead_s": -1e-6}}},
            r"runtime.eager.kernel_overhead_s=-1e-06 must be >= 0",
        ),
    ],
)
def test_negative_and_zero_numbers_are_rejected(overrides: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ProfileError, match=pattern):
        parse_profile(_doc(**overrides))


def test_zero_overheads_are_allowed() -> None:
    p = parse_profile(_doc(runtime={"graph": {"kernel_overhead_s": 0.0}}))
    assert p.runtime("graph").kernel_overhead_s == 0.0


def test_efficiency_above_one_or_misplaced_is_rejected() -> None:
    with pytest.raises(ProfileError, match=r"compute_efficiency.dense_conv=1.5 must be a fraction"):
        parse_profile(_doc(compute_efficiency={"dense_conv": 1.5}))
    with pytest.raises(ProfileError, match=r"memory_efficiency.fp16.batchnorm=2 must be a fract"):
        parse_profile(_doc(memory_efficiency={"fp16": {"batchnorm": 2}}))
    with pytest.raises(ProfileError, match=r"compute_efficiency.activation=0 must be > 0"):
        parse_profile(_doc(compute_efficiency={"activation": 0}))
    with pytest.raises(ProfileError, match=r"unknown key 'dense_cnv'.*did you mean 'dense_conv'"):
        parse_profile(_doc(compute_efficiency={"dense_cnv": 0.5}))
    # a precision table inside a precision table used to be accepted and silently dropped
    with pytest.raises(ProfileError, match=r"unknown key 'fp32'"):
        parse_profile(_doc(compute_efficiency={"fp16": {"fp32": {"dense_conv": 0.5}}}))
    with pytest.raises(ProfileError, match=r"\[compute_efficiency.fp16\] must be a table"):
        parse_profile(_doc(compute_efficiency={"fp16": 0.5}))


def test_efficiency_lookup_precision_overrides_default() -> None:
    p = parse_profile(
        _doc(
            compute_efficiency={"dense_conv": 0.65, "fp16": {"dense_conv": 0.43}},
            memory_efficiency={"batchnorm": 0.59},
        )
    )
    assert p.efficiency("dense_conv", "fp32") == (0.65, 1.0)
    assert p.efficiency("dense_conv", "fp16") == (0.43, 1.0)
    assert p.efficiency("batchnorm", "fp16") == (1.0, 0.59)


def test_unknown_precision_is_rejected() -> None:
    with pytest.raises(ProfileError, match=r"\[peak_ops_per_s\]: unknown key 'fp8'"):
        parse_profile(_doc(peak_ops_per_s={"fp32": 1e12, "fp8": 2e12}))
    with pytest.raises(ProfileError, match=r"peak_ops_per_s.fp32 is required"):
        parse_profile(_doc(peak_ops_per_s={"fp16": 2e12}))
    with pytest.raises(ProfileError, match=r"no peak for precision='int4'.*\['fp16', 'fp32'\]"):
        parse_profile(_doc()).peak("int4")


def test_unknown_runtime_is_rejected() -> None:
    with pytest.raises(ProfileError, match=r"\[runtime\]: unknown key 'jit'"):
        parse_profile(_doc(runtime={"jit": {"kernel_overhead_s": 1e-6}}))
    with pytest.raises(ProfileError, match=r"unknown key 'launch_s'"):
        parse_profile(_doc(runtime={"eager": {"kernel_overhead_s": 1e-6, "launch_s": 1e-6}}))
    with pytest.raises(ProfileError, match=r"\[runtime.graph\] needs kernel_overhead_s"):
        parse_profile(_doc(runtime={"graph": {"host_overhead_s": 1e-6}}))
    with pytest.raises(ProfileError, match=r"runtime='jit' is not one of"):
        parse_profile(_doc()).runtime("jit")


@given(
    peak=st.floats(min_value=1e9, max_value=1e16),
    bandwidth=st.floats(min_value=1e9, max_value=1e13),
    eff=st.floats(min_value=1e-6, max_value=1.0),
)
def test_valid_numbers_round_trip(peak: float, bandwidth: float, eff: float) -> None:
    p = parse_profile(
        _doc(
            peak_ops_per_s={"fp32": peak},
            bandwidth_bytes_per_s=bandwidth,
            compute_efficiency={"pooling": eff},
        )
    )
    assert p.peak("fp32") == peak
    assert p.ridge_point("fp32") == peak / bandwidth
    assert p.efficiency("pooling", "fp32") == (eff, 1.0)


def test_pooling_kernels_take_pooling_values_unless_set() -> None:
    """max_pooling and global_pooling fall back to "pooling" (hw_profiles.PARENT_CLASS), a
    value of their own wins, and the class's own default beats its parent's per-precision
    value. Fails if a profile written before the split prices a max pool at efficiency 1.0
    or drops its host cost, or if the split classes cannot be given their own values."""
    p = parse_profile(
        _doc(
            compute_efficiency={"pooling": 0.2, "global_pooling": 0.9, "fp16": {"pooling": 0.1}},
            memory_efficiency={"pooling": 0.3},
            runtime={
                "eager": {
                    "kernel_overhead_s": 0.0,
                    "host_overhead_s": 1e-6,
                    "class_host_overhead_s": {"pooling": 4e-6, "max_pooling": 0.0},
                }
            },
        )
    )
    assert hw_profiles.PARENT_CLASS == {"max_pooling": "pooling", "global_pooling": "pooling"}
    assert p.efficiency("max_pooling", "fp32") == (0.2, 0.3)
    assert p.efficiency("max_pooling", "fp16") == (0.1, 0.3)
    assert p.efficiency("global_pooling", "fp32") == (0.9, 0.3)
    assert p.efficiency("global_pooling", "fp16") == (0.9, 0.3)
    eager = p.runtime("eager")
    # 1 us dispatch + 4 us pooling extra; max pooling's own extra is 0; global inherits.
    assert eager.host_s("global_pooling") == pytest.approx(5e-6)
    assert eager.host_s("max_pooling") == pytest.approx(1e-6)
    assert p.efficiency("batchnorm", "fp32") == (1.0, 1.0)  # no parent: unset is 1.0


# --- command line -------------------------------------------------------------------------


def test_cli_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    for unit in ("TFLOPS", "TOPS", "GB/s", "GiB", "FLOP/B"):
        assert unit in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert set(BUILT_INS) <= set(rows)
    # t4: type, fp32 TFLOPS, fp16 TFLOPS, int8 TOPS, GB/s, GiB, ridge fp32, ridge fp16
    assert rows["t4"][1:] == ["gpu", "8.1", "65", "130", "300", "16", "27.0", "216.7"]


def test_cli_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == hw_profiles.available()
    t4 = next(d for d in data if d["name"] == "t4")
    assert t4["peak_ops_per_s"]["int4"] == 260e12
    assert t4["bandwidth_bytes_per_s"] == 300e9
    assert t4["ridge_point_ops_per_byte"]["fp32"] == pytest.approx(27.0)


def test_cli_show_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["show", "t4"]) == 0
    out = capsys.readouterr().out
    assert load("t4").source in out
    assert "65 TFLOPS" in out and "130 TOPS" in out and "300 GB/s" in out and "16 GiB" in out
    assert "216.7" in out  # fp16 ridge point, 65e12 / 300e9
    # Host overhead in us: t4's eager costs are the median of the GPUs fitted to HELP's
    # NAS-Bench-201 latencies (experiments/help_fit.py --write-profiles), 24.2 us (was 11).
    assert "eager" in out and "24.2" in out


def test_cli_show_json_of_user_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "mydev.toml"
    f.write_text(MINIMAL_TOML + "[compute_efficiency]\ndense_conv = 0.5\n")
    assert cli_main(["show", str(f), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "mydev" and d["path"] == str(f)
    # 16e12 / 100e9 = 160 FLOP/byte
    assert d["ridge_point_ops_per_byte"] == {"fp32": 40.0, "fp16": 160.0}
    assert d["efficiency_by_kernel_class"]["fp16"]["dense_conv"] == {"compute": 0.5, "memory": 1.0}
    assert d["runtime"]["eager"] == {"kernel_overhead_s": 3e-6, "host_overhead_s": 11e-6}


def test_cli_show_unknown_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["show", "gtx1080"]) == 2
    err = capsys.readouterr().err
    assert "unknown hardware profile 'gtx1080'" in err and "titan-rtx" in err


def test_cli_show_invalid_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(MINIMAL_TOML.replace("bandwidth_bytes_per_s", "bandwidth"))
    assert cli_main(["show", str(f)]) == 2
    assert "did you mean 'bandwidth_bytes_per_s'" in capsys.readouterr().err


def test_cli_calibrate_dispatches_or_explains(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(hw_cli, "calibrate_main", lambda argv: seen.append(argv) or 0)
    assert cli_main(["calibrate", "--out", "x.toml"]) == 0
    assert seen == [["--out", "x.toml"]]
    # the real calibrator behind it rejects a bad device before measuring anything
    monkeypatch.undo()
    with pytest.raises(SystemExit) as e:
        cli_main(["calibrate", "--device", "tpu"])
    assert e.value.code == 2
    assert "tpu" in capsys.readouterr().err


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli_main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli_main(["frobnicate"])
    assert e.value.code == 2


def test_python_dash_m_entry_point() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "hw_profiles", "list", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and len(json.loads(ok.stdout)) == len(hw_profiles.available())
    bad = subprocess.run(
        [sys.executable, "-m", "hw_profiles", "show", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "known:" in bad.stderr


def test_builtin_profile_names_ignore_case() -> None:
    # people write "T4"; the data file is t4.toml
    assert load("T4") is load("t4")
    assert load("Jetson-Orin").name == load("jetson-orin").name
    with pytest.raises(ProfileError, match="'T5'"):
        load("T5")
