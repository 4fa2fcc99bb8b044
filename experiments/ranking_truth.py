"""A ranking truth for the accuracy axis, and every estimator measured against it.

1. PILOT (development data): ``--pilot-archs`` architectures drawn with
   ``--pilot-seed`` are trained with two training seeds under each candidate
   protocol of ``PROTOCOLS`` on ``digits_hard`` (``search._data``). The protocol
   kept for the truth is the one with the highest seed-to-seed Spearman (the noise
   ceiling) among those whose median training takes <= ``--max-train-s`` CPU
   seconds; if it does not reach 0.8 the result says so.
2. TRUTH: ``--archs`` distinct architectures drawn with ``--truth-seed`` (another
   seed) from the space, each trained with both training seeds under the chosen
   protocol; truth = mean of the two validation accuracies.
3. CIFAR-10: the same on a local copy (``$ROOFNAS_CIFAR10_DIR`` or
   ``~/data/cifar-10-batches-py``) when one exists; nothing is downloaded.
4. ESTIMATORS, each computed once per architecture with ``--estimator-seed``
   (disjoint from the search's seed 0 and from the truth's seeds): the four
   zero-cost proxies, ``proxy_rank`` as the default experiment runs it
   (synflow + naswot, batch 16) and with all four, rank combinations that add the
   cost features ``params`` / ``macs``, params and MACs alone, short training
   rungs of the ``train`` estimator on digits_hard, the ``tse`` estimator for each
   of ``--tse-epochs`` and its rank vote with params (``--reference-size``
   reference archs). Spearman and Kendall against the truth.
5. ``--timing``: a separate pass (run it alone, not niced) that times every
   estimator per architecture on one torch thread on ``--timing-archs`` of the
   truth's architectures, adds the figures and the recommendation to the result.

    nice -n 10 python experiments/ranking_truth.py             # pilot + truth + estimators
    # estimators again on an earlier result's trainings (nothing is retrained):
    python experiments/ranking_truth.py --reuse-training experiments/results/ranking_truth.json
    # a second truth of other archs, to check a choice made on the first:
    python experiments/ranking_truth.py --truth-seed 5 --protocols n1000_e6_b64 \\
        --reuse-training experiments/results/ranking_truth.json \\
        --out experiments/results/ranking_truth_heldout
    python experiments/ranking_truth.py --timing               # then the timing pass
    python experiments/ranking_truth.py --archs 3 --pilot-archs 3 --epochs 1 \\
        --workers 1 --timing-archs 2 --out /tmp/rt             # smoke run (both passes)

Writes ``<out>.md`` and ``<out>.json`` (every per-arch value); ``<out>.rows.jsonl``
journals finished jobs so that the same command continues an interrupted run. MACs are
multiply-accumulates (``costmodel.count(...).macs``; FLOPs = 2 x MACs).
Every architecture is evaluated from its own seeds, so results do not depend on
``--workers``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

# The script lives in experiments/; make the repository importable however it is run.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

DEFAULT_SPACE = _ROOT / "experiments" / "spaces" / "cifar_half16.toml"
DEFAULT_OUT = _ROOT / "experiments" / "results" / "ranking_truth"
PROXIES = ("synflow", "naswot", "grad_norm", "snip")
COSTS = ("params", "macs")
# The default experiment's estimator (experiments/default.toml): synflow + naswot, batch 16.
DEFAULT_PROXIES = ("synflow", "naswot")
DEFAULT_PROXY_BATCH = 16
PROXY_BATCH = 64  # EstimatorConfig's default batch for the single proxies
# proxy_rank combinations scored (the first two are proxy_rank without cost features)
COMBOS: tuple[tuple[str, ...], ...] = (
    DEFAULT_PROXIES,
    PROXIES,
    ("params", "synflow"),
    ("params", "naswot"),
    ("params", "snip"),
    ("params", "synflow", "naswot"),
    ("params", "macs", "synflow", "naswot"),
    ("params", *PROXIES),
    ("params", "macs", *PROXIES),
)
RUNGS = (1, 2)  # train-estimator epochs (fewer than any protocol: cheaper than the truth)
TSE_EPOCHS = (1, 2, 3)  # tse-estimator epochs, on the protocol's images, batch and lr
TRAIN_SEEDS = (11, 12)  # the truth's two training seeds
SUCCESS_SPEARMAN = 0.8  # wanted noise ceiling
ROLES = {
    "dev": "development truth: the protocol, the estimator kinds and the default estimator "
    "were chosen on it, so its figures are optimistic for the chosen ones",
    "heldout": "held-out check: architectures no choice has seen (another sampler seed); the "
    "default estimator, chosen on the development truth, is reported here as it is",
}
BEAT_PARAMS_BY = 0.1  # recommendation rule: Spearman >= params' + this
NEAR_BAR = 0.01  # estimators this close below the bar are listed beside the recommendation


@dataclass(frozen=True)
class Protocol:
    """One way to train for the truth: SGD (Nesterov 0.9, weight decay 5e-4, cosine lr)."""

    name: str
    train_images: int  # max_train_samples of digits_hard (of 2,874 distorted images)
    epochs: int
    batch_size: int
    lr: float


PROTOCOLS: tuple[Protocol, ...] = (
    Protocol("n1000_e3_b64", 1000, 3, 64, 0.1),
    Protocol("n1000_e6_b64", 1000, 6, 64, 0.1),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ranking_truth.py",
        description="Build a ranking truth (two training seeds per arch) on digits_hard and "
        "measure every accuracy estimator against it.",
    )
    p.add_argument("--space", default=str(DEFAULT_SPACE), help="search space TOML")
    p.add_argument("--archs", type=int, default=100, help="truth architectures (default 100)")
    p.add_argument("--pilot-archs", type=int, default=16, help="pilot architectures (16)")
    p.add_argument("--pilot-seed", type=int, default=1, help="pilot sampler seed (default 1)")
    p.add_argument("--truth-seed", type=int, default=2, help="truth sampler seed (default 2)")
    p.add_argument("--estimator-seed", type=int, default=3, help="estimator seed (default 3)")
    p.add_argument(
        "--protocols",
        default=",".join(pr.name for pr in PROTOCOLS),
        help="pilot candidates by name (default: all of PROTOCOLS)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="override every protocol's epochs (smoke runs; default: as in PROTOCOLS)",
    )
    p.add_argument(
        "--tse-epochs",
        default=",".join(map(str, TSE_EPOCHS)),
        help="epochs of the tse estimators measured, comma-separated (default 1,2,3)",
    )
    p.add_argument(
        "--reference-size",
        type=int,
        default=None,
        help="proxy_rank's reference population (default: EstimatorConfig's, 16)",
    )
    p.add_argument("--role", choices=list(ROLES), default="dev", help="what the truth is for")
    p.add_argument("--max-train-s", type=float, default=5.0, help="median training CPU s limit (5)")
    p.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    p.add_argument("--timing", action="store_true", help="run only the timing pass on <out>")
    p.add_argument("--md-only", action="store_true", help="rewrite <out>.md from <out>.json")
    p.add_argument("--timing-archs", type=int, default=10, help="archs timed (default 10)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output path without suffix")
    p.add_argument(
        "--reuse-training",
        metavar="JSON",
        help="take the pilot's and the truth's trainings (accuracies, seconds) from an earlier "
        "result file for the same archs and protocol, and compute only the estimators",
    )
    args = p.parse_args(argv)
    if args.reference_size is not None and args.reference_size < 2:
        p.error(f"--reference-size={args.reference_size} must be >= 2")
    for key in ("archs", "pilot_archs", "workers", "timing_archs"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")
    try:
        args.tse_epoch_list = [int(e) for e in args.tse_epochs.split(",") if e]
    except ValueError:
        args.tse_epoch_list = []
    if not args.tse_epoch_list or min(args.tse_epoch_list) < 1:
        p.error(f"--tse-epochs={args.tse_epochs!r} must be positive integers, comma-separated")
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs={args.epochs} must be >= 1")
    if min(args.archs, args.pilot_archs) < 3:
        p.error("--archs and --pilot-archs must be >= 3 for a rank correlation")
    known = {pr.name: pr for pr in PROTOCOLS}
    names = [n for n in args.protocols.split(",") if n]
    bad = [n for n in names if n not in known]
    if bad or not names:
        p.error(f"--protocols={args.protocols!r}: unknown {bad}; known {list(known)}")
    args.protocol_list = [
        replace(known[n], epochs=args.epochs) if args.epochs else known[n] for n in names
    ]
    return args


# ---------------------------------------------------------------- worker side

_STATE: dict[str, Any] = {}


def _init_worker(cfg: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(1)
    _STATE["cfg"] = cfg


def _estimator(key: str, cfg_kwargs: dict[str, Any], arch: Any) -> Any:
    """One estimator per (key, input shape), built on first use in this process."""
    from search._estimators import EstimatorConfig, make_estimator

    cache_key = (key, tuple(arch.input_shape), arch.num_classes)
    if cache_key not in _STATE:
        cfg = EstimatorConfig(torch_threads=1, **cfg_kwargs)
        _STATE[cache_key] = make_estimator(cfg, tuple(arch.input_shape), arch.num_classes)
    return _STATE[cache_key]


def _train_config(protocol: dict[str, Any], seed: int, epochs: int | None = None) -> dict:
    return {
        "kind": "train",
        "dataset": protocol["dataset"],
        "data_dir": protocol.get("data_dir"),
        "epochs": epochs or protocol["epochs"],
        "batch_size": protocol["batch_size"],
        "lr": protocol["lr"],
        "seed": seed,
        "max_train_samples": protocol["train_images"],
        "max_val_samples": protocol.get("val_images"),
    }


def train_twice(arch: Any, protocol: dict[str, Any]) -> dict[str, Any]:
    """Validation accuracy under both training seeds, and seconds per training."""
    out: dict[str, Any] = {}
    for i, seed in enumerate(TRAIN_SEEDS):
        key = f"train:{protocol['name']}:{seed}"
        est = _estimator(key, _train_config(protocol, seed), arch)
        t, cpu = time.perf_counter(), time.process_time()
        out[f"acc_seed{i}"] = est.score(arch)
        out[f"train_s_seed{i}"] = time.perf_counter() - t
        out[f"train_cpu_s_seed{i}"] = time.process_time() - cpu
    return out


def estimator_values(arch: Any, protocol: dict[str, Any], seed: int) -> dict[str, Any]:
    """Every estimator's raw value for ``arch`` (combinations are ranked later)."""
    import costmodel

    specs = arch.lower(batch=1)
    row: dict[str, Any] = {
        "params": sum(costmodel.count(s).params for s in specs),
        "macs": sum(costmodel.count(s).macs for s in specs),
    }
    data = {"dataset": "digits_hard", "seed": seed}
    row.update(
        _estimator("proxy64", {**data, "batch_size": PROXY_BATCH}, arch).proxy_values(arch, PROXIES)
    )
    b16 = _estimator("proxy16", {**data, "batch_size": DEFAULT_PROXY_BATCH}, arch)
    for k, v in b16.proxy_values(arch, DEFAULT_PROXIES).items():
        row[f"{k}_b16"] = v
    for e in RUNGS:
        est = _estimator(f"rung{e}", _train_config(protocol, seed, epochs=e), arch)
        t = time.perf_counter()
        row[f"train_e{e}"] = est.score(arch)
        row[f"train_e{e}_s"] = time.perf_counter() - t
    row.update(tse_values(arch, protocol, seed))
    return row


