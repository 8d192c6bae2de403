"""Which sub-networks to measure: the paper grid, uniform per-layer configs, an even cover of the
FLOP range, and the single-layer configs a lookup table is built from."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from dynabert.errors import InvalidSubnetError
from dynabert.io import read_json
from dynabert.space import SearchSpace
from dynabert.subnet import BackboneShape, SubnetConfig, count_flops
from dynasearch_runtime.errors import MeasurementError

# Which configs `measure` times (the search's own samplers are search.OPTUNA_SAMPLERS).
CONFIG_SAMPLERS = ("grid", "uniform", "flops", "layer-table")


def _unique(subnets: list[SubnetConfig]) -> list[SubnetConfig]:
    seen: dict[str, SubnetConfig] = {}
    for s in subnets:
        seen.setdefault(s.key, s)
    return list(seen.values())


def grid_configs(shape: BackboneShape) -> list[SubnetConfig]:
    """The paper's 4 widths x 3 depths (the full model included, as width 1 depth 1)."""
    return _unique(SearchSpace.default(shape).grid())


def uniform_configs(space: SearchSpace, n: int, seed: int = 0) -> list[SubnetConfig]:
    """n distinct configs drawn uniformly over per-layer choices (`SearchSpace.sample`)."""
    rng = random.Random(seed)
    out: dict[str, SubnetConfig] = {}
    for _ in range(max(1000, 200 * n)):
        if len(out) >= n:
            break
        s = space.sample(rng)
        out.setdefault(s.key, s)
    if len(out) < n:
        raise MeasurementError(f"the search space holds fewer than {n} distinct configs (found {len(out)})")
    return list(out.values())


def _skewed_sample(space: SearchSpace, rng: random.Random) -> SubnetConfig:
    """A config with depth uniform over min_layers..L and widths skewed small or large, so that the
    ends of the FLOP range (which uniform per-layer sampling rarely reaches) get candidates too."""
    n = space.shape.num_layers
    depth = rng.randint(space.min_layers, n) if space.allow_drop else n
    layers = sorted(rng.sample(range(n), depth))
    bias = rng.random()  # 0: prefer the smallest choices, 1: the largest

    def pick(choices: tuple[int, ...]) -> int:
        weights = [(bias if i >= len(choices) / 2 else 1 - bias) + 0.05 for i in range(len(choices))]
        return rng.choices(choices, weights)[0]

    return SubnetConfig(
        tuple(layers), tuple(pick(space.head_choices) for _ in layers), tuple(pick(space.ffn_choices) for _ in layers)
    )


def flop_covering_configs(
    space: SearchSpace, n: int, seed: int = 0, batch: int = 1, seq_len: int = 128
) -> list[SubnetConfig]:
    """n distinct configs whose FLOPs are spread evenly from the smallest to the largest config of
    the space: n evenly spaced FLOP targets, each taking the nearest unused candidate from a large
    pool (uniform and skewed samples, the smallest and the full config)."""
    rng = random.Random(seed)
    shape = space.shape
    smallest = SubnetConfig(
        tuple(range(space.min_layers)),
        (min(space.head_choices),) * space.min_layers,
        (min(space.ffn_choices),) * space.min_layers,
    )
    largest_layers = tuple(range(shape.num_layers))
    largest = SubnetConfig(
        largest_layers,
        (max(space.head_choices),) * len(largest_layers),
        (max(space.ffn_choices),) * len(largest_layers),
    )
    pool = {s.key: s for s in (smallest, largest)}
    for _ in range(max(50 * n, 2000)):
        s = space.sample(rng) if rng.random() < 0.5 else _skewed_sample(space, rng)
        pool.setdefault(s.key, s)
    if len(pool) < n:
        raise MeasurementError(f"the search space holds fewer than {n} distinct configs (found {len(pool)})")
    cands = sorted(pool.values(), key=lambda s: count_flops(shape, s, batch, seq_len))
    flops = [count_flops(shape, s, batch, seq_len) for s in cands]
    lo, hi = flops[0], flops[-1]
    used: set[int] = set()
    out: list[SubnetConfig] = []
    for i in range(n):
        target = lo + (hi - lo) * (i / (n - 1) if n > 1 else 0.5)
        best = min((j for j in range(len(cands)) if j not in used), key=lambda j: (abs(flops[j] - target), j))
        used.add(best)
        out.append(cands[best])
    return out


