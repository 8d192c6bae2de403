"""Search spaces: which per-layer choices a sampler, a latency table, a training or a search may use.

Lives in `dynabert` (not `search`) because training, predictors and samplers need it too and
dependencies point one way: dynabert <- predictors <- search.

The layer-drop rule says which layers may be dropped (`DROP_RULES`):
- "any": any layer (at least `min_layers` kept);
- "not-first": never layer 0 (the one that reads the embeddings);
- "grid": only the keep patterns of the paper's depths (those the paper's depth stage trains:
  on 6 layers {0..5}, {0,1,2,4}, {0,2,4});
- "none": no layer is dropped (widths only; `allow_drop=False` is the same space).
Every rule but "none" keeps the paper's 12 grid points expressible (the paper's depths drop the
LAST layer on a 6-layer backbone, so a "never the last" rule would remove 8 of them).
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dynasearch_runtime import bounds

from .errors import InvalidSubnetError
from .subnet import PAPER_DEPTHS, PAPER_WIDTHS, BackboneShape, SubnetConfig, paper_grid

DROP_RULES: tuple[str, ...] = ("any", "not-first", "grid", "none")
# How a training samples per-layer widths from the space: "uniform" over each layer's choices, or
# "mid", weights rising toward the middle choices (triangular), the range users' targets fall in.
SAMPLE_BIASES: tuple[str, ...] = ("uniform", "mid")


def grid_keep_patterns(shape: BackboneShape, depths: Sequence[float] = PAPER_DEPTHS) -> tuple[tuple[int, ...], ...]:
    """The kept-layer tuples of the paper's depth multipliers on this backbone, deepest first."""
    pats = {s.layers for _, _, s in paper_grid(shape, (1.0,), tuple(depths))}
    return tuple(sorted(pats, key=lambda p: (-len(p), p)))