def tse_values(arch: Any, protocol: dict[str, Any], seed: int) -> dict[str, float]:
    """The tse estimator for each of the run's tse epochs, and its seconds."""
    row: dict[str, float] = {}
    for e in _STATE["cfg"]["tse_epochs"]:
        est = _estimator(f"tse{e}", {**_train_config(protocol, seed, epochs=e), "kind": "tse"},
                         arch)  # fmt: skip
        t = time.perf_counter()
        row[f"tse_e{e}"] = est.score(arch)
        row[f"tse_e{e}_s"] = time.perf_counter() - t
    return row


def run_job(job: tuple[str, int, str, dict[str, Any]]) -> dict[str, Any]:
    import searchspace

    part, index, text, protocol = job
    arch = searchspace.Architecture.from_string(text)
    row: dict[str, Any] = {"part": part, "index": index, "arch": text}
    if part in ("pilot", "truth", "cifar10"):
        row["protocol"] = protocol["name"]
        row.update(train_twice(arch, protocol))
        row["truth"] = (row["acc_seed0"] + row["acc_seed1"]) / 2
    if part == "estimate":  # the truth archs' estimators: a job apart from their training
        row.update(estimator_values(arch, protocol, _STATE["cfg"]["estimator_seed"]))
    if part == "reference":  # proxy_rank's reference population: proxies and costs only
        import costmodel

        specs = arch.lower(batch=1)
        row["params"] = sum(costmodel.count(s).params for s in specs)
        row["macs"] = sum(costmodel.count(s).macs for s in specs)
        seed = _STATE["cfg"]["estimator_seed"]
        data = {"dataset": "digits_hard", "seed": seed}
        row.update(
            _estimator("proxy64", {**data, "batch_size": PROXY_BATCH}, arch).proxy_values(
                arch, PROXIES
            )
        )
        b16 = _estimator("proxy16", {**data, "batch_size": DEFAULT_PROXY_BATCH}, arch)
        for k, v in b16.proxy_values(arch, DEFAULT_PROXIES).items():
            row[f"{k}_b16"] = v
        row.update(tse_values(arch, protocol, seed))
    return row


