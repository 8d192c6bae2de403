"""The one description of a sub-network, the backbone shape it is checked against, and the paper grid.

A `SubnetConfig` says which layers of the backbone are kept (ascending original indices) and, for
each kept layer, how many attention heads and FFN neurons it keeps (always the LEADING ones: after
rewiring they are the most important). Its canonical JSON and short `key` join every table the
project writes: measurements, predictions, trials, exports.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidSubnetError

PAPER_WIDTHS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
PAPER_DEPTHS: tuple[float, ...] = (1.0, 0.75, 0.5)


@dataclass(frozen=True)
class BackboneShape:
    """What a sub-network is validated against and costed on (no weights needed)."""

    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    num_labels: int = 2
    flavor: str = "bert"  # "bert" or "roberta"

    @classmethod
    def from_config(cls, config: Any) -> BackboneShape:
        """From a DynaBertConfig / BertConfig / RobertaConfig: the model's OWN shape.

        A model that is itself an extracted sub-network (a `dynasearch export`, a stage of a run
        trained from one) is a backbone of its own: its shape is its layer count and its widest
        layer (the per-layer maximum of `layer_heads` / `layer_ffn`), not the shape of the model it
        was cut from (`num_attention_heads` / `intermediate_size` of older exports still name that
        one). Width and depth multipliers are relative to this shape; they are only meant for a
        model whose layers all have it (`uniform_widths`): see `dynabert.extract.check_uniform`."""
        heads, ffn = (
            _layer_max(config, "layer_heads", "num_attention_heads"),
            _layer_max(config, "layer_ffn", "intermediate_size"),
        )
        return cls(
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
            hidden_size=config.hidden_size,
            intermediate_size=ffn,
            vocab_size=config.vocab_size,
            max_positions=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            num_labels=config.num_labels,
            flavor=getattr(config, "flavor", "bert"),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _layer_max(config: Any, per_layer: str, whole: str) -> int:
    widths = getattr(config, per_layer, None)
    return max(widths) if widths else getattr(config, whole)


def uniform_widths(config: Any) -> bool:
    """Whether every layer of the model has the same heads and the same FFN width (a model at full
    width, or an export of a grid point / of any sub-network with one width for all its layers)."""
    heads, ffn = getattr(config, "layer_heads", None), getattr(config, "layer_ffn", None)
    return not heads or (len(set(heads)) == 1 and len(set(ffn or [0])) == 1)


def _as_int_tuple(field: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidSubnetError(f"subnet field '{field}' must be a list of integers; got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidSubnetError(f"subnet field '{field}' must hold integers; got {v!r} in {list(value)!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class SubnetConfig:
    """layers: kept original layer indices, ascending and unique. heads[i], ffn[i]: widths of layers[i]."""

    layers: tuple[int, ...]
    heads: tuple[int, ...]
    ffn: tuple[int, ...]

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples, so the object is hashable and immutable.
        for name in ("layers", "heads", "ffn"):
            object.__setattr__(self, name, _as_int_tuple(name, getattr(self, name)))
        if not self.layers:
            raise InvalidSubnetError("subnet field 'layers' is empty; at least one layer must be kept")
        if not (len(self.layers) == len(self.heads) == len(self.ffn)):
            raise InvalidSubnetError(
                f"subnet fields must have one entry per kept layer; got layers={len(self.layers)}, "
                f"heads={len(self.heads)}, ffn={len(self.ffn)}"
            )
        for a, b in zip(self.layers, self.layers[1:]):
            if b <= a:
                kind = "duplicated" if a == b else "not ascending"
                raise InvalidSubnetError(
                    f"subnet field 'layers' must be ascending and unique; got {list(self.layers)} ({b} {kind})"
                )
        for name in ("layers", "heads", "ffn"):
            neg = [v for v in getattr(self, name) if v < 0]
            if neg:
                raise InvalidSubnetError(
                    f"subnet field '{name}' must be >= 0; got {neg[0]} in {list(getattr(self, name))}"
                )

    # ---------------------------------------------------------------- construction
    @classmethod
    def full(cls, shape: BackboneShape) -> SubnetConfig:
        n = shape.num_layers
        return cls(tuple(range(n)), (shape.num_heads,) * n, (shape.intermediate_size,) * n)

    @classmethod
    def from_grid(cls, shape: BackboneShape, width: float, depth: float) -> SubnetConfig:
        """The paper's (width multiplier, depth multiplier) rule, as the reference code computes it.

        heads = round(H * m_w) (Python's round: half to even), FFN = heads / H * I (FFN tied to the
        head rounding), depth = round(L * m_d) and kept layers floor(i / m_d) for i < depth.
        """
        for name, m in (("width", width), ("depth", depth)):
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or not 0 < m <= 1:
                raise InvalidSubnetError(f"{name} multiplier must be in (0, 1]; got {m!r}")
        if shape.num_heads < 1:
            raise InvalidSubnetError(
                "this model has no attention heads in any layer: width multipliers (round(heads * width) heads "
                "per layer) do not apply to it; give the sub-network as a subnet JSON instead"
            )
        heads = round(shape.num_heads * width)
        if heads < 1:
            raise InvalidSubnetError(
                f"width multiplier {width} keeps round({shape.num_heads} * {width}) = 0 heads; "
                f"for {shape.num_heads} heads the width must be above {0.5 / shape.num_heads:.4g}"
            )
        ffn = heads * shape.intermediate_size // shape.num_heads
        n_keep = round(shape.num_layers * depth)
        if n_keep < 1:
            raise InvalidSubnetError(
                f"depth multiplier {depth} keeps round({shape.num_layers} * {depth}) = 0 layers; "
                f"it must keep at least one"
            )
        # The small epsilon guards floor() against i / m_d landing a hair under an integer.
        layers = tuple(math.floor(i / depth + 1e-9) for i in range(n_keep))
        return cls(layers, (heads,) * n_keep, (ffn,) * n_keep)

    # ---------------------------------------------------------------- validation
    def validate(self, shape: BackboneShape) -> SubnetConfig:
        """Raise InvalidSubnetError naming the field, the value and the allowed range; return self."""
        for i, layer in enumerate(self.layers):
            if not 0 <= layer < shape.num_layers:
                raise InvalidSubnetError(
                    f"subnet field 'layers' holds {layer} (entry {i}); allowed 0..{shape.num_layers - 1} "
                    f"for a {shape.num_layers}-layer backbone"
                )
        for field, values, limit in (
            ("heads", self.heads, shape.num_heads),
            ("ffn", self.ffn, shape.intermediate_size),
        ):
            for layer, v in zip(self.layers, values):
                if v > limit:
                    raise InvalidSubnetError(
                        f"subnet field '{field}' asks {v} for layer {layer}; allowed 0..{limit} for this backbone"
                    )
        return self

    # ---------------------------------------------------------------- identity
    def to_dict(self) -> dict[str, list[int]]:
        return {"layers": list(self.layers), "heads": list(self.heads), "ffn": list(self.ffn)}

    def to_json(self) -> str:
        """Canonical JSON: fixed key order, no spaces. Equal configs give equal strings."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @property
    def key(self) -> str:
        """Stable 12-hex-digit key derived from the canonical JSON (same config, same key, any run)."""
        return hashlib.blake2b(self.to_json().encode(), digest_size=6).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubnetConfig:
        if not isinstance(data, Mapping):
            raise InvalidSubnetError(
                f"a subnet must be a JSON object with layers, heads, ffn; got {type(data).__name__}"
            )
        missing = [k for k in ("layers", "heads", "ffn") if k not in data]
        if missing:
            raise InvalidSubnetError(f"subnet JSON lacks field(s) {missing}; required: layers, heads, ffn")
        extra = sorted(set(data) - {"layers", "heads", "ffn", "key"})
        if extra:
            raise InvalidSubnetError(f"subnet JSON has unknown field(s) {extra}; allowed: layers, heads, ffn (and key)")
        sub = cls(data["layers"], data["heads"], data["ffn"])
        if "key" in data and data["key"] != sub.key:
            raise InvalidSubnetError(
                f"subnet JSON key {data['key']!r} does not match its content (expected {sub.key!r})"
            )
        return sub

    @classmethod
    def from_json(cls, text: str) -> SubnetConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidSubnetError(f"subnet JSON is malformed or truncated: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path) -> SubnetConfig:
        from .io import read_json  # one reader for every JSON file: unreadable, non-UTF-8, truncated

        data = read_json(path, "subnet file", error=InvalidSubnetError, kind=object)
        try:
            return cls.from_dict(data)
        except InvalidSubnetError as e:
            raise InvalidSubnetError(f"{path}: {e}") from None

    # ---------------------------------------------------------------- views
    def active_spec(self) -> list[tuple[int, int, int]]:
        """(layer, heads, ffn) triples, the form the model's active mode takes."""
        return list(zip(self.layers, self.heads, self.ffn))

    @property
    def depth(self) -> int:
        return len(self.layers)

    def describe(self) -> str:
        hs, fs = set(self.heads), set(self.ffn)
        h = str(self.heads[0]) if len(hs) == 1 else "/".join(map(str, self.heads))
        f = str(self.ffn[0]) if len(fs) == 1 else "/".join(map(str, self.ffn))
        return f"layers {','.join(map(str, self.layers))} heads {h} ffn {f}"


def grid_widths(shape: BackboneShape, widths: Iterable[float] = PAPER_WIDTHS) -> tuple[float, ...]:
    """The widths that keep at least one head of this shape (all of the paper's unless the model
    has 1 or 2 heads, e.g. a very narrow export: width 0.25 of 2 heads keeps round(0.5) = 0)."""
    return tuple(w for w in widths if round(shape.num_heads * w) >= 1)


def paper_grid(
    shape: BackboneShape, widths: Iterable[float] = PAPER_WIDTHS, depths: Iterable[float] = PAPER_DEPTHS
) -> list[tuple[float, float, SubnetConfig]]:
    """(width, depth, subnet) for the paper's grid, depth outer and width inner as in training.
    Widths that keep no head of this shape (`grid_widths`: only for a model of 1 or 2 heads, e.g.
    a very narrow export) are left out; `SubnetConfig.from_grid` refuses them one by one."""
    widths = grid_widths(shape, widths)
    return [(w, d, SubnetConfig.from_grid(shape, w, d)) for d in depths for w in widths]


# ---------------------------------------------------------------------------- cost model
def count_params(shape: BackboneShape, subnet: SubnetConfig) -> dict[str, int]:
    """Parameters of the extracted model, analytically: embeddings, encoder, head, total."""
    h, d = shape.hidden_size, shape.head_dim
    emb = (shape.vocab_size + shape.max_positions + max(shape.type_vocab_size, 1)) * h + 2 * h
    enc = 0
    for heads, ffn in zip(subnet.heads, subnet.ffn):
        if heads:
            inner = heads * d
            enc += 3 * (h * inner + inner) + (inner * h + h) + 2 * h
        if ffn:
            enc += (h * ffn + ffn) + (ffn * h + h) + 2 * h
    head = (h * h + h) + (h * shape.num_labels + shape.num_labels)
    return {"embeddings": emb, "encoder": enc, "head": head, "total": emb + enc + head}


def count_flops(shape: BackboneShape, subnet: SubnetConfig, batch: int = 1, seq_len: int = 128) -> int:
    """Encoder FLOPs (2 x multiply-accumulates of the matrix products), the paper's convention:
    Q/K/V/output projections, the two attention matmuls and the FFN. Embedding look-ups, softmax,
    LayerNorm, GELU and the classification head are left out (they are < 1% at length 128)."""
    h, d, t = shape.hidden_size, shape.head_dim, seq_len
    macs = 0
    for heads, ffn in zip(subnet.heads, subnet.ffn):
        inner = heads * d
        macs += t * h * inner * 4  # q, k, v, output projection
        macs += 2 * t * t * inner  # scores and weighted sum
        macs += 2 * t * h * ffn  # FFN in and out
    return 2 * batch * macs


def grid_table(shape: BackboneShape, batch: int = 1, seq_len: int = 128, widths=PAPER_WIDTHS, depths=PAPER_DEPTHS):
    """The paper grid as a pandas DataFrame: one row per (width, depth)."""
    import pandas as pd

    rows = []
    for w, d, s in paper_grid(shape, widths, depths):
        p = count_params(shape, s)
        rows.append(
            {
                "width": w,
                "depth": d,
                "key": s.key,
                "layers": ",".join(map(str, s.layers)),
                "heads": s.heads[0],
                "ffn": s.ffn[0],
                "params_M": round(p["total"] / 1e6, 2),
                "encoder_params_M": round(p["encoder"] / 1e6, 2),
                "GFLOPs": round(count_flops(shape, s, batch, seq_len) / 1e9, 3),
            }
        )
    return pd.DataFrame(rows)
