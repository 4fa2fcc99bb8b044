"""``sample(trial, space)``: an Architecture from Optuna's define-by-run API.

Parameter names are a fixed function of the position in the space and each
name always has the same categorical distribution (Optuna refuses a name whose
choices change), so the same parameters always give the same architecture
(``optuna.trial.FixedTrial(params)`` replays one). A choice with a single
option is not suggested at all. Names::

    resolution, stem.kernel, stem.width, stem.act, stem.pool,
    stage{i}.depth, stage{i}.width,
    stage{i}.block{j}.op, .kernel, .expansion (ir), .groups (gconv, sh), .act,
    head.width, head.act (only when head.width > 0)

Widths were rounded at load time so that every group count divides every
channel count (see ``searchspace._space``); nothing unbuildable is sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from searchspace._arch import Architecture, Block, Head, Stem
from searchspace._space import SearchSpace, load_space


class TrialLike(Protocol):
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def _pick(trial: TrialLike, name: str, choices: Sequence[Any]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


def sample(trial: TrialLike, space: SearchSpace) -> Architecture:
    res = _pick(trial, "resolution", space.resolutions)
    ss = space.stem
    stem = Stem(
        kernel=_pick(trial, "stem.kernel", ss.kernels),
        width=_pick(trial, "stem.width", ss.widths),
        stride=ss.stride,
        act=_pick(trial, "stem.act", ss.activations),
        pool=_pick(trial, "stem.pool", ss.pool),
    )
    stages = []
    for i, sp in enumerate(space.stages):
        depth = _pick(trial, f"stage{i}.depth", sp.depths)
        width = _pick(trial, f"stage{i}.width", sp.widths) if depth else sp.widths[0]
        blocks = []
        for j in range(depth):
            p = f"stage{i}.block{j}"
            op = _pick(trial, f"{p}.op", sp.ops)
            kernel = _pick(trial, f"{p}.kernel", sp.kernels)
            expansion = _pick(trial, f"{p}.expansion", sp.expansions) if op == "ir" else 1
            groups = _pick(trial, f"{p}.groups", space.groups) if op in ("gconv", "sh") else 1
            blocks.append(
                Block(
                    op="conv" if op == "gconv" else op,
                    kernel=kernel,
                    width=width,
                    stride=sp.stride if j == 0 else 1,
                    act=_pick(trial, f"{p}.act", sp.activations),
                    expansion=expansion,
                    groups=groups,
                )
            )
        stages.append(tuple(blocks))
    hs = space.head
    head_width = _pick(trial, "head.width", hs.widths)
    head = Head(
        width=head_width,
        act=_pick(trial, "head.act", hs.activations) if head_width else hs.activations[0],
    )
    return Architecture(
        input_shape=(space.input_channels, res, res),
        num_classes=space.num_classes,
        stem=stem,
        stages=tuple(stages),
        head=head,
    )


def sample_architectures(space: SearchSpace | str | Path, n: int, seed: int) -> list[Architecture]:
    """``n`` distinct random architectures of a space (Optuna's RandomSampler, seeded).

    ``space``: a loaded space, a shipped space's name or a TOML path. The same
    seed gives the same architectures, in the same order.
    """
    import optuna  # only this helper needs it; importing searchspace stays light

    if not isinstance(space, SearchSpace):
        space = load_space(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen: dict[str, Architecture] = {}
    for _ in range(n * 20):
        if len(seen) == n:
            break
        trial = study.ask()
        arch = sample(trial, space)
        seen.setdefault(arch.to_string(), arch)
        study.tell(trial, 0.0)
    return list(seen.values())