@dataclass(frozen=True)
class SearchSpace:
    """Per-layer choices. Layers may be dropped as `drop_rule` allows; at least `min_layers` are kept.

    head_choices / ffn_choices: allowed widths of a kept layer (0 allowed: that sub-block is skipped).
    `SearchSpace.default(shape)`: the paper's widths applied per layer, heads and FFN chosen
    independently, each layer kept or dropped.
    """

    shape: BackboneShape
    head_choices: tuple[int, ...]
    ffn_choices: tuple[int, ...]
    allow_drop: bool = True
    min_layers: int = 1
    drop_rule: str = "any"

    def __post_init__(self) -> None:
        object.__setattr__(self, "head_choices", tuple(sorted(set(int(h) for h in self.head_choices))))
        object.__setattr__(self, "ffn_choices", tuple(sorted(set(int(f) for f in self.ffn_choices))))
        if self.drop_rule not in DROP_RULES:
            raise InvalidSubnetError(f"unknown drop rule {self.drop_rule!r}; allowed: {', '.join(DROP_RULES)}")
        if not self.allow_drop:
            object.__setattr__(self, "drop_rule", "none")
        object.__setattr__(self, "allow_drop", self.drop_rule != "none")
        if not self.head_choices or not self.ffn_choices:
            raise InvalidSubnetError("a search space needs at least one head choice and one FFN choice")
        bad_h = [h for h in self.head_choices if not 0 <= h <= self.shape.num_heads]
        if bad_h:
            raise InvalidSubnetError(f"head choices {bad_h} outside 0..{self.shape.num_heads}")
        bad_f = [f for f in self.ffn_choices if not 0 <= f <= self.shape.intermediate_size]
        if bad_f:
            raise InvalidSubnetError(f"FFN choices {bad_f} outside 0..{self.shape.intermediate_size}")
        if not 1 <= self.min_layers <= self.shape.num_layers:
            raise InvalidSubnetError(f"min_layers must be in 1..{self.shape.num_layers}; got {self.min_layers}")
        if self.drop_rule == "grid" and not self.keep_patterns():
            raise InvalidSubnetError(
                f"drop rule 'grid' keeps at most {len(grid_keep_patterns(self.shape)[-1])} layer(s) at the paper's "
                f"smallest depth; min_layers {self.min_layers} leaves no pattern"
            )

    @classmethod
    def default(
        cls, shape: BackboneShape, widths: tuple[float, ...] = PAPER_WIDTHS, allow_drop: bool = True
    ) -> SearchSpace:
        """Each layer independently at one of the paper's widths (heads and FFN chosen separately)."""
        heads = {round(shape.num_heads * w) for w in widths}
        ffn = {round(shape.num_heads * w) * shape.intermediate_size // shape.num_heads for w in widths}
        return cls(shape, tuple(h for h in heads if h > 0), tuple(f for f in ffn if f > 0), allow_drop)

    def keep_patterns(self) -> tuple[tuple[int, ...], ...] | None:
        """For drop rule "grid" (and "none"): the allowed kept-layer tuples; None: per layer."""
        n = self.shape.num_layers
        if self.drop_rule == "none":
            return (tuple(range(n)),)
        if self.drop_rule == "grid":
            return tuple(p for p in grid_keep_patterns(self.shape) if len(p) >= self.min_layers)
        return None

    def layers_allowed(self, layers: Sequence[int]) -> bool:
        """Whether the drop rule allows this kept-layer tuple (min_layers included)."""
        layers = tuple(layers)
        if len(layers) < self.min_layers:
            return False
        pats = self.keep_patterns()
        if pats is not None:
            return layers in pats
        return self.drop_rule != "not-first" or (len(layers) > 0 and layers[0] == 0)

    def contains(self, subnet: SubnetConfig) -> bool:
        try:
            subnet.validate(self.shape)
        except InvalidSubnetError:
            return False
        return (
            self.layers_allowed(subnet.layers)
            and all(h in self.head_choices for h in subnet.heads)
            and all(f in self.ffn_choices for f in subnet.ffn)
        )

    def kept_counts(self) -> tuple[int, ...]:
        """The numbers of kept layers the drop rule allows (min_layers included), ascending."""
        pats = self.keep_patterns()
        if pats is not None:
            return tuple(sorted({len(p) for p in pats}))
        return tuple(range(max(self.min_layers, 1), self.shape.num_layers + 1))

    def sample(
        self, rng: random.Random, bias: str = "uniform", full_depth: bool = False, kept: int | None = None
    ) -> SubnetConfig:
        """One config: the kept layers (per the drop rule: a pattern uniformly, or each droppable layer
        kept with probability 1/2, resampled until min_layers are kept; every layer when
        `full_depth`; exactly `kept` layers when given, one of `kept_counts()`, drawn uniformly among
        the allowed ones), then heads and FFN per kept layer, uniform or biased to the middle (`bias`)."""
        n = self.shape.num_layers
        pats = (tuple(range(n)),) if full_depth else self.keep_patterns()
        if kept is not None and not full_depth:
            if kept not in self.kept_counts():
                raise InvalidSubnetError(f"{kept} kept layer(s) is not allowed; allowed: {list(self.kept_counts())}")
            if pats is not None:
                layers = list(rng.choice([p for p in pats if len(p) == kept]))
            elif self.drop_rule == "not-first":
                layers = [0, *sorted(rng.sample(range(1, n), kept - 1))]
            else:
                layers = sorted(rng.sample(range(n), kept))
        elif pats is not None:
            layers = list(rng.choice(pats))
        else:
            while True:
                layers = [i for i in range(n) if (i == 0 and self.drop_rule == "not-first") or rng.random() < 0.5]
                if len(layers) >= self.min_layers:
                    break
        heads = [_pick(rng, self.head_choices, bias) for _ in layers]
        ffn = [_pick(rng, self.ffn_choices, bias) for _ in layers]
        return SubnetConfig(tuple(layers), tuple(heads), tuple(ffn))

    def largest(self) -> SubnetConfig:
        """Every layer at the largest choices (the sandwich rule's top)."""
        n = self.shape.num_layers
        return SubnetConfig(tuple(range(n)), (self.head_choices[-1],) * n, (self.ffn_choices[-1],) * n)

    def smallest(self, full_depth: bool = False) -> SubnetConfig:
        """The fewest layers the rule allows (the shallowest pattern, or the first min_layers layers),
        each at the smallest choices that compute something (the sandwich rule's bottom)."""
        pats = (tuple(range(self.shape.num_layers)),) if full_depth else self.keep_patterns()
        layers = pats[-1] if pats is not None else tuple(range(self.min_layers))
        h = self.head_choices[0]
        f = self.ffn_choices[0]
        if h == 0 and f == 0:  # a layer that computes nothing is a dropped layer: take the next FFN choice
            f = self.ffn_choices[1] if len(self.ffn_choices) > 1 else f
            h = h if f else (self.head_choices[1] if len(self.head_choices) > 1 else h)
        return SubnetConfig(tuple(layers), (h,) * len(layers), (f,) * len(layers))

    def grid(self, widths=PAPER_WIDTHS, depths=PAPER_DEPTHS) -> list[SubnetConfig]:
        return [s for _, _, s in paper_grid(self.shape, widths, depths)]

    def describe(self) -> str:
        """One line for messages: 'heads [3, 6] x FFN [384, 768], drop any, >= 1 layers'."""
        return (
            f"heads {list(self.head_choices)} x FFN {list(self.ffn_choices)}, drop rule {self.drop_rule}, "
            f">= {self.min_layers} layer(s)"
        )

    def covers(self, other: SearchSpace) -> bool:
        """Whether every config of `other` is a config of this space (the same backbone)."""
        if self.shape != other.shape:
            return False
        if not (set(other.head_choices) <= set(self.head_choices) and set(other.ffn_choices) <= set(self.ffn_choices)):
            return False
        pats = other.keep_patterns()
        if pats is not None:
            return all(self.layers_allowed(p) for p in pats)
        if self.drop_rule == "any" or (self.drop_rule == "not-first" and other.drop_rule == "not-first"):
            return other.min_layers >= self.min_layers
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape.to_dict(),
            "head_choices": list(self.head_choices),
            "ffn_choices": list(self.ffn_choices),
            "allow_drop": self.allow_drop,
            "min_layers": self.min_layers,
            "drop_rule": self.drop_rule,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        return cls(
            BackboneShape(**d["shape"]),
            tuple(d["head_choices"]),
            tuple(d["ffn_choices"]),
            d["allow_drop"],
            d["min_layers"],
            d.get("drop_rule", "any" if d["allow_drop"] else "none"),  # spaces saved before drop rules
        )


def _pick(rng: random.Random, choices: tuple[int, ...], bias: str) -> int:
    if bias == "uniform" or len(choices) < 3:
        return rng.choice(choices)
    k = len(choices)
    return rng.choices(choices, [1 + min(i, k - 1 - i) for i in range(k)])[0]


def grid_ffn_widths(shape: BackboneShape, widths: Sequence[float] = PAPER_WIDTHS) -> list[tuple[float, int]]:
    """(width multiplier, FFN neurons) of the paper's grid widths on this backbone, widest first."""
    return [(w, sub.ffn[0]) for w, _, sub in paper_grid(shape, tuple(widths), (1.0,))]


def ffn_step_choices(shape: BackboneShape, step: int, error: type[Exception] = InvalidSubnetError) -> tuple[int, ...]:
    """The FFN choices of an FFN step: every multiple of it up to the backbone's FFN. The step must
    divide the FFN (else the full FFN is no choice and the largest grid point leaves the space); a
    step that misses some grid widths is allowed (a coarser space) with a warning naming them."""
    n = shape.intermediate_size
    bounds.check("ffn_step", step, "FFN step", error, high=n, hint=f"the backbone's FFN has {n} neurons")
    grid = grid_ffn_widths(shape)
    reached = [f"{w:g} ({f})" for w, f in grid if f % step == 0]
    missed = [f"{w:g} ({f})" for w, f in grid if f % step]
    if n % step:
        common = math.gcd(*(f for _, f in grid)) if grid else n
        good = [d for d in range(1, common + 1) if common % d == 0][-5:]
        raise error(
            f"FFN step {step} does not divide the backbone's FFN ({n} neurons): the full FFN would be no choice; "
            f"it reaches grid widths {', '.join(reached) or 'none'}; steps that reach every grid width: "
            f"{', '.join(map(str, good))} (or any divisor of {common})"
        )
    if missed:
        warnings.warn(
            f"FFN step {step} reaches grid widths {', '.join(reached)} but not {', '.join(missed)} "
            "(width (FFN neurons)): those grid points are not in the space",
            stacklevel=3,
        )
    return tuple(range(step, n + 1, step))


@dataclass(frozen=True)
class SpaceSpec:
    """What a user chooses about a space, before the backbone is known (a training's or a search's
    options); None means the paper's widths applied per layer. `build(shape, error)` raises the
    caller's error class (SearchError in a search, DataError in a training).

    ffn_step: FFN choices are every multiple of the step up to the backbone's FFN size (e.g. 128
    for hardware-friendly shapes); exclusive with ffn_choices."""

    head_choices: tuple[int, ...] | None = None
    ffn_choices: tuple[int, ...] | None = None
    ffn_step: int | None = None
    allow_drop: bool = True
    min_layers: int = 1
    drop_rule: str = "any"

    def build(self, shape: BackboneShape, error: type[Exception] = InvalidSubnetError) -> SearchSpace:
        if self.ffn_choices is not None and self.ffn_step is not None:
            raise error("give either FFN choices or an FFN step, not both")
        if self.drop_rule not in DROP_RULES:
            raise error(f"unknown drop rule {self.drop_rule!r}; allowed: {', '.join(DROP_RULES)}")
        default = SearchSpace.default(shape)
        heads = default.head_choices if self.head_choices is None else self.head_choices
        if self.ffn_step is not None:
            ffn: tuple[int, ...] = ffn_step_choices(shape, self.ffn_step, error)
        else:
            ffn = default.ffn_choices if self.ffn_choices is None else self.ffn_choices
            for f in ffn:
                bounds.check("ffn", f, "an FFN choice", error, high=shape.intermediate_size)
        for h in heads:
            bounds.check("heads", h, "a head choice", error, high=shape.num_heads)
        if not 1 <= self.min_layers <= shape.num_layers:
            raise error(f"min layers must be in 1..{shape.num_layers} (the backbone's layers); got {self.min_layers}")
        if all(h == 0 for h in heads) and all(f == 0 for f in ffn):
            raise error("head and FFN choices are all 0: every sub-network would compute nothing")
        try:
            return SearchSpace(
                shape,
                tuple(heads),
                tuple(ffn),
                self.allow_drop and self.drop_rule != "none",
                self.min_layers,
                self.drop_rule if self.allow_drop else "none",
            )
        except InvalidSubnetError as e:
            raise error(str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "head_choices": None if self.head_choices is None else list(self.head_choices),
            "ffn_choices": None if self.ffn_choices is None else list(self.ffn_choices),
            "ffn_step": self.ffn_step,
            "min_layers": self.min_layers,
            "drop_rule": self.drop_rule if self.allow_drop else "none",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpaceSpec:
        unknown = sorted(set(d) - {"head_choices", "ffn_choices", "ffn_step", "min_layers", "drop_rule"})
        if unknown:
            raise ValueError(
                f"unknown key(s) {unknown}; allowed: head_choices, ffn_choices, ffn_step, min_layers, drop_rule"
            )

        def tup(v):
            return None if v is None else tuple(int(x) for x in v)

        return cls(
            tup(d.get("head_choices")),
            tup(d.get("ffn_choices")),
            d.get("ffn_step"),
            d.get("drop_rule", "any") != "none",
            int(d.get("min_layers", 1)),
            d.get("drop_rule", "any"),
        )
