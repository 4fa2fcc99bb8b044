"""Fixed, published architectures as points of the search spaces."""

from __future__ import annotations

from searchspace._arch import Architecture, Block, Head, Stem

# MobileNetV2 (Sandler et al., CVPR 2018, Table 2): expansion t, width c, repeats n, stride s.
_MOBILENET_V2 = (
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# A fixed mid-size network of the "cifar" space: the speed probe that calibration and
# validation time in every round beside the networks they measure. A shared VM's speed
# drifts by 10-20% from one minute to the next (experiments/results/
# validation_cpu_protocol.md); calibration records the probe's time per batch, so
# validation can also report latencies at the calibration's machine speed.
REFERENCE_ARCH = (
    "in_c3_h32_w32_n10:stem_k3_c24_s1_nre:conv_k5_g1_c32_s1_nhs,ds_k5_c32_s1_nre,"
    "conv_k5_g4_c32_s1_nhs:conv_k3_g1_c96_s2_nre,sh_k5_g4_c96_s1_nre,ds_k3_c96_s1_nre:"
    "ir_k3_e6_c192_s2_nre:head_c256_nre"
)

# ShuffleNet V1 1.0x (Zhang et al., CVPR 2018, Table 1): output widths of stages 2-4 per g.
SHUFFLENET_WIDTHS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}


def reference_architecture() -> Architecture:
    """The speed probe ``REFERENCE_ARCH``."""
    return Architecture.from_string(REFERENCE_ARCH)


def mobilenet_v2(resolution: int = 224, num_classes: int = 1000) -> Architecture:
    """MobileNetV2 1.0 (torchvision layout: 3,504,872 params at 1000 classes)."""
    stages = []
    for t, c, n, s in _MOBILENET_V2:
        stages.append(
            tuple(Block("ir", 3, c, s if i == 0 else 1, "relu6", expansion=t) for i in range(n))
        )
    return Architecture(
        input_shape=(3, resolution, resolution),
        num_classes=num_classes,
        stem=Stem(3, 32, 2, "relu6"),
        stages=tuple(stages),
        head=Head(1280, "relu6"),
    )


def shufflenet_v1_like(
    groups: int = 8, resolution: int = 224, num_classes: int = 1000
) -> Architecture:
    """ShuffleNet V1 1.0x (g groups) laid onto the 7-stage MobileNetV2 skeleton of mobile.toml.

    Stem 3x3/2 conv (24) + 3x3/2 max pool; stage 2 (4 units) -> skeleton stage 2,
    stage 3 (8 units, stride 2 then 1) -> skeleton stages 3 (stride 2) and 4 (stride 1),
    stage 4 (4 units) -> skeleton stage 5; skeleton stages 0, 1 and 6 are empty; no
    1x1 head conv. Differences from the paper: the first unit of stage 2 uses group
    convolution too (the paper keeps it dense), and stride-2 units have no
    avg-pool + concat shortcut (concatenation is not a costed op here).
    """
    if groups not in SHUFFLENET_WIDTHS:
        raise ValueError(f"groups={groups} must be one of {sorted(SHUFFLENET_WIDTHS)}")
    c2, c3, c4 = SHUFFLENET_WIDTHS[groups]

    def units(c: int, n: int, s: int) -> tuple[Block, ...]:
        return tuple(Block("sh", 3, c, s if i == 0 else 1, "relu", groups=groups) for i in range(n))

    return Architecture(
        input_shape=(3, resolution, resolution),
        num_classes=num_classes,
        stem=Stem(3, 24, 2, "relu", pool=True),
        stages=((), (), units(c2, 4, 2), units(c3, 4, 2), units(c3, 4, 1), units(c4, 4, 2), ()),
        head=Head(0, "relu"),
    )
