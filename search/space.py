"""The search space encoded for Optuna: a fixed-size parameter set, decoded into a SubnetConfig.

Every trial suggests every parameter (per layer `l{i}_keep`, `l{i}_heads`, `l{i}_ffn`, all
categorical), so NSGA-II, TPE and GP model every dimension: conditional parameters would fall
back to independent random sampling in those samplers (Optuna 5). The price is that many
parameter sets decode to one architecture (a dropped layer's heads and FFN do not matter); the
search treats two parameter sets with the same `SubnetConfig.key` as one config.

Repair: a decoded config with fewer than `min_layers` kept layers keeps, in addition, the
dropped layers with the lowest indices (with the widths their parameters suggest) until it has
`min_layers`. The repair is deterministic, so a repaired parameter set always decodes to the
same config and costs no extra evaluation when it repeats. A kept layer whose heads and FFN are
both 0 computes nothing (the residual passes through): it is decoded as dropped, so the two
spellings of that architecture share one key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynabert.errors import InvalidSubnetError
from dynabert.space import SearchSpace
from dynabert.subnet import PAPER_DEPTHS, PAPER_WIDTHS, BackboneShape, SubnetConfig, paper_grid

from .errors import SearchError


@dataclass(frozen=True)
class SpaceOptions:
    """What a user chooses about the space; None means the paper's widths applied per layer.

    ffn_step: FFN choices are every multiple of the step up to the backbone's FFN size (e.g. 128
    for hardware-friendly shapes); exclusive with ffn_choices."""

    head_choices: tuple[int, ...] | None = None
    ffn_choices: tuple[int, ...] | None = None
    ffn_step: int | None = None
    allow_drop: bool = True
    min_layers: int = 1

    def build(self, shape: BackboneShape) -> SearchSpace:
        if self.ffn_choices is not None and self.ffn_step is not None:
            raise SearchError("give either FFN choices or an FFN step, not both")
        default = SearchSpace.default(shape)
        heads = default.head_choices if self.head_choices is None else self.head_choices
        if self.ffn_step is not None:
            if not 1 <= self.ffn_step <= shape.intermediate_size:
                raise SearchError(
                    f"FFN step must be in 1..{shape.intermediate_size} (the backbone's FFN size); got {self.ffn_step}"
                )
            ffn: tuple[int, ...] = tuple(range(self.ffn_step, shape.intermediate_size + 1, self.ffn_step))
        else:
            ffn = default.ffn_choices if self.ffn_choices is None else self.ffn_choices
        if not 1 <= self.min_layers <= shape.num_layers:
            raise SearchError(
                f"min layers must be in 1..{shape.num_layers} (the backbone's layers); got {self.min_layers}"
            )
        if all(h == 0 for h in heads) and all(f == 0 for f in ffn):
            raise SearchError("head and FFN choices are all 0: every sub-network would compute nothing")
        try:
            return SearchSpace(shape, tuple(heads), tuple(ffn), self.allow_drop, self.min_layers)
        except InvalidSubnetError as e:
            raise SearchError(str(e)) from None


def param_names(space: SearchSpace) -> list[str]:
    return [f"l{i}_{p}" for i in range(space.shape.num_layers) for p in ("keep", "heads", "ffn")]


def suggest(trial: Any, space: SearchSpace) -> SubnetConfig:
    """Suggest the full parameter set on an Optuna trial and decode it."""
    params: dict[str, Any] = {}
    for i in range(space.shape.num_layers):
        params[f"l{i}_keep"] = trial.suggest_categorical(f"l{i}_keep", [True, False] if space.allow_drop else [True])
        params[f"l{i}_heads"] = trial.suggest_categorical(f"l{i}_heads", list(space.head_choices))
        params[f"l{i}_ffn"] = trial.suggest_categorical(f"l{i}_ffn", list(space.ffn_choices))
    return decode(params, space)


def decode(params: Mapping[str, Any], space: SearchSpace) -> SubnetConfig:
    """Parameter set -> SubnetConfig (repaired to `min_layers` kept layers, see the module doc)."""
    n = space.shape.num_layers
    try:
        keep = [bool(params[f"l{i}_keep"]) for i in range(n)]
        heads = [int(params[f"l{i}_heads"]) for i in range(n)]
        ffn = [int(params[f"l{i}_ffn"]) for i in range(n)]
    except KeyError as e:
        raise SearchError(f"parameter set lacks {e.args[0]!r}; expected {', '.join(param_names(space))}") from None
    kept = [i for i in range(n) if keep[i] and (heads[i] or ffn[i])]
    for i in range(n):  # repair: lowest-index computing layers first
        if len(kept) >= space.min_layers:
            break
        if i not in kept and (heads[i] or ffn[i]):
            kept.append(i)
    kept.sort()
    if len(kept) < space.min_layers:
        raise SearchError(
            f"parameter set keeps {len(kept)} computing layer(s); the space needs at least {space.min_layers}"
        )
    return SubnetConfig(tuple(kept), tuple(heads[i] for i in kept), tuple(ffn[i] for i in kept))


def encode(subnet: SubnetConfig, space: SearchSpace) -> dict[str, Any]:
    """A parameter set that decodes to `subnet` (dropped layers get the largest widths, so the
    parameter set is unique for enqueueing); SearchError when the space cannot express it."""
    if not space.contains(subnet):
        raise SearchError(f"sub-network {subnet.describe()} is outside the search space")
    params: dict[str, Any] = {}
    width = dict(zip(subnet.layers, zip(subnet.heads, subnet.ffn)))
    for i in range(space.shape.num_layers):
        h, f = width.get(i, (space.head_choices[-1], space.ffn_choices[-1]))
        params[f"l{i}_keep"] = i in width
        params[f"l{i}_heads"] = h
        params[f"l{i}_ffn"] = f
    return params


def grid_points(space: SearchSpace) -> list[tuple[float, float, SubnetConfig]]:
    """The paper's 12 grid points (width, depth, subnet) that the space can express."""
    return [(w, d, s) for w, d, s in paper_grid(space.shape, PAPER_WIDTHS, PAPER_DEPTHS) if space.contains(s)]


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    return space.to_dict()


def space_from_dict(d: Mapping[str, Any]) -> SearchSpace:
    try:
        return SearchSpace.from_dict(d)
    except (KeyError, TypeError, InvalidSubnetError) as e:
        raise SearchError(f"search space description is malformed ({type(e).__name__}: {e})") from None