def layer_table_configs(space: SearchSpace) -> list[SubnetConfig]:
    """Single-layer configs a per-layer lookup table is built from: an empty layer (embeddings and
    classifier only), one attention block per head choice, one FFN block per FFN choice."""
    configs = [SubnetConfig((0,), (0,), (0,))]
    configs += [SubnetConfig((0,), (h,), (0,)) for h in space.head_choices if h > 0]
    configs += [SubnetConfig((0,), (0,), (f,)) for f in space.ffn_choices if f > 0]
    return configs


def is_layer_table_config(subnet: SubnetConfig) -> bool:
    return subnet.depth == 1 and (subnet.heads[0] == 0 or subnet.ffn[0] == 0)


def sample_configs(
    kind: str, space: SearchSpace, n: int | None = None, seed: int = 0, batch: int = 1, seq_len: int = 128
) -> list[SubnetConfig]:
    if kind not in CONFIG_SAMPLERS:
        raise MeasurementError(f"unknown sampler {kind!r}; allowed: {', '.join(CONFIG_SAMPLERS)}")
    if kind == "grid":
        return grid_configs(space.shape)
    if kind == "layer-table":
        return layer_table_configs(space)
    if n is None or n < 1:
        raise MeasurementError(f"sampler {kind!r} needs a number of configs >= 1; got {n!r}")
    if kind == "uniform":
        return uniform_configs(space, n, seed)
    return flop_covering_configs(space, n, seed, batch, seq_len)


def labels_by_key(subnets: Sequence[SubnetConfig], sampler: str | Sequence[str]) -> dict[str, str]:
    """Sampler label of each config, by key: one label for all or one per config (a config listed
    twice keeps its first label)."""
    labels = [sampler] * len(subnets) if isinstance(sampler, str) else list(sampler)
    if len(labels) != len(subnets):
        raise MeasurementError(
            f"{len(labels)} sampler labels for {len(subnets)} configs; give one label or one per config"
        )
    out: dict[str, str] = {}
    for s, label in zip(subnets, labels):
        out.setdefault(s.key, label)
    return out


def sampler_names(text: str) -> list[str]:
    """'layer-table,uniform' -> ['layer-table', 'uniform']; unknown or empty names: MeasurementError."""
    names = [n.strip() for n in str(text).split(",")]
    bad = [n for n in names if n not in CONFIG_SAMPLERS]
    if bad:
        raise MeasurementError(
            f"unknown sampler {', '.join(repr(n) for n in bad)} in --sampler {text!r}; allowed: "
            f"{', '.join(CONFIG_SAMPLERS)} (several separated by commas)"
        )
    return names


def select_configs(
    samplers: str, shape: BackboneShape, n: int, seed: int = 0, batch: int = 1, seq_len: int = 128
) -> tuple[list[SubnetConfig], list[str]]:
    """(subnets, one sampler label each) drawn by the samplers `samplers` names ('layer-table,uniform':
    several separated by commas, measured in one run) over the default space of `shape`; a config two
    samplers drew is listed once, under the first one's label."""
    subnets, labels, seen = [], [], set()
    for name in sampler_names(samplers):
        for s in sample_configs(name, SearchSpace.default(shape), n, seed, batch, seq_len):
            if s.key not in seen:
                seen.add(s.key)
                subnets.append(s)
                labels.append(name)
    return subnets, labels


def read_subnet_file(path: str | Path, shape: BackboneShape) -> list[SubnetConfig]:
    """The sub-networks of a JSON file (one {layers, heads, ffn} object or a list of them), each
    checked against `shape`; InvalidSubnetError, one line naming the file, otherwise."""
    # The one JSON reader: unreadable, a directory, not UTF-8, truncated -> one line naming the file.
    data = read_json(path, "subnet file", error=InvalidSubnetError, kind=object)
    items = data if isinstance(data, list) else [data]
    if not items:
        raise InvalidSubnetError(f"subnet file {path} holds an empty list; give at least one sub-network")
    try:
        return [SubnetConfig.from_dict(d).validate(shape) for d in items]
    except InvalidSubnetError as e:
        raise InvalidSubnetError(f"{path}: {e}") from None