def _job_key(job: tuple[str, int, str, dict[str, Any]], cfg: dict[str, Any]) -> str:
    """What makes a job's row: the job, the estimator seed, and for estimator jobs the tse
    epochs (so that a training is reused whatever estimators a later run measures)."""
    extra = [cfg["tse_epochs"]] if job[0] in ("estimate", "reference") else []
    return json.dumps([*job, cfg["estimator_seed"], *extra], sort_keys=True)


def _pool_map(
    jobs: list,
    workers: int,
    cfg: dict[str, Any],
    label: str,
    journal: Path,
    reuse: dict[tuple[str, str, str], dict[str, Any]] | None = None,
) -> tuple[list[dict], int]:
    """Run ``jobs``; each finished row is appended to ``journal`` (JSON lines) at once, and
    jobs already there (same part, arch, protocol, estimator seed) are not run again, so an
    interrupted run continues where it stopped. A job whose (part, arch, protocol name) is in
    ``reuse`` takes that row instead of running (it is journaled too)."""
    done: dict[str, dict[str, Any]] = {}
    if journal.is_file():
        for line in journal.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["job_key"]] = row
    keyed = [(_job_key(job, cfg), job) for job in jobs]
    with journal.open("a") as fh:
        for key, (part, index, text, protocol) in keyed:
            old = (reuse or {}).get((part, text, protocol["name"]))
            if key not in done and old is not None:
                done[key] = {**old, "index": index, "job_key": key}
                fh.write(json.dumps(done[key]) + "\n")
    rows = [done[k] for k, _ in keyed if k in done]
    reused = len(rows)
    todo = [(k, job) for k, job in keyed if k not in done]
    if rows:
        print(f"[{label}] {len(rows)} job(s) reused from {journal}", file=sys.stderr)
    ctx = mp.get_context("spawn")
    with (
        ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool,
        journal.open("a") as fh,
    ):
        for key, row in zip(
            [k for k, _ in todo], pool.imap(run_job, [j for _, j in todo]), strict=True
        ):
            row["job_key"] = key
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            rows.append(row)
            acc = (
                f"acc {row['acc_seed0']:.3f}/{row['acc_seed1']:.3f} {row['train_s_seed0']:.1f}s"
                if "acc_seed0" in row
                else ""
            )
            print(
                f"[{label} {len(rows):3d}/{len(jobs)}] {row.get('protocol', '')} {acc}",
                file=sys.stderr,
                flush=True,
            )
    for row in rows:
        row.pop("job_key", None)
    rows.sort(key=lambda r: (r.get("protocol", ""), r["index"]))
    return rows, reused


