"""Search spaces: which per-layer choices a sampler, a latency table or a search may use.

Lives in `dynabert` (not `search`) because predictors and samplers need it too and dependencies
point one way: dynabert <- predictors <- search.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .errors import InvalidSubnetError
from .subnet import PAPER_DEPTHS, PAPER_WIDTHS, BackboneShape, SubnetConfig, paper_grid


@dataclass(frozen=True)
class SearchSpace:
    """Per-layer choices. A layer may be dropped if `allow_drop`; at least `min_layers` are kept.

    head_choices / ffn_choices: allowed widths of a kept layer (0 allowed: that sub-block is skipped).
    `SearchSpace.default(shape)`: the paper's widths applied per layer, heads and FFN chosen
    independently, each layer kept or dropped.
    """

    shape: BackboneShape
    head_choices: tuple[int, ...]
    ffn_choices: tuple[int, ...]
    allow_drop: bool = True
    min_layers: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "head_choices", tuple(sorted(set(int(h) for h in self.head_choices))))
        object.__setattr__(self, "ffn_choices", tuple(sorted(set(int(f) for f in self.ffn_choices))))
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

    @classmethod
    def default(
        cls, shape: BackboneShape, widths: tuple[float, ...] = PAPER_WIDTHS, allow_drop: bool = True
    ) -> SearchSpace:
        """Each layer independently at one of the paper's widths (heads and FFN chosen separately)."""
        heads = {round(shape.num_heads * w) for w in widths}
        ffn = {round(shape.num_heads * w) * shape.intermediate_size // shape.num_heads for w in widths}
        return cls(shape, tuple(h for h in heads if h > 0), tuple(f for f in ffn if f > 0), allow_drop)

    def contains(self, subnet: SubnetConfig) -> bool:
        try:
            subnet.validate(self.shape)
        except InvalidSubnetError:
            return False
        if not self.allow_drop and subnet.depth != self.shape.num_layers:
            return False
        return (
            subnet.depth >= self.min_layers
            and all(h in self.head_choices for h in subnet.heads)
            and all(f in self.ffn_choices for f in subnet.ffn)
        )

    def sample(self, rng: random.Random) -> SubnetConfig:
        """Uniform over per-layer choices: each layer kept with probability 1/2 (if drops are allowed;
        resampled until min_layers are kept), then heads and FFN uniform over their choices."""
        n = self.shape.num_layers
        while True:
            layers = [i for i in range(n) if not self.allow_drop or rng.random() < 0.5]
            if len(layers) >= self.min_layers:
                break
        heads = [rng.choice(self.head_choices) for _ in layers]
        ffn = [rng.choice(self.ffn_choices) for _ in layers]
        return SubnetConfig(tuple(layers), tuple(heads), tuple(ffn))

    def grid(self, widths=PAPER_WIDTHS, depths=PAPER_DEPTHS) -> list[SubnetConfig]:
        return [s for _, _, s in paper_grid(self.shape, widths, depths)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape.to_dict(),
            "head_choices": list(self.head_choices),
            "ffn_choices": list(self.ffn_choices),
            "allow_drop": self.allow_drop,
            "min_layers": self.min_layers,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        return cls(
            BackboneShape(**d["shape"]),
            tuple(d["head_choices"]),
            tuple(d["ffn_choices"]),
            d["allow_drop"],
            d["min_layers"],
        )
