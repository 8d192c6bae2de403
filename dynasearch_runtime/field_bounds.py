"""Which kind of the bounds table (`bounds`) each number of a JSON file is, and the walk that checks a
document against such a map. Every reader of a JSON file dynasearch writes and reads back (kit.json,
devices.json, predictor.json, search.json, run.json, steps.json) keeps its map as a module-level
table of `Field`s, so tests/test_bounds.py can enumerate them and fail when a number has none.

Part of the device runtime (standard library only; relative imports, Python 3.8 syntax): the
bundle loader and the kit's runner check their files with it.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

from .bounds import Number, violation

# (path, kind, nullable). A path is dotted; "*" stands for every item of a list or every value of an
# object ("shapes.*.0": the batch of every [batch, seq_len] pair). A path that is absent is skipped:
# which keys must be there is each reader's own check.
Field = Tuple[str, str, bool]
# kind -> (a lower top than the kind's own, why): the backbone's limits on top of the table's ranges
Highs = Mapping[str, Tuple[Number, str]]

# A backbone shape as `BackboneShape.to_dict` writes it: the records' shape cell, predictor.json's
# shape, search.json's study.space.shape, run.json's backbone, kit.json's shape, devices.json's backbone.
SHAPE_BOUNDS: Tuple[Field, ...] = (
    ("num_layers", "layers", False),
    ("num_heads", "head_count", False),
    ("head_dim", "hidden", False),
    ("hidden_size", "hidden", False),
    ("intermediate_size", "ffn_size", False),
    ("vocab_size", "vocab", False),
    ("max_positions", "positions", False),
    ("type_vocab_size", "token_types", False),
    ("num_labels", "labels", False),
)

# A sub-network as JSON ({"layers": [...], "heads": [...], "ffn": [...]}): index, heads and FFN per layer.
SUBNET_BOUNDS: Tuple[Field, ...] = (
    ("layers.*", "layer", False),
    ("heads.*", "heads", False),
    ("ffn.*", "ffn", False),
)


def under(prefix: str, fields: Sequence[Field]) -> Tuple[Field, ...]:
    """`fields` of a part of a document, as fields of the whole ("study.space.shape" + SHAPE_BOUNDS)."""
    return tuple((f"{prefix}.{path}", kind, nullable) for path, kind, nullable in fields)


def _name(parent: str, part: Any, in_list: bool) -> str:
    if in_list:
        return f"{parent}[{part}]"
    return f"{parent}.{part}" if parent else str(part)


def values_at(doc: Any, path: str) -> Iterator[Tuple[str, Any]]:
    """(name, value) of every value at `path` in `doc`, named as the document reads ("shapes[2][0]",
    "anchor_reference[1].ms"); parts that are absent, or not an object or list, are skipped."""
    found = [("", doc)]
    for part in path.split("."):
        step = []
        for name, node in found:
            if isinstance(node, list):
                if part == "*":
                    step += [(_name(name, i, True), v) for i, v in enumerate(node)]
                elif part.isdigit() and int(part) < len(node):
                    step.append((_name(name, part, True), node[int(part)]))
            elif isinstance(node, dict):
                if part == "*":
                    step += [(_name(name, k, False), v) for k, v in node.items()]
                elif part in node:
                    step.append((_name(name, part, False), node[part]))
        found = step
    return iter(found)


def first_violation(doc: Any, fields: Sequence[Field], highs: Optional[Highs] = None) -> Optional[Tuple[str, Any, str]]:
    """(name, value, rule) of the first value of `doc` outside its field's kind (null allowed where the
    field is nullable; a kind in `highs` capped at its top there, the rule saying why); None when all hold."""
    caps: Dict[str, Tuple[Number, str]] = dict(highs or {})
    for path, kind, nullable in fields:
        for name, value in values_at(doc, path):
            if value is None and nullable:
                continue
            high, why = caps.get(kind, (None, ""))
            rule = violation(kind, value, high)
            if rule is not None:
                return name, value, ("null or " if nullable else "") + rule + (f" ({why})" if why and high else "")
    return None