# ---------------------------------------------------------------- driver


_TRAINING_KEYS = ("part", "arch", "protocol", "truth", *(
    f"{k}_seed{i}" for k in ("acc", "train_s", "train_cpu_s") for i in (0, 1)))  # fmt: skip


def trainings_of(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(part, arch, protocol name) -> the training columns of an earlier result's rows."""
    res = json.loads(path.read_text())
    out = {}
    for row in [*res["pilot"]["rows"], *res["rows"]]:
        kept = {k: row[k] for k in _TRAINING_KEYS}
        out[(row["part"], row["arch"], row["protocol"])] = {**kept, "reused_from": _rel(str(path))}
    return out


def sample_distinct(space: Any, n: int, seed: int) -> list[Any]:
    """The first ``n`` distinct architectures of Optuna's RandomSampler(seed) on ``space``."""
    from search._estimators import sample_reference

    drawn = 2 * n
    while True:
        archs = list({a.to_string(): a for a in sample_reference(space, drawn, seed)}.values())
        if len(archs) >= n:
            return archs[:n]
        drawn *= 2


def noise_ceiling(rows: list[dict[str, Any]]) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    a = [r["acc_seed0"] for r in rows]
    b = [r["acc_seed1"] for r in rows]
    truth = sorted(r["truth"] for r in rows)
    secs = [r[f"train_s_seed{i}"] for r in rows for i in (0, 1)]
    cpu = [r[f"train_cpu_s_seed{i}"] for r in rows for i in (0, 1)]
    return {
        "archs": len(rows),
        "spearman": float(spearmanr(a, b)[0]),
        "kendall": float(kendalltau(a, b)[0]),
        "acc_min": truth[0],
        "acc_median": float(statistics.median(truth)),
        "acc_max": truth[-1],
        "mean_abs_seed_diff": float(statistics.mean(abs(x - y) for x, y in zip(a, b, strict=True))),
        "train_s_median": float(statistics.median(secs)),
        "train_s_max": float(max(secs)),
        "train_cpu_s_median": float(statistics.median(cpu)),
        "train_cpu_s_max": float(max(cpu)),
    }


def choose_protocol(pilot: dict[str, dict[str, float]], max_train_s: float) -> tuple[str, str]:
    """The highest noise ceiling among protocols whose median training fits ``max_train_s``
    CPU seconds (process time: on a shared machine wall time measures the other jobs),
    the cheaper on a tie; if none fits, the highest noise ceiling. The truth's own
    noise ceiling bounds every estimator's measured Spearman, so it comes first."""

    def rho(k: str) -> float:  # an undefined Spearman (constant accuracies) counts as -2
        value = pilot[k]["spearman"]
        return value if value == value else -2.0

    def cost(k: str) -> float:
        return pilot[k]["train_cpu_s_median"]

    fits = [k for k in pilot if cost(k) <= max_train_s]
    best = max(fits or list(pilot), key=lambda k: (rho(k), -cost(k)))
    why = (
        f"the highest seed-to-seed Spearman ({rho(best):+.3f}) among the protocols with median "
        f"training <= {max_train_s:g} CPU s ({cost(best):.2f})"
        if fits
        else f"no protocol had median training <= {max_train_s:g} CPU s; the highest "
        f"seed-to-seed Spearman ({rho(best):+.3f}) is kept"
    )
    if rho(best) < SUCCESS_SPEARMAN:
        why += f"; it does NOT reach the wanted {SUCCESS_SPEARMAN}"
    return best, why


def cifar10_dir() -> Path | None:
    env = os.environ.get("ROOFNAS_CIFAR10_DIR")
    for cand in ([Path(env).expanduser()] if env else []) + [
        Path("~/data/cifar-10-batches-py").expanduser()
    ]:
        if (cand / "data_batch_1").is_file() or (cand / "cifar-10-batches-py").is_dir():
            return cand
    return None


def tse_combos(tse_epochs: list[int]) -> tuple[tuple[str, ...], ...]:
    return tuple(("params", f"tse_e{e}") for e in tse_epochs)


def correlations(
    rows: list[dict[str, Any]], reference: list[dict[str, Any]], tse_epochs: list[int]
) -> list[dict]:
    """Spearman / Kendall of every estimator against the truth (raw values or rank votes)."""
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    from search._estimators import rank_combination

    def ref_of(keys: tuple[str, ...], b16: bool) -> dict[str, list[float]]:
        return {k: [r[_col(k, b16)] for r in reference] for k in keys}

    for r in rows:
        for keys in (*COMBOS, *tse_combos(tse_epochs)):
            b16 = keys == DEFAULT_PROXIES
            vals = {k: r[_col(k, b16)] for k in keys}
            r[_combo_name(keys)] = rank_combination(vals, ref_of(keys, b16))
    names = [
        *PROXIES,
        *(_combo_name(k) for k in COMBOS),
        *COSTS,
        *(f"train_e{e}" for e in RUNGS),
        *(f"tse_e{e}" for e in tse_epochs),
        *(_combo_name(k) for k in tse_combos(tse_epochs)),
    ]
    truth = np.array([r["truth"] for r in rows])
    out = []
    for name in names:
        x = np.array([r[name] for r in rows], dtype=np.float64)
        out.append(
            {
                "estimator": name,
                "spearman": float(spearmanr(x, truth)[0]),
                "kendall": float(kendalltau(x, truth)[0]),
            }
        )
    return out


def _col(key: str, b16: bool) -> str:
    return f"{key}_b16" if b16 and key in DEFAULT_PROXIES else key


def _combo_name(keys: tuple[str, ...]) -> str:
    tag = " (default: batch 16)" if keys == DEFAULT_PROXIES else ""
    return "proxy_rank[" + "+".join(keys) + "]" + tag


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    t0 = time.perf_counter()
    load0 = os.getloadavg()
    space = _load_space(args.space)
    cfg = {"estimator_seed": args.estimator_seed, "tse_epochs": args.tse_epoch_list}
    base = {"dataset": "digits_hard", "val_images": None}

    # 1. pilot
    pilot_archs = sample_distinct(space, args.pilot_archs, args.pilot_seed)
    jobs = [
        ("pilot", i, a.to_string(), {**base, **asdict(pr)})
        for pr in args.protocol_list
        for i, a in enumerate(pilot_archs)
    ]
    journal = Path(args.out).with_suffix(".rows.jsonl")
    journal.parent.mkdir(parents=True, exist_ok=True)
    reuse = trainings_of(Path(args.reuse_training)) if args.reuse_training else None
    pilot_rows, reused_pilot = _pool_map(jobs, args.workers, cfg, "pilot", journal, reuse)
    pilot = {
        pr.name: noise_ceiling([r for r in pilot_rows if r["protocol"] == pr.name])
        for pr in args.protocol_list
    }
    chosen_name, why = choose_protocol(pilot, args.max_train_s)
    chosen = next(pr for pr in args.protocol_list if pr.name == chosen_name)
    print(f"pilot: {json.dumps(pilot, indent=1)}\nchosen {chosen_name}: {why}", file=sys.stderr)

    # 2. truth + estimators, and proxy_rank's reference population
    truth_archs = sample_distinct(space, args.archs, args.truth_seed)
    from search._estimators import EstimatorConfig, sample_reference

    ref_size = args.reference_size or EstimatorConfig().reference_size
    ref_archs = sample_reference(space, ref_size, args.estimator_seed)
    proto = {**base, **asdict(chosen)}
    jobs = [(part, i, a.to_string(), proto)
            for i, a in enumerate(truth_archs) for part in ("truth", "estimate")]  # fmt: skip
    jobs += [("reference", i, a.to_string(), proto) for i, a in enumerate(ref_archs)]
    rows, reused_truth = _pool_map(jobs, args.workers, cfg, "truth", journal, reuse)
    estimates = {r["index"]: r for r in rows if r["part"] == "estimate"}
    truth_rows = [{**estimates[r["index"]], **r} for r in rows if r["part"] == "truth"]
    ref_rows = [r for r in rows if r["part"] == "reference"]
    table = correlations(truth_rows, ref_rows, args.tse_epoch_list)

    # 3. CIFAR-10 when a local copy exists
    folder = cifar10_dir()
    if folder is None:
        cifar: dict[str, Any] = {
            "skipped": "no local CIFAR-10 copy ($ROOFNAS_CIFAR10_DIR unset or without the "
            "batches, ~/data/cifar-10-batches-py absent); nothing is downloaded"
        }
    else:
        cproto = {**proto, "dataset": "cifar10", "data_dir": str(folder), "val_images": 2000}
        cjobs = [("cifar10", i, a.to_string(), cproto) for i, a in enumerate(truth_archs)]
        crows, _ = _pool_map(cjobs, args.workers, cfg, "cifar10", journal)
        cifar = {"dir": str(folder), "noise_ceiling": noise_ceiling(crows), "rows": crows}

    return {
        "command": _command(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "niceness": os.nice(0),
        "workers": args.workers,
        "torch_threads_per_worker": 1,
        "loadavg_start": list(load0),
        "space": _rel(args.space),
        "dataset": "digits_hard (search._data): distorted copies of sklearn digits, 16x16",
        "seeds": {
            "pilot_sampler": args.pilot_seed,
            "truth_sampler": args.truth_seed,
            "training": list(TRAIN_SEEDS),
            "estimators": args.estimator_seed,
            "search_default": 0,
        },
        "pilot": {
            "archs": [a.to_string() for a in pilot_archs],
            "protocols": [asdict(pr) for pr in args.protocol_list],
            "noise_ceiling": pilot,
            "chosen": chosen_name,
            "why": why,
            "rows": pilot_rows,
        },
        "protocol": asdict(chosen),
        "truth": noise_ceiling(truth_rows),
        "distinct_archs": len({r["arch"] for r in truth_rows}),
        "reference_size": ref_size,
        "role": args.role,
        "tse_epochs": args.tse_epoch_list,
        "correlations": table,
        "cifar10": cifar,
        "rows": truth_rows,
        "reference_rows": ref_rows,
        "wall_s": time.perf_counter() - t0,
        "journal_reused_jobs": {"pilot": reused_pilot, "truth": reused_truth},
        "loadavg_end": list(os.getloadavg()),
    }


# ---------------------------------------------------------------- timing pass


def timing_pass(res: dict[str, Any], n: int) -> dict[str, Any]:
    """Seconds per architecture of every estimator, one process, one torch thread."""
    import torch

    import searchspace
    from search._estimators import EstimatorConfig, make_estimator, sample_reference

    torch.set_num_threads(1)
    load0 = os.getloadavg()
    seed = res["seeds"]["estimators"]
    space = _load_space(str(_ROOT / res["space"]))
    archs = [searchspace.Architecture.from_string(r["arch"]) for r in res["rows"][:n]]
    shape, classes = tuple(archs[0].input_shape), archs[0].num_classes
    ref = sample_reference(space, res["reference_size"], seed)
    data = {"dataset": "digits_hard", "seed": seed, "torch_threads": 1}
    p = res["protocol"]
    configs: dict[str, EstimatorConfig] = {
        k: EstimatorConfig(kind=k, batch_size=PROXY_BATCH, **data) for k in PROXIES
    }
    for keys in COMBOS:
        bs = DEFAULT_PROXY_BATCH if keys == DEFAULT_PROXIES else PROXY_BATCH
        configs[_combo_name(keys)] = EstimatorConfig(
            kind="proxy_rank", proxies=keys, batch_size=bs, **data
        )
    # the protocol's recipe, for every estimator that trains
    recipe = {"batch_size": p["batch_size"], "lr": p["lr"], "max_train_samples": p["train_images"],
              **data}  # fmt: skip
    for e in res.get("tse_epochs", []):
        configs[f"tse_e{e}"] = EstimatorConfig(kind="tse", epochs=e, **recipe)
        configs[_combo_name(("params", f"tse_e{e}"))] = EstimatorConfig(
            kind="proxy_rank", proxies=("params", "tse"), epochs=e, **recipe
        )
    for e in (*RUNGS, p["epochs"]):
        configs[f"train_e{e}"] = EstimatorConfig(kind="train", epochs=e, **recipe)
    timing: dict[str, Any] = {}
    by_arch = {r["arch"]: r for r in res["rows"]}
    for name, cfg in configs.items():
        # the reference population is scored once when the estimator is made, as in a search
        est = make_estimator(
            cfg, shape, classes, reference=ref if cfg.kind == "proxy_rank" else None
        )
        secs = []
        for a in archs:
            t = time.perf_counter()
            value = est.score(a)
            secs.append(time.perf_counter() - t)
            stored = by_arch[a.to_string()].get(name)
            if stored is not None and cfg.kind != "train":
                assert abs(value - stored) <= 1e-9 * max(1.0, abs(stored)), (name, value, stored)
        timing[name] = {"median_s": statistics.median(secs), "max_s": max(secs), "n": len(secs)}
    for name in COSTS:
        secs = []
        for a in archs:
            t = time.perf_counter()
            _cost(a, name)
            secs.append(time.perf_counter() - t)
        timing[name] = {"median_s": statistics.median(secs), "max_s": max(secs), "n": len(secs)}
    return {
        "archs": len(archs),
        "loadavg_start": list(load0),
        "loadavg_end": list(os.getloadavg()),
        "per_estimator": timing,
    }


def _cost(arch: Any, key: str) -> int:
    import costmodel

    return sum(getattr(costmodel.count(s), key) for s in arch.lower(batch=1))


def recommend(res: dict[str, Any]) -> dict[str, Any]:
    """Best Spearman per second among estimators beating params by >= BEAT_PARAMS_BY."""
    corr = {r["estimator"]: r for r in res["correlations"]}
    # the protocol itself with one seed: its Spearman against an independent training is the
    # seed-to-seed figure (against the truth it would share one of the truth's two seeds)
    full = f"train_e{res['protocol']['epochs']}"
    corr[full] = {
        "estimator": full,
        "spearman": res["truth"]["spearman"],
        "kendall": res["truth"]["kendall"],
    }
    timing = res["timing"]["per_estimator"]
    bar = corr["params"]["spearman"] + BEAT_PARAMS_BY
    eligible = {
        k: v["spearman"] / max(timing[k]["median_s"], 1e-9)
        for k, v in corr.items()
        if v["spearman"] >= bar and k in timing
    }
    rule = (
        f"among estimators with Spearman >= params' {corr['params']['spearman']:+.3f} + "
        f"{BEAT_PARAMS_BY} = {bar:+.3f} on the truth, the highest Spearman / (median s per arch)"
    )
    near = {
        k: v["spearman"]
        for k, v in corr.items()
        if bar - NEAR_BAR <= v["spearman"] < bar and k in timing
    }
    if not eligible:
        return {"rule": rule, "estimator": None, "eligible": {}, "near": near}
    best = max(eligible, key=lambda k: eligible[k])
    return {
        "rule": rule,
        "estimator": best,
        "spearman": corr[best]["spearman"],
        "kendall": corr[best]["kendall"],
        "median_s": timing[best]["median_s"],
        "spearman_per_s": eligible[best],
        "eligible": eligible,
        "near": near,
    }


# ---------------------------------------------------------------- report


def _load_space(path: str) -> Any:
    import searchspace

    return searchspace.load_space(path)


def _command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [_rel(sys.argv[0]), *sys.argv[1:]])


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(_ROOT))
    except ValueError:
        return str(path)


