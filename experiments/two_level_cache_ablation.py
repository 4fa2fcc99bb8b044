"""A second cache level on recorded CPU calibrations: the private L2 in front of the fitted
shared-cache / DRAM blend. Refits and predicts; only the L2 copy rate is timed here.

The shipped CPU model has one cache level. Calibration measures its ceiling with copies of
a quarter of the last-level cache, which on the Intel Xeon VM's 260 MiB shared L3 is an
L3 rate (16-22 GB/s), and fits the cache's effective size and fall-off. A layer's
tensors at batch 1 sit in the 2 MiB private L2 (77 GB/s). Putting the L2 rate in place
of the L3 rate (experiments/im2col_l2_ablation.py) helped batch 32 and hurt batch 1: one
blended level then had to span L2 to DRAM. Here the L2 serves a share
h2 = 1 / (1 + (bytes / L2)^p2) of a kernel's traffic at its copy rate and the rest comes
from the fitted blend, harmonically: 1 / bw = h2 / bw_L2 + (1 - h2) / bw_blend. L2 is
the size sysfs gives, p2 a fixed exponent per variant; everything else is fitted exactly
as ``hw_profiles calibrate`` fits, the blend's size and fall-off included.

    python experiments/two_level_cache_ablation.py \\
        --calibration experiments/results/xeon_2026-12-03_c \\
        --out experiments/results/xeon_2026-12-03_c/two_level_cache_ablation

Each calibration's own validations are predicted, of the development sets only
(``--sets``): sets kept for reports are not predicted.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from im2col_l2_ablation import Variant, run_ablation  # noqa: E402

from costmodel import _latency  # noqa: E402
from costmodel._estimate import clear_cache  # noqa: E402
from hw_profiles import HardwareProfile  # noqa: E402

TITLE = "A private L2 in front of the fitted cache blend, refitted"
EXPONENTS = (2.0, 4.0, 8.0)  # the L2's fall-off exponent p2, one variant each


def l2_hit_share(mac_bytes: int, l2: int, exponent: float) -> float:
    """The share of a kernel's traffic the private L2 serves."""
    return 1.0 / (1.0 + (mac_bytes / l2) ** exponent)


@contextlib.contextmanager
def l2_level(l2: int, rate: float, exponent: float) -> Iterator[None]:
    """The latency model with the L2 in front of the profile's cache / DRAM blend."""
    original = _latency.memory_bandwidth

    def two_levels(mac_bytes: int, hw: HardwareProfile) -> float:
        far = original(mac_bytes, hw)
        hit = l2_hit_share(mac_bytes, l2, exponent)
        return 1.0 / (hit / max(rate, far) + (1.0 - hit) / far)

    _latency.memory_bandwidth = two_levels
    clear_cache()
    try:
        yield
    finally:
        _latency.memory_bandwidth = original
        clear_cache()


def two_level_variants(l2: int, rate: float) -> dict[str, Variant]:
    """The model as it ships, and the L2 level in front of it at each exponent."""
    variants = {"shipped": Variant({})}
    for p in EXPONENTS:
        variants[f"L2 p={p:g}"] = Variant({}, functools.partial(l2_level, l2, rate, p))
    return variants


def main(argv: list[str] | None = None) -> int:
    return run_ablation(argv, "experiments/two_level_cache_ablation.py", __doc__, TITLE,
                        two_level_variants)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
