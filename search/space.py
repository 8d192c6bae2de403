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
from typing import Any

from dynabert.errors import InvalidSubnetError
from dynabert.space import SearchSpace, SpaceSpec
from dynabert.subnet import PAPER_DEPTHS, PAPER_WIDTHS, BackboneShape, SubnetConfig, paper_grid

from .errors import SearchError


class SpaceOptions(SpaceSpec):
    """dynabert.space.SpaceSpec whose `build` raises SearchError (what `dynasearch search` takes)."""

    def build(self, shape: BackboneShape, error: type[Exception] = SearchError) -> SearchSpace:
        return super().build(shape, error)


def _pattern(layers) -> str:
    return ",".join(map(str, layers))


def param_names(space: SearchSpace) -> list[str]:
    per_layer = [f"l{i}_{p}" for i in range(space.shape.num_layers) for p in ("keep", "heads", "ffn")]
    if space.keep_patterns() is not None and space.drop_rule != "none":
        return ["keep"] + [n for n in per_layer if not n.endswith("_keep")]
    return per_layer


def suggest(trial: Any, space: SearchSpace) -> SubnetConfig:
    """Suggest the full parameter set on an Optuna trial and decode it. The drop rule decides the
    kept layers' parameters: one `keep` choice among the rule's patterns ("grid"), or a keep flag
    per layer (layer 0's fixed True under "not-first", every layer's under "none")."""
    params: dict[str, Any] = {}
    pats = space.keep_patterns()
    if pats is not None and space.drop_rule != "none":
        params["keep"] = trial.suggest_categorical("keep", [_pattern(p) for p in pats])
    for i in range(space.shape.num_layers):
        if "keep" not in params:
            fixed = not space.allow_drop or (i == 0 and space.drop_rule == "not-first")
            params[f"l{i}_keep"] = trial.suggest_categorical(f"l{i}_keep", [True] if fixed else [True, False])
        params[f"l{i}_heads"] = trial.suggest_categorical(f"l{i}_heads", list(space.head_choices))
        params[f"l{i}_ffn"] = trial.suggest_categorical(f"l{i}_ffn", list(space.ffn_choices))
    return decode(params, space)


def decode(params: Mapping[str, Any], space: SearchSpace) -> SubnetConfig:
    """Parameter set -> SubnetConfig (repaired to `min_layers` kept layers, see the module doc)."""
    n = space.shape.num_layers
    try:
        heads = [int(params[f"l{i}_heads"]) for i in range(n)]
        ffn = [int(params[f"l{i}_ffn"]) for i in range(n)]
        if "keep" in params:
            kept_set = {int(x) for x in str(params["keep"]).split(",") if x != ""}
            keep = [i in kept_set for i in range(n)]
        else:
            keep = [bool(params[f"l{i}_keep"]) for i in range(n)]
    except KeyError as e:
        raise SearchError(f"parameter set lacks {e.args[0]!r}; expected {', '.join(param_names(space))}") from None
    except ValueError:
        raise SearchError(f"parameter 'keep' must be layer indices like '0,2,4'; got {params['keep']!r}") from None
    required = [i for i in range(n) if keep[i]] if "keep" in params else [0] if space.drop_rule == "not-first" else []
    for i in required:
        if not (heads[i] or ffn[i]):
            # a layer the rule keeps must compute: a zero-width layer is a dropped one (see the module doc)
            ffn[i] = next((f for f in space.ffn_choices if f), ffn[i])
            heads[i] = heads[i] if ffn[i] else next((h for h in space.head_choices if h), heads[i])
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
    subnet = SubnetConfig(tuple(kept), tuple(heads[i] for i in kept), tuple(ffn[i] for i in kept))
    if not space.layers_allowed(subnet.layers):
        raise SearchError(
            f"parameter set keeps layers {list(subnet.layers)}, which drop rule {space.drop_rule!r} does not allow"
        )
    return subnet


def encode(subnet: SubnetConfig, space: SearchSpace) -> dict[str, Any]:
    """A parameter set that decodes to `subnet` (dropped layers get the largest widths, so the
    parameter set is unique for enqueueing); SearchError when the space cannot express it."""
    if not space.contains(subnet):
        raise SearchError(f"sub-network {subnet.describe()} is outside the search space")
    params: dict[str, Any] = {}
    width = dict(zip(subnet.layers, zip(subnet.heads, subnet.ffn)))
    grid_rule = space.keep_patterns() is not None and space.drop_rule != "none"
    if grid_rule:
        params["keep"] = _pattern(subnet.layers)
    for i in range(space.shape.num_layers):
        h, f = width.get(i, (space.head_choices[-1], space.ffn_choices[-1]))
        if not grid_rule:
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