def _nc_line(nc: dict[str, float]) -> str:
    return (
        f"| {nc['archs']} | {nc['spearman']:+.3f} | {nc['kendall']:+.3f} | "
        f"{nc['acc_min']:.3f} / {nc['acc_median']:.3f} / {nc['acc_max']:.3f} | "
        f"{nc['mean_abs_seed_diff']:.3f} | {nc['train_cpu_s_median']:.2f} / "
        f"{nc['train_cpu_s_max']:.2f} | {nc['train_s_median']:.2f} |"
    )


def to_markdown(res: dict[str, Any]) -> str:
    pr = res["protocol"]
    lines = [
        "# Ranking truth: which accuracy estimator ranks architectures",
        "",
        "```",
        ("nice -n {} ".format(res["niceness"]) if res.get("niceness") else "") + res["command"],
        *([res["timing"]["command"]] if "timing" in res else []),
        "```",
        "",
        f"Run {res['date_utc']} UTC on {res['host']}, torch {res['torch']}, Python "
        f"{res['python']}, {res['cpu_count']} CPUs shared with other jobs; {res['workers']} "
        f"worker process(es), one torch thread each; load average "
        f"{res['loadavg_start'][0]:.2f} before, {res['loadavg_end'][0]:.2f} after; wall "
        f"{res['wall_s']:.0f} s"
        + (
            " (jobs reused from the journal of an earlier invocation of the same command: "
            f"{res['journal_reused_jobs']})."
            if any(res.get("journal_reused_jobs", {}).values())
            else "."
        ),
        "",
        f"Role: {ROLES[res.get('role', 'dev')]}.",
        "",
        f"Space `{res['space']}`; task {res['dataset']}. Seeds: {res['seeds']} (the search's "
        "default seed 0 is used by none of them).",
        "",
        "## Pilot (development data: chooses the protocol)",
        "",
        f"{len(res['pilot']['archs'])} archs drawn with seed {res['seeds']['pilot_sampler']}, "
        f"each trained with seeds {res['seeds']['training']} under every candidate protocol "
        "(SGD, Nesterov 0.9, weight decay 5e-4, lr cosine to 0; training images are "
        "digits_hard's max_train_samples; validation on all 1,080 val images).",
        "",
        "| protocol | archs | Spearman seed0 vs seed1 | Kendall | accuracy min / median / max "
        "(mean of seeds) | mean abs seed diff | train CPU s median / max | wall s median |",
        "|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for name, nc in res["pilot"]["noise_ceiling"].items():
        lines.append(f"| {name} " + _nc_line(nc))
    lines += [
        "",
        f"Chosen: **{res['pilot']['chosen']}** ({pr['train_images']} training images, "
        f"{pr['epochs']} epochs, batch {pr['batch_size']}, lr {pr['lr']}): {res['pilot']['why']}.",
        "",
        "## Truth",
        "",
        f"{res['truth']['archs']} archs ({res['distinct_archs']} distinct) drawn with seed "
        f"{res['seeds']['truth_sampler']}, each trained under {res['pilot']['chosen']} with "
        f"seeds {res['seeds']['training']}; truth = mean of the two accuracies.",
        "",
        "| set | archs | Spearman seed0 vs seed1 (noise ceiling) | Kendall | accuracy min / "
        "median / max | mean abs seed diff | train CPU s median / max | wall s median |",
        "|---|---:|---:|---:|---|---:|---|---:|",
        "| digits_hard " + _nc_line(res["truth"]),
    ]
    c = res["cifar10"]
    if "skipped" in c:
        lines += ["", f"CIFAR-10: skipped: {c['skipped']}."]
    else:
        lines.append(f"| cifar10 ({c['dir']}) " + _nc_line(c["noise_ceiling"]))
    lines += [
        "",
        "## Estimators against the truth",
        "",
        f"Estimator seed {res['seeds']['estimators']}. Proxies on one fixed batch of "
        f"{PROXY_BATCH} digits_hard training images, except the default experiment's "
        f"proxy_rank[synflow+naswot] (batch {DEFAULT_PROXY_BATCH}, as experiments/default.toml). "
        f"`proxy_rank[...]` is the estimator's score: mean rank fraction among its reference "
        f"population ({res['reference_size']} archs drawn from the space with the estimator "
        "seed); `params` / `macs` in a combination are the cost features (exact counts from "
        "costmodel; MACs are multiply-accumulates, FLOPs = 2 x MACs). `train_eN` is the "
        f"`train` estimator for N epochs on the protocol's {pr['train_images']} images, batch "
        f"{pr['batch_size']}, lr {pr['lr']} (cosine over its own N epochs), estimator seed; "
        "`tse_eN` is the `tse` estimator with the same recipe: exp(-mean training loss) over "
        "its N epochs (Ru et al. 2021), no validation. "
        "Seconds per arch: the timing pass below (one process, one torch thread, model build "
        "included).",
        "",
        "| estimator | Spearman ρ | Kendall τ | s / arch (median) | s / arch (max) |",
        "|---|---:|---:|---:|---:|",
    ]
    timing = res.get("timing", {}).get("per_estimator", {})
    full = f"train_e{pr['epochs']}"
    seed_row = {
        "estimator": f"{full} (the protocol, one seed: against the other seed)",
        "spearman": res["truth"]["spearman"],
        "kendall": res["truth"]["kendall"],
        "timing_key": full,
    }
    for row in [*res["correlations"], seed_row]:
        t = timing.get(row.get("timing_key", row["estimator"]))
        ts = f"{t['median_s']:.4f} | {t['max_s']:.4f}" if t else "- | -"
        lines.append(
            f"| {row['estimator']} | {row['spearman']:+.3f} | {row['kendall']:+.3f} | {ts} |"
        )
    nc = res["truth"]
    lines += [
        "",
        f"For scale: one full training under the protocol ({pr['epochs']} epochs) ranks like "
        f"the other seed's at Spearman {nc['spearman']:+.3f} (the noise ceiling); an "
        "estimator at that level is as good as retraining the truth once.",
    ]
    if "timing" in res:
        tm = res["timing"]
        lines += [
            "",
            f"Timing pass: {tm['archs']} of the truth's archs, 1 process, not niced, load "
            f"average {tm['loadavg_start'][0]:.2f} at start, {tm['loadavg_end'][0]:.2f} at end; "
            "each value was checked equal to the recorded run's.",
        ]
        rec = res["recommendation"]
        lines += ["", "## Recommendation", "", f"Rule: {rec['rule']}.", ""]
        if rec["estimator"] is None:
            lines.append("No estimator clears the bar.")
        else:
            lines.append(
                f"**{rec['estimator']}**: Spearman {rec['spearman']:+.3f}, Kendall "
                f"{rec['kendall']:+.3f}, {rec['median_s']:.3f} s per arch "
                f"({rec['spearman_per_s']:.2f} Spearman / s)."
            )
            lines += ["", "| eligible | Spearman / s |", "|---|---:|"]
            for k, v in sorted(rec["eligible"].items(), key=lambda kv: -kv[1]):
                lines.append(f"| {k} | {v:.3f} |")
        if rec.get("near"):
            timing = res["timing"]["per_estimator"]
            lines += ["", f"Within {NEAR_BAR} below the bar:", ""]
            lines += [f"- {k}: Spearman {v:+.3f}, {timing[k]['median_s']:.3f} s per arch"
                      for k, v in sorted(rec["near"].items(), key=lambda kv: -kv[1])]  # fmt: skip
    lines += ["", "Per-architecture values are in the JSON file next to this one.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.timing or args.md_only:
        if not out.with_suffix(".json").is_file():
            print(f"error: needs {out.with_suffix('.json')} from a run", file=sys.stderr)
            return 2
        res = json.loads(out.with_suffix(".json").read_text())
    if args.md_only:
        if "timing" in res:  # the rule may have changed since the timing pass
            res["recommendation"] = recommend(res)
            out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
        out.with_suffix(".md").write_text(to_markdown(res))
        return 0
    if args.timing:
        res["timing"] = {"command": _command(), **timing_pass(res, args.timing_archs)}
        res["recommendation"] = recommend(res)
    else:
        if not Path(args.space).is_file():
            print(f"error: --space={args.space} does not exist", file=sys.stderr)
            return 2
        try:
            res = run(args)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
