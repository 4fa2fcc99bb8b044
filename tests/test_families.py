"""NAS-Bench-201 and OFA MobileNetV3 networks: exact counts, agreement with PyTorch, strings.

Conventions: ``macs`` are multiply-accumulates; ``params`` include biases.
NAS-Bench-201's own cost table ("FLOPs" in M) counts conv and linear
multiply-accumulates plus the classifier's bias adds (see the golden tests);
OFA's ``count_net_flops`` counts conv and linear multiply-accumulates.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import costmodel
from costmodel._trace import trace_layers
from searchspace import NB201Net, OFANet
from searchspace._nb201 import EDGES, OPS
from tests.reference_nets import OFAHsigmoid, OFAHswish

# Cell strings from HELP's NAS-Bench-201 table, plus NB201's extremes.
ALL_3X3 = "+".join("|" + "|".join(f"nor_conv_3x3~{i}" for i in range(j)) + "|" for j in (1, 2, 3))
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
NB201_STRINGS = [
    ALL_3X3,
    ALL_NONE,
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|",
]
# Rows (r, ks20, e20, d5) of HELP's OFA table: 20 slots, only the first d of a stage used.
OFA_ROWS = [
    (
        "204",
        "7-5-5-5-7-7-5-7-5-7-3-7-5-3-7-3-5-3-5-3",
        "6-4-4-6-6-3-4-3-3-6-3-3-3-6-3-4-6-4-3-6",
        "2-2-2-2-3",
    ),
    (
        "136",
        "7-3-5-3-3-7-3-7-3-7-3-7-3-7-7-3-5-5-7-3",
        "4-6-3-4-4-4-4-6-3-6-6-4-4-6-6-4-3-6-6-4",
        "2-3-4-3-4",
    ),
    (
        "132",
        "3-5-5-7-3-3-5-3-3-3-5-5-3-5-3-3-5-7-7-3",
        "6-3-3-3-4-3-3-4-4-4-4-4-6-6-4-4-6-4-3-6",
        "4-4-2-2-4",
    ),
]
OFA_MIN = OFANet(224, (3,) * 10, (3,) * 10, (2,) * 5)
OFA_MAX = OFANet(224, (7,) * 20, (6,) * 20, (4,) * 5)


def ofa_row(r: str, ks: str, e: str, d: str) -> OFANet:
    return OFANet.from_help_row({"r": r, "ks20": ks, "e20": e, "d5": d})


def assert_agrees(net: NB201Net | OFANet, batch: int) -> None:
    """The lowering is what profile() traces from the built module, layer by layer."""
    model = net.build()
    shape = (batch, *net.input_shape)
    specs, unsupported = trace_layers(model, shape)
    lowered = net.lower(batch)
    assert unsupported == ()
    assert specs == lowered
    assert [s.name for s in specs] == [s.name for s in lowered]
    assert [s.inputs for s in specs] == [s.inputs for s in lowered]
    prof = costmodel.profile(model, shape, hw="rtx2080ti")
    ana = costmodel.analyze(lowered, hw="rtx2080ti")
    assert [(x.name, x.params, x.macs, x.mac_bytes) for x in prof.layers] == [
        (x.name, x.params, x.macs, x.mac_bytes) for x in ana.layers
    ]
    assert prof.total == ana.total
    assert ana.total.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("s", NB201_STRINGS)
def test_nb201_lowering_is_what_pytorch_runs(s: str) -> None:
    assert_agrees(NB201Net.from_string(s), batch=1)


def test_nb201_agrees_at_batch_and_other_settings() -> None:
    assert_agrees(NB201Net.from_string(NB201_STRINGS[4]), batch=3)
    assert_agrees(NB201Net.from_string(NB201_STRINGS[4] + ":n120:r16"), batch=2)


@pytest.mark.parametrize("row", OFA_ROWS)
def test_ofa_lowering_is_what_pytorch_runs(row: tuple[str, str, str, str]) -> None:
    assert_agrees(ofa_row(*row), batch=1)


def test_ofa_agrees_at_batch() -> None:
    assert_agrees(OFANet(128, (5,) * 10, (4,) * 10, (2,) * 5, num_classes=10), batch=2)


def test_nb201_golden_all_conv3x3_cell() -> None:
    rep = costmodel.analyze(NB201Net.from_string(ALL_3X3).lower(1), hw="rtx2080ti")
    # params: stem 3*3*3*16 + BN 32 = 464
    #   stage 1: 5 cells * 6 edges * (3*3*16*16 + BN 32) = 5 * 6 * 2,336 = 70,080
    #   reduction 16->32: 3*3*16*32 + 64 + 3*3*32*32 + 64 + 1x1 16*32 = 14,464
    #   stage 2: 5 * 6 * (9,216 + 64) = 278,400
    #   reduction 32->64: 18,432 + 128 + 36,864 + 128 + 2,048 = 57,600
    #   stage 3: 5 * 6 * (36,864 + 128) = 1,109,760
    #   lastact BN 128, classifier 64*10 + 10 = 650
    # = 1,531,546, NB201's cost table: 1.531546 M (its largest network)
    assert rep.total.params == 1_531_546
    conv_linear = sum(x.macs for x in rep.layers if x.op in ("conv2d", "linear"))
    # stem 9*3*16*32*32 = 442,368; every cell conv 9*c*c*H*W = 2,359,296 at (16, 32x32),
    # (32, 16x16) and (64, 8x8): 3 stages * 30 = 212,336,640; each reduction block
    # 9*c*2c*(H/2)^2 + 9*2c*2c*(H/2)^2 + c*2c*(H/2)^2 = 3,670,016, twice; linear 640
    # = 220,119,680; NB201's table says 220.11969 M: these plus the 10 bias adds
    assert conv_linear == 220_119_680
    # batch norms fold to one MAC per element: 16*32*32 (stem) + 5*6*16*32*32 (stage 1)
    # + 2*(32*16*16) + 5*6*32*16*16 + 2*(64*8*8) + 5*6*64*8*8 + 64*8*8 (lastact) = 905,216
    assert rep.total.macs - conv_linear == 905_216


def test_nb201_golden_all_none_cell_is_the_smallest() -> None:
    net = NB201Net.from_string(ALL_NONE)
    rep = costmodel.analyze(net.lower(1), hw="rtx2080ti")
    # 1,531,546 minus the 90 cell convs and their BNs (70,080 + 278,400 + 1,109,760)
    # = 73,306: NB201's smallest network, 0.073306 M
    assert rep.total.params == 73_306
    conv_linear = sum(x.macs for x in rep.layers if x.op in ("conv2d", "linear"))
    assert conv_linear == 442_368 + 2 * 3_670_016 + 640 == 7_783_040  # NB201: 7.78305 M
    # the zero op still runs: 6 edges * 15 cells multiply by 0.0, 5 adds per cell sum them
    assert sum(x.op == "mul" for x in rep.layers) == 90
    assert sum(x.op == "add" for x in rep.layers) == 15 * 3 + 2
    # eager NB201 runs every layer but flatten, plus one 0 + x per node (45)
    assert net.eager_kernels() == len(rep.layers) - 1 + 45


def test_ofa_golden_smallest_subnet() -> None:
    rep = costmodel.analyze(OFA_MIN.lower(1), hw="rtx2080ti")
    by_block: dict[str, int] = {}
    for x in rep.layers:
        key = ".".join(x.name.split(".")[:2]) if x.name.startswith("blocks.") else x.name
        by_block[key] = by_block.get(key, 0) + x.params
    # MBConv params = cin*mid + 2mid (BN) + k*k*mid + 2mid + [SE] + mid*cout + 2cout,
    # mid = cin*e; SE = mid*s + s + s*mid + mid with s = make_divisible(mid // 4, 8)
    assert by_block["blocks.0"] == 9 * 16 + 32 + 16 * 16 + 32 == 464  # expand 1: no 1x1
    assert by_block["blocks.1"] == 16 * 48 + 96 + 9 * 48 + 96 + 48 * 24 + 48 == 2_592
    # SE on mid 72: 72 // 4 = 18 rounds to 16, which is < 0.9 * 18, so s = 24
    assert (
        by_block["blocks.3"]
        == (24 * 72 + 144 + 9 * 72 + 144 + (72 * 24 + 24) + (24 * 72 + 72) + 72 * 40 + 80)
        == 9_176
    )
    # mid 480 -> s = 120: 76,800 + 960 + 4,320 + 960 + 57,720 + 58,080 + 76,800 + 320
    assert by_block["blocks.10"] == 275_960
    parts = [
        3 * 3 * 3 * 16 + 32,  # first_conv: 464
        464, 2_592, 4_440,  # blocks 0-2
        9_176, 19_072,  # stage 2 (SE)
        16_120, 41_680,  # stage 3
        80_448, 139_416,  # stage 4 (SE)
        155_640, 275_960,  # stage 5 (SE)
        160 * 960 + 2 * 960,  # final expand + BN: 155,520
        960 * 1280,  # feature mix, no BN, no bias: 1,228,800
        1280 * 1000 + 1000,  # classifier: 1,281,000
    ]  # fmt: skip
    assert rep.total.params == sum(parts) == 3_410_792
    # OFA's largest subnet (k7, e6, d4): its weights are the whole w1.0 supernet's, quoted
    # as 7.7 M parameters
    assert costmodel.analyze(OFA_MAX.lower(1), hw="rtx2080ti").total.params == 7_664_760
    # first conv 3*3*3*16*112*112 = 5,419,008 MACs; the classifier 1280*1000 = 1,280,000
    assert rep.layers[0].macs == 5_419_008 and rep.layers[-1].macs == 1_280_000


def test_ofa_eager_kernel_count_golden() -> None:
    specs = OFA_MIN.lower(1)
    # 139 layers, 2 views (flatten, dropout); h_swish 15 times (first conv, 2 blocks x 2
    # acts in stages 3-5, final expand, feature mix) at 3 extra kernels; h_sigmoid 6 (SE)
    # at 2 extra; 7 global pools (6 SE + head) at 1 extra: 137 + 45 + 12 + 7 = 201
    assert len(specs) == 139
    assert OFA_MIN.eager_kernels() == 201


def _as_ofa_code(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with PyTorch's fused hard activations swapped for OFA's own."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Hardswish):
            setattr(module, name, OFAHswish())
        elif isinstance(child, torch.nn.Hardsigmoid):
            setattr(module, name, OFAHsigmoid())
        else:
            _as_ofa_code(child)
    return module


@pytest.mark.parametrize("row", OFA_ROWS[:1])
def test_ofa_eager_layers_are_what_profile_reads_in_ofas_code(row: tuple[str, ...]) -> None:
    net = ofa_row(*row)
    rep = costmodel.profile(_as_ofa_code(net.build().eval()), (2, *net.input_shape))
    assert rep.unsupported == ()
    mine = net.eager_layers(2)
    assert [(x.name, x.op, x.in_shape) for x in rep.layers] == [
        (s.name, s.op, s.in_shape) for s in mine
    ]
    assert rep.total.mac_elements == costmodel.analyze(mine).total.mac_elements
    # each h_swish is add, relu6, mul, truediv over its whole tensor: 2 + 2 + 3 + 2 = 9
    # tensor passes where nn.Hardswish makes 2; parameters and MACs do not change
    fused = costmodel.analyze(net.lower(2))
    assert fused.total.mac_elements < rep.total.mac_elements
    assert (fused.total.params, fused.total.macs) == (rep.total.params, rep.total.macs)
    # every launched layer is a kernel; each global pool's second mean is one more
    launched = sum(1 for s in mine if not costmodel.count(s).alias)
    pools = sum(1 for s in mine if s.op == "global_avgpool2d")
    assert net.eager_extra_kernels() == pools
    assert net.eager_kernels() == launched + pools


def _nb201_code_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """NB201's InferCell.forward: each node is Python's ``sum()``, which starts from 0."""
    nodes = [x]
    for j in (1, 2, 3):
        nodes.append(
            sum(self.layers[e](nodes[src]) for e, (node, src) in enumerate(EDGES) if node == j)
        )
    return nodes[-1]


@pytest.mark.parametrize("cell", NB201_STRINGS[2:4])
def test_nb201_eager_layers_are_what_profile_reads_in_nb201s_code(
    cell: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = NB201Net.from_string(cell)
    model = net.build().eval()
    cell_type = type(model.cells[0])
    monkeypatch.setattr(cell_type, "forward", _nb201_code_forward)
    rep = costmodel.profile(model, (2, *net.input_shape))
    mine = net.eager_layers(2)
    assert rep.unsupported == ()
    assert [(x.name, x.op, x.in_shape) for x in rep.layers] == [
        (s.name, s.op, s.in_shape) for s in mine
    ]
    # one 0 + x per node, 3 per cell, 15 cells: each reads and writes the node's tensor
    scalar_adds = [s for s in mine if s.op == "add" and s.num_inputs == 1]
    assert len(scalar_adds) == len(mine) - len(net.lower(2)) == 45
    assert net.eager_kernels() == len(mine) - 1  # every layer but the flatten view
    assert net.eager_extra_kernels() == 0


def test_ofa_help_row_picks_the_active_slots() -> None:
    net = ofa_row(*OFA_ROWS[0])
    # d = 2-2-2-2-3: slots 0,1 | 4,5 | 8,9 | 12,13 | 16,17,18 of the 20
    assert net.ks == (7, 5, 7, 7, 5, 7, 5, 3, 5, 3, 5)
    assert net.e == (6, 4, 6, 3, 3, 6, 3, 6, 6, 4, 3)
    assert net.to_string() == (
        "ofa:r=204:ks=7-5-7-7-5-7-5-3-5-3-5:e=6-4-6-3-3-6-3-6-6-4-3:d=2-2-2-2-3"
    )
    assert OFANet.from_string(net.to_string()) == net


def test_nb201_string_round_trip_and_help_row() -> None:
    for s in NB201_STRINGS:
        net = NB201Net.from_help_row({"arch_str": s})
        assert net.to_string() == s == net.cell_string()
    other = NB201Net.from_string(ALL_NONE + ":n120:r16")
    assert (other.num_classes, other.input_shape) == (120, (3, 16, 16))
    assert other.to_string() == ALL_NONE + ":n120:r16"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(OPS), min_size=len(EDGES), max_size=len(EDGES)))
def test_nb201_string_is_an_exact_inverse(ops: list[str]) -> None:
    net = NB201Net(tuple(ops))
    assert NB201Net.from_string(net.to_string()) == net


@st.composite
def ofa_nets(draw: st.DrawFn) -> OFANet:
    d = tuple(draw(st.sampled_from((2, 3, 4))) for _ in range(5))
    n = sum(d)
    return OFANet(
        draw(st.integers(32, 256)),
        tuple(draw(st.sampled_from((3, 5, 7))) for _ in range(n)),
        tuple(draw(st.sampled_from((3, 4, 6))) for _ in range(n)),
        d,
        draw(st.sampled_from((1000, 10))),
    )


@settings(max_examples=30, deadline=None)
@given(ofa_nets())
def test_ofa_string_is_an_exact_inverse(net: OFANet) -> None:
    assert OFANet.from_string(net.to_string()) == net


@settings(max_examples=5, deadline=None)
@given(st.lists(st.sampled_from(OPS), min_size=len(EDGES), max_size=len(EDGES)))
def test_nb201_random_cells_agree_with_pytorch(ops: list[str]) -> None:
    assert_agrees(NB201Net(tuple(ops)), batch=1)


@pytest.mark.parametrize(
    ("s", "match"),
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|", r"must have 3 nodes"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", r"op='conv' is not one of"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", r"edge 'none~1' of node 1"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", r"node 2 needs 2 edges"),
        (ALL_NONE + ":n10", r"':n<classes>:r<resolution>'"),
        (ALL_NONE + ":n10:r32", r"is not canonical"),
    ],
)
def test_nb201_bad_strings_name_the_problem(s: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NB201Net.from_string(s)


@pytest.mark.parametrize(
    ("s", "match"),
    [
        ("ofa:r=224:ks=3:e=3:d=2-2-2-2-2", r"sum\(d\)=10 entries"),
        ("ofa:r=16:ks=3-3-3-3-3-3-3-3-3-3:e=3-3-3-3-3-3-3-3-3-3:d=2-2-2-2-2", r"resolution=16"),
        ("ofa:r=224:ks=3-3-3-3-3-3-3-3-3-9:e=3-3-3-3-3-3-3-3-3-3:d=2-2-2-2-2", r"9 is not one"),
        ("ofa:r=224:ks=3-3-3-3-3-3-3-3-3-3:e=3-3-3-3-3-3-3-3-3-3:d=2-2-2-2-5", r"d=\(2, 2"),
        (
            "ofa:r=224:ks=3-3-3-3-3-3-3-3-3-3:e=3-3-3-3-3-3-3-3-3-3:d=2-2-2-2-2:n=1000",
            r"is not canonical",
        ),
        ("mbv3:r=224", r"must look like"),
    ],
)
def test_ofa_bad_strings_name_the_problem(s: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OFANet.from_string(s)


def test_bad_rows_and_batches_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['e20'\]"):
        OFANet.from_help_row({"r": "224", "ks20": "3", "d5": "2-2-2-2-2"})
    with pytest.raises(ValueError, match=r"must list 20 slots"):
        OFANet.from_help_row({"r": "224", "ks20": "3", "e20": "3", "d5": "2-2-2-2-2"})
    with pytest.raises(ValueError, match=r"no 'arch_str' column"):
        NB201Net.from_help_row({"arch": ALL_NONE})
    with pytest.raises(ValueError, match=r"batch=0"):
        OFA_MIN.lower(0)
    with pytest.raises(ValueError, match=r"batch=0"):
        NB201Net.from_string(ALL_NONE).lower(0)
