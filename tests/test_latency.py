"""The latency model: roofline arithmetic, fixed costs, fusion, overlap and shape factors."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costmodel import LayerSpec, analyze, count
from costmodel._latency import (
    COMPUTE,
    FUSED,
    MEMORY,
    OVERHEAD,
    critical_path,
    is_fused,
    roofline_time,
)
from hw_profiles import parse_profile


def make_profile(**over: Any) -> Any:
    doc: dict[str, Any] = {
        "name": "synthetic",
        "source": "test",
        "device_type": "gpu",
        "memory_bytes": 1 << 30,
        "bandwidth_bytes_per_s": 1e11,
        "peak_ops_per_s": {"fp32": 1e12, "fp16": 8e12},
        "runtime": {
            "eager": {"kernel_overhead_s": 2e-6, "host_overhead_s": 10e-6},
            "graph": {"kernel_overhead_s": 1e-6},
            "fused": {"kernel_overhead_s": 1e-6},
        },
    }
    doc.update(over)
    return parse_profile(doc, "<test>")


def conv(
    cin: int = 16, cout: int = 32, hw: int = 32, k: int = 3, n: int = 1, g: int = 1, **kw: Any
) -> LayerSpec:
    return LayerSpec("conv2d", (n, cin, hw, hw), cout, k, 1, k // 2, groups=g, **kw)


def conv_bn_relu(cin: int, cout: int, hw: int, n: int = 1) -> list[LayerSpec]:
    return [
        conv(cin, cout, hw, n=n, name="conv", inputs=("input",)),
        LayerSpec("batchnorm2d", (n, cout, hw, hw), name="bn", inputs=("conv",)),
        LayerSpec("relu", (n, cout, hw, hw), name="act", inputs=("bn",)),
    ]


def kt(spec: LayerSpec, hw: Any, precision: str = "fp32", runtime: str = "eager") -> Any:
    c = count(spec)
    b = 4 if precision == "fp32" else 2
    return roofline_time(spec, c, b * c.mac_elements, hw, precision, runtime)


def test_roofline_arithmetic_conv() -> None:
    hw = make_profile()
    t = kt(conv(), hw)
    # MACs = 3*3*16*32*32*32 = 4,718,592 -> 9,437,184 FLOPs / 1e12 = 9.437184 us
    assert t.compute_s == pytest.approx(9.437184e-6)
    # elements: in 16*32*32 = 16,384 + out 32*32*32 = 32,768 + weights 3*3*16*32 = 4,608
    # = 53,760 * 4 bytes = 215,040 bytes / 1e11 B/s = 2.1504 us
    assert t.memory_s == pytest.approx(2.1504e-6)
    # GPU eager: device = max(9.437, 2.150) + 2 us kernel overhead; host 10 us overlaps
    assert t.device_s == pytest.approx(11.437184e-6)
    assert t.host_s == pytest.approx(10e-6)
    assert t.bound == COMPUTE


def test_efficiency_and_shape_factors_arithmetic() -> None:
    hw = make_profile(
        compute_efficiency={"dense_conv": 0.5},
        saturation_output_elements=32768.0,
        saturation_reduction_elements=144.0,
    )
    t = kt(conv(), hw)
    # W = 32,768 outputs: 32768 / (32768 + 32768) = 0.5; K = 4,718,592 / 32,768 = 144
    # MACs per output: 144 / (144 + 144) = 0.5; efficiency 0.5 * 0.5 * 0.5 = 0.125
    assert t.compute_s == pytest.approx(9.437184e-6 / 0.125)


def test_memory_compute_overlap() -> None:
    none = kt(conv(), make_profile(memory_compute_overlap=0.0))
    half = kt(conv(), make_profile(memory_compute_overlap=0.5))
    # compute 9.437184 us, memory 2.1504 us, + 2 us kernel overhead:
    # no overlap: 9.437184 + 2.1504 + 2 = 13.587584 us; half: 9.437184 + 1.0752 + 2
    assert none.device_s == pytest.approx(13.587584e-6)
    assert half.device_s == pytest.approx(12.512384e-6)


def test_unaligned_channels_penalty_only_at_tensor_core_precisions() -> None:
    hw = make_profile(unaligned_channels_efficiency=0.25)
    aligned, odd = conv(16, 32), conv(16, 30)
    # fp16 at 8e12: aligned 9,437,184 FLOPs -> 1.1796 us; 30 channels: 8,847,360 FLOPs / 2e12
    assert kt(aligned, hw, "fp16").compute_s == pytest.approx(9437184 / 8e12)
    assert kt(odd, hw, "fp16").compute_s == pytest.approx(8847360 / (8e12 * 0.25))
    assert kt(odd, hw, "fp32").compute_s == pytest.approx(8847360 / 1e12)


def test_cache_bandwidth_for_small_working_sets() -> None:
    hw = make_profile(cache_bytes=1 << 20, cache_bandwidth_bytes_per_s=1e12)
    small = LayerSpec("relu", (1, 16, 32, 32))  # 2 * 16,384 * 4 = 131,072 B, fits in 1 MiB
    big = LayerSpec("relu", (1, 64, 64, 64))  # 2 * 262,144 * 4 = 2,097,152 B, does not
    assert kt(small, hw).memory_s == pytest.approx(131072 / 1e12)
    assert kt(big, hw).memory_s == pytest.approx(2097152 / 1e11)


def test_bound_labels() -> None:
    hw = make_profile()
    assert kt(LayerSpec("relu", (1, 8, 4, 4)), hw).bound == OVERHEAD
    assert kt(LayerSpec("relu", (64, 256, 56, 56)), hw).bound == MEMORY
    assert kt(conv(256, 256, 56, n=8), hw).bound == COMPUTE


def test_class_host_overhead() -> None:
    doc_rt = {
        "eager": {
            "kernel_overhead_s": 0.0,
            "host_overhead_s": 4e-6,
            "class_host_overhead_s": {"depthwise_conv": 90e-6},
        }
    }
    hw = make_profile(device_type="cpu", runtime=doc_rt)
    dw = conv(32, 32, 8, g=32)
    # CPU: host cost adds to the kernel: 4 us + 90 us extra for a depthwise conv
    assert kt(dw, hw).overhead_s == pytest.approx(94e-6)
    assert kt(LayerSpec("relu", (1, 8, 4, 4)), hw).overhead_s == pytest.approx(4e-6)


def test_fusion_rule_uses_the_producer_only() -> None:
    net = conv_bn_relu(16, 32, 8)
    assert [is_fused(s, "fused", i > 0) for i, s in enumerate(net)] == [False, True, True]
    assert not any(is_fused(s, "eager", True) for s in net)
    first_bn = LayerSpec("batchnorm2d", (1, 3, 8, 8), name="bn", inputs=("input",))
    assert not is_fused(first_bn, "fused", False)
    rep = analyze(net, make_profile(), "fp32", "fused")
    assert [layer.bound for layer in rep.layers][1:] == [FUSED, FUSED]
    assert rep.total.latency_s == pytest.approx(rep.layers[0].latency_s)


@settings(max_examples=60, deadline=None)
@given(
    cin=st.sampled_from([3, 8, 16, 24, 64]),
    cout=st.sampled_from([8, 16, 30, 64, 128]),
    hw_=st.sampled_from([4, 8, 16, 32]),
    n=st.sampled_from([1, 8, 32]),
    device=st.sampled_from(["gpu", "cpu"]),
)
def test_fused_never_slower_than_eager(cin: int, cout: int, hw_: int, n: int, device: str) -> None:
    prof = make_profile(device_type=device)
    net = conv_bn_relu(cin, cout, hw_, n)
    eager = analyze(net, prof, "fp32", "eager").total.latency_s
    fused = analyze(net, prof, "fp32", "fused").total.latency_s
    assert fused <= eager


def _bigger(prof: Any, **scale: float) -> Any:
    peaks = {p: v * scale.get("peak", 1.0) for p, v in prof.peak_ops_per_s.items()}
    return dataclasses.replace(
        prof,
        peak_ops_per_s=peaks,
        bandwidth_bytes_per_s=prof.bandwidth_bytes_per_s * scale.get("bw", 1.0),
        cache_bandwidth_bytes_per_s=prof.cache_bandwidth_bytes_per_s * scale.get("cbw", 1.0),
    )


@settings(max_examples=80, deadline=None)
@given(
    layer=st.sampled_from(["dense", "dw", "pw", "group", "relu", "bn", "pool", "linear"]),
    c=st.sampled_from([8, 12, 32, 96, 256]),
    size=st.sampled_from([2, 7, 16, 56]),
    n=st.sampled_from([1, 4, 32]),
    precision=st.sampled_from(["fp32", "fp16"]),
    device=st.sampled_from(["gpu", "cpu"]),
    factor=st.floats(1.0, 100.0),
    which=st.sampled_from(["peak", "bw", "cbw"]),
    cache_model=st.sampled_from(["blend", "ceilings"]),
)
def test_latency_never_rises_when_peak_or_bandwidth_rises(
    layer: str,
    c: int,
    size: int,
    n: int,
    precision: str,
    device: str,
    factor: float,
    which: str,
    cache_model: str,
) -> None:
    specs = {
        "dense": conv(c, c, size, n=n),
        "dw": conv(c, c, size, n=n, g=c),
        "pw": conv(c, 2 * c, size, k=1, n=n),
        "group": conv(c, c, size, n=n, g=4),
        "relu": LayerSpec("relu", (n, c, size, size)),
        "bn": LayerSpec("batchnorm2d", (n, c, size, size)),
        "pool": LayerSpec("maxpool2d", (n, c, size, size), kernel_size=2, stride=2),
        "linear": LayerSpec("linear", (n, c * size), c),
    }
    spec = specs[layer]
    prof = make_profile(
        device_type=device,
        cache_bytes=1 << 20,
        cache_bandwidth_bytes_per_s=3e11,
        saturation_output_elements=5000.0,
        saturation_reduction_elements=20.0,
        wave_output_elements=4096.0,
        unaligned_channels_efficiency=0.5,
        memory_compute_overlap=0.3,
        compute_efficiency={"depthwise_conv": 0.2, "fp16": {"dense_conv": 0.6}},
        memory_efficiency={"batchnorm": 0.5},
        cache_model=cache_model,
        cache_falloff_exponent=2.0,
    )
    faster = _bigger(prof, **{which: factor})
    for rt in ("eager", "graph", "fused"):
        slow = analyze([spec], prof, precision, rt).total.latency_s
        fast = analyze([spec], faster, precision, rt).total.latency_s
        assert fast <= slow * (1 + 1e-12)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([2, 4, 8, 16, 32]), min_size=1, max_size=8),
    cs=st.lists(st.sampled_from([8, 16, 64, 256]), min_size=8, max_size=8),
    n=st.sampled_from([1, 64]),
)
def test_gpu_eager_latency_between_max_and_sum_of_host_and_device(
    sizes: list[int], cs: list[int], n: int
) -> None:
    prof = make_profile()
    net = []
    prev = "input"
    for i, s in enumerate(sizes):
        name = f"l{i}"
        net.append(
            conv(cs[i], cs[i], s, n=n, name=name, inputs=(prev,))
            if i % 2 == 0
            else LayerSpec("relu", (n, cs[i], s, s), name=name, inputs=(prev,))
        )
        prev = name
    rep = analyze(net, prof, "fp32", "eager")
    counts = [count(s) for s in net]
    times = [
        roofline_time(s, c, 4 * c.mac_elements, prof, "fp32", "eager")
        for s, c in zip(net, counts, strict=True)
    ]
    host = sum(t.host_s for t in times)
    dev = sum(t.device_s for t in times)
    assert max(host, dev) * (1 - 1e-12) <= rep.total.latency_s <= (host + dev) * (1 + 1e-12)
    assert sum(critical_path(times)) == pytest.approx(rep.total.latency_s)


def test_cpu_latency_is_the_plain_sum() -> None:
    prof = make_profile(device_type="cpu")
    net = conv_bn_relu(16, 32, 16)
    rep = analyze(net, prof, "fp32", "eager")
    times = [kt(s, prof) for s in net]
    assert all(t.host_s == 0 for t in times)
    assert rep.total.latency_s == pytest.approx(sum(t.device_s for t in times))


def test_estimate_equals_analyze_with_fusion_and_shape_factors() -> None:
    searchspace = pytest.importorskip("searchspace")
    from costmodel import estimate

    if not hasattr(searchspace, "mobilenet_v2"):
        pytest.skip("searchspace zoo not available")
    arch = searchspace.mobilenet_v2()
    prof = make_profile(
        cache_bytes=1 << 20,
        cache_bandwidth_bytes_per_s=3e11,
        saturation_output_elements=5000.0,
        saturation_reduction_elements=20.0,
    )
    for rt in ("eager", "fused"):
        for batch in (1, 8):
            a = analyze(arch.lower(batch), prof, "fp32", rt).total.latency_s
            e = estimate(arch, prof, "fp32", batch, rt).total.latency_s
            assert e == pytest.approx(a, rel=1e-12)


def test_output_channel_saturation_and_cpu_simd_lanes() -> None:
    cpu = make_profile(device_type="cpu", saturation_output_channels=8.0, simd_lanes=8.0)
    gpu = make_profile(saturation_output_channels=8.0, unaligned_channels_efficiency=0.5)
    # 32 -> 32, g=4, 8x8: 2,048 outputs x (8 x 9) = 147,456 MACs = 294,912 FLOPs;
    # N = 8 output channels per group: 8 / (8 + 8) = 0.5; 8 channels fill 8 lanes.
    assert kt(conv(32, 32, 8, g=4), cpu).compute_s == pytest.approx(294912 / (1e12 * 0.5))
    # 24 -> 24, g=4: 1,536 outputs x (6 x 9) = 82,944 MACs = 165,888 FLOPs; N = 6: 6 / 14;
    # 6 input and 6 output channels per group fill 6 of 8 lanes each: x (6/8)^2 on a CPU.
    assert kt(conv(24, 24, 8, g=4), cpu).compute_s == pytest.approx(
        165888 / (1e12 * 6 / 14 * (6 / 8) ** 2)
    )
    # A GPU at fp32 has no lane factor, and tensor-core alignment only applies at fp16.
    assert kt(conv(24, 24, 8, g=4), gpu).compute_s == pytest.approx(165888 / (1e12 * 6 / 14))
    # 90 channels: ceil(90 / 8) = 12 vectors of 8, 90 / 96 used (the paper's 1:2 G1 row).
    wide = LayerSpec("conv2d", (1, 90, 8, 8), 96, 1)  # 64 x 96 outputs x 90 = 552,960 MACs
    assert kt(wide, cpu).compute_s == pytest.approx(1105920 / (1e12 * 96 / 104 * 90 / 96))
    # Depthwise runs its own kernel, not a GEMM over channels: neither factor.
    dw = conv(32, 32, 8, g=32)
    assert kt(dw, cpu).compute_s == pytest.approx(2 * count(dw).macs / 1e12)


def test_cache_falloff_blends_cache_and_dram_bandwidth() -> None:
    from costmodel._latency import memory_bandwidth

    step = make_profile(cache_bytes=1 << 20, cache_bandwidth_bytes_per_s=1e12)
    smooth = make_profile(
        cache_bytes=1 << 20, cache_bandwidth_bytes_per_s=1e12, cache_falloff_exponent=2.0
    )
    # relu on 1x32x64x64: in + out = 2 x 131,072 x 4 B = 1,048,576 B = cache_bytes,
    # so half the traffic hits: 1,048,576 x (0.5 / 1e12 + 0.5 / 1e11) s.
    at = LayerSpec("relu", (1, 32, 64, 64))
    assert kt(at, smooth).memory_s == pytest.approx(1048576 * (0.5 / 1e12 + 0.5 / 1e11))
    assert kt(at, step).memory_s == pytest.approx(1048576 / 1e12)  # the step: fits
    sizes = [1 << k for k in range(10, 30)]
    bws = [memory_bandwidth(b, smooth) for b in sizes]
    assert all(a >= b for a, b in itertools.pairwise(bws))  # never rises with size
    assert 1e11 <= bws[-1] < 1.01e11 and 0.99e12 < bws[0] <= 1e12


def test_cache_ceilings_scale_the_cache_rate_and_cap_missed_traffic_at_dram() -> None:
    common = {"cache_bytes": 1 << 20, "cache_bandwidth_bytes_per_s": 1e12,
              "cache_falloff_exponent": 2.0}  # fmt: skip
    blend = make_profile(**common, memory_efficiency={"pooling": 0.01, "activation": 0.9})
    ceilings = make_profile(
        **common, memory_efficiency={"pooling": 0.01, "activation": 0.9}, cache_model="ceilings"
    )
    # relu on 32x32x64x64: in + out = 2 x 4,194,304 x 4 B = 33,554,432 B, 32x the cache:
    # hit share 1 / (1 + 32^2) = 1 / 1025. Ceilings: max(B / (0.9 x 1e12), B x 1024/1025 / 1e11),
    # DRAM binds; the blend: B x (1/1025 / 1e12 + 1024/1025 / 1e11) / 0.9.
    relu = LayerSpec("relu", (32, 32, 64, 64))
    b, miss = 33554432, 1024 / 1025
    assert kt(relu, ceilings).memory_s == pytest.approx(b * miss / 1e11)
    assert kt(relu, blend).memory_s == pytest.approx(b * (1 / 1025 / 1e12 + miss / 1e11) / 0.9)
    # A 2x2 stride-2 average pool at 1% of the cache's rate streams at 1e10 B/s, below
    # DRAM's 1e11: its own rate binds inside the cache and past it.
    for n in (1, 32):  # in + out = (131,072 + 32,768) x 4 B = 0.625 MiB per image
        pool = LayerSpec("avgpool2d", (n, 32, 64, 64), kernel_size=2, stride=2)
        assert kt(pool, ceilings).memory_s == pytest.approx(n * 655360 / (0.01 * 1e12))
    # The blend slows the spilled pool by nearly the whole cache / DRAM ratio (10x).
    spilled = LayerSpec("avgpool2d", (32, 32, 64, 64), kernel_size=2, stride=2)
    assert kt(spilled, blend).memory_s > 9 * kt(spilled, ceilings).memory_s
    # Without a cache both are the plain roofline.
    plain = make_profile(cache_model="ceilings")
    assert kt(relu, plain).memory_s == pytest.approx(b / 1e11)


def test_native_conv_class_only_where_the_profile_models_pytorch_dispatch() -> None:
    from costmodel._kinds import latency_class

    rt = {
        "eager": {
            "kernel_overhead_s": 0.0,
            "host_overhead_s": 5e-6,
            "class_host_overhead_s": {"dense_conv": 80e-6, "native_conv": 20e-6},
        }
    }
    plain = make_profile(device_type="cpu", runtime=rt)
    torch_cpu = make_profile(device_type="cpu", runtime=rt, conv_dispatch="pytorch_cpu")
    small = conv(8, 8, 8)  # 3x3, batch 1, 512 input elements: PyTorch runs it natively
    big_kernel = conv(8, 8, 8, k=5)  # 5x5: oneDNN
    assert latency_class(small, "pytorch_cpu") == "native_conv"
    assert latency_class(big_kernel, "pytorch_cpu") == "dense_conv"
    assert latency_class(small) == "dense_conv"
    assert kt(small, plain).overhead_s == pytest.approx(85e-6)
    assert kt(small, torch_cpu).overhead_s == pytest.approx(25e-6)
    assert kt(big_kernel, torch_cpu).overhead_s == pytest.approx(85e-6)


@settings(max_examples=40, deadline=None)
@given(
    n=st.sampled_from([1, 1, 2, 16]),
    c=st.sampled_from([4, 8, 16, 48]),
    size=st.sampled_from([2, 7, 16, 32]),
    k=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    groups=st.sampled_from(["1", "2", "dw"]),
    threads=st.sampled_from([1, 1, 2]),
)
def test_pytorch_cpu_dispatch_rule_matches_the_installed_torch(
    n: int, c: int, size: int, k: int, stride: int, groups: str, threads: int
) -> None:
    torch = pytest.importorskip("torch")
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    from torch.profiler import ProfilerActivity, profile

    from costmodel._kinds import pytorch_cpu_uses_onednn

    g = c if groups == "dw" else int(groups)
    spec = LayerSpec("conv2d", (n, c, size, size), c, k, stride, k // 2, groups=g)
    m = torch.nn.Conv2d(c, c, k, stride, k // 2, groups=g, bias=False).eval()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            m(torch.randn(n, c, size, size))
    finally:
        torch.set_num_threads(before)
    ran_onednn = any("mkldnn_convolution" in e.key for e in prof.key_averages())
    assert ran_onednn == pytorch_cpu_uses_onednn(spec, threads)


def test_fresh_page_cost_for_outputs_above_the_mmap_threshold() -> None:
    hw = make_profile(
        device_type="cpu", mmap_threshold_bytes=float(32 * 2**20), page_fault_s_per_byte=1e-9
    )
    small = LayerSpec("relu", (1, 64, 256, 256))  # 4,194,304 x 4 B = 16 MiB output: reused
    big = LayerSpec("relu", (1, 256, 256, 256))  # 16,777,216 x 4 B = 64 MiB output: fresh
    off = make_profile(device_type="cpu")
    assert kt(small, hw).overhead_s == pytest.approx(kt(small, off).overhead_s)
    # 67,108,864 B x 1 ns/B = 67.1 ms on top of the dispatch cost
    assert kt(big, hw).overhead_s - kt(big, off).overhead_s == pytest.approx(0.067108864)
