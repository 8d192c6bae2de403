"""The bounds table: for every kind of number a user types or a file holds, the range in which it can
mean something. One home for those limits: every command-line option and every file reader that
takes such a number asks this table (`check`, `violation`, `parse`); tests/test_bounds.py fails when
an option or a reader field takes a bounded number without it.

Part of the device runtime (standard library only; relative imports, Python 3.8 syntax): the bundle
loader and the kit's runner ship without dynabert and use the same table.

A kind's range is physical or practical, never this machine's: a bundle may describe a machine with
more cores than this one, so threads go to 1024, not to os.cpu_count(). Ranges that depend on the
backbone (a sequence length within its positions, an FFN step that divides its FFN) take the
backbone's number as `high=` on top of the kind's own range.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Union

Number = Union[int, float]


class Bound(NamedTuple):
    low: Number
    high: Number
    integer: bool
    low_open: bool  # True: low itself is outside (a latency is > 0, not >= 0)
    unit: str  # shown after the range: "ms", "s", "" (none)
    why: str  # why the range is what it is (shown by `describe(kind, why=True)` and in docs)


HOUR_MS = 3_600_000.0
DAY_S = 86_400.0

BOUNDS: Dict[str, Bound] = {
    # --- settings of a run on a device
    "threads": Bound(
        1, 1024, True, False, "", "intra-op threads; a bundle may describe a bigger machine than this one"
    ),
    "batch": Bound(1, 4096, True, False, "", "texts per model run"),
    "seq_len": Bound(1, 8192, True, False, "", "tokens per text; never more than the backbone's positions"),
    "max_seq_length": Bound(2, 8192, True, False, "", "a text's longest tokenisation: [CLS] and [SEP] at least"),
    "cpu_cores": Bound(1, 4096, True, False, "", "cores a process may use"),
    # --- times
    "latency_ms": Bound(0, HOUR_MS, False, True, "ms", "a latency above an hour is an error, not a number"),
    "duration_s": Bound(0, DAY_S, False, True, "s", "a time limit, cap or heartbeat above a day is an error"),
    "heartbeat_s": Bound(1, 86_400, True, False, "s", "a heartbeat or grace period in whole seconds, at most a day"),
    "rate": Bound(0, 1_000_000, False, True, "/s", "requests per second of a load schedule"),
    "ratio": Bound(0, 1000, False, True, "", "a ratio of two latencies or speeds (1.0 = equal)"),
    "latency0_ms": Bound(0, HOUR_MS, False, False, "ms", "a spread of latencies (IQR); 0 when the runs agree"),
    "elapsed_s": Bound(0, 7 * DAY_S, False, False, "s", "wall seconds a step or measurement took (0: under rounding)"),
    "duration0_s": Bound(0, DAY_S, False, False, "s", "a time cap that may be 0 (that phase is skipped)"),
    # --- counts
    "runs": Bound(1, 1_000_000, True, False, "", "timed runs of one config"),
    "runs0": Bound(0, 1_000_000, True, False, "", "runs that may be none (warm-up, re-warm, undisturbed)"),
    "chunk_size": Bound(1, 10_000, True, False, "", "configs interleaved at once (one extracted model each)"),
    "count": Bound(1, 1_000_000_000, True, False, "", "configs, trials, candidates, examples, steps"),
    "count0": Bound(0, 1_000_000_000, True, False, "", "a count that may be zero"),
    "front": Bound(0, 64, True, False, "", "front configs a bundle carries per device (0: its answer alone)"),
    "labels": Bound(1, 100_000, True, False, "", "classes of a classifier head"),
    "seed": Bound(0, 2**32 - 1, True, False, "", "a random seed (numpy takes 0..2**32-1)"),
    "texts": Bound(1, 1024, True, False, "", "texts in one request to the server (its SLO covers them all)"),
    "body_bytes": Bound(1, 64 * 1024 * 1024, True, False, "", "bytes of one request body"),
    "queue": Bound(1, 1_000_000, True, False, "", "texts a server lets wait"),
    "replicas": Bound(1, 10_000, True, False, "", "server replicas of a Ray Serve deployment, across a cluster"),
    "text_inputs": Bound(1, 2, True, False, "", "texts per example: 1, or 2 for a sentence-pair task"),
    "port": Bound(1, 65535, True, False, "", "a TCP port"),
    "params": Bound(0, 10**13, True, False, "", "parameters of a model"),
    "flops": Bound(0, 10**18, True, False, "", "floating-point operations of one model run"),
    # --- shapes of a backbone and of its sub-networks
    "layers": Bound(1, 1024, True, False, "", "encoder layers"),
    "heads": Bound(0, 1024, True, False, "", "attention heads a layer keeps (0: the attention is dropped)"),
    "ffn": Bound(0, 1_048_576, True, False, "", "FFN neurons a layer keeps (0: the FFN is dropped)"),
    "ffn_step": Bound(1, 1_048_576, True, False, "", "FFN choices are its multiples; at most the backbone's FFN"),
    "depth": Bound(0, 1024, True, False, "", "layers a sub-network keeps (0: embeddings and head alone)"),
    "layer": Bound(0, 1023, True, False, "", "a layer's index, from 0"),
    "head_count": Bound(1, 1024, True, False, "", "attention heads of a backbone's layer"),
    "ffn_size": Bound(1, 1_048_576, True, False, "", "FFN neurons of a backbone's layer"),
    "hidden": Bound(1, 65_536, True, False, "", "a hidden size or an attention head's dimension"),
    "vocab": Bound(1, 10_000_000, True, False, "", "tokens of a vocabulary"),
    "token_types": Bound(0, 65_536, True, False, "", "token types (segments) of a backbone; 0: none"),
    "positions": Bound(1, 1_048_576, True, False, "", "a backbone's position table (max_position_embeddings)"),
    # --- shares and training numbers
    "fraction": Bound(0, 1, False, True, "", "a multiplier or share in (0, 1]"),
    "share": Bound(0, 1, False, False, "", "a share in [0, 1]"),
    "warmup": Bound(0, 0.5, False, False, "", "the share of a stage's steps spent warming up the learning rate"),
    "test_fraction": Bound(0, 0.9, False, True, "", "the share of configs held out; at least a tenth is left to fit"),
    "epochs": Bound(0, 1000, False, True, "", "passes over the training data"),
    "learning_rate": Bound(0, 1, False, True, "", "an optimizer step size"),
    "epsilon": Bound(0, 1, False, True, "", "a small constant added for numerical safety (Adam's eps)"),
    "space_samples": Bound(0, 64, True, False, "", "configs trained per step: each costs a forward and backward pass"),
    "weight": Bound(0, 1000, False, False, "", "a loss weight, decay or norm; 0 turns it off"),
    "loss_scale": Bound(
        0.001, 100, False, False, "", "a multiplier of one sub-network's loss; near 0 it would leave it untrained"
    ),
    "metric": Bound(-1e6, 1e6, False, False, "", "a task metric (accuracy, F1, correlation), finite"),
    "correlation": Bound(-1, 1, False, False, "", "a rank correlation (Kendall's tau)"),
    "error_pct": Bound(0, 1e6, False, False, "%", "a relative error in percent (MAPE, largest APE)"),
    "spread": Bound(0, 1000, False, False, "", "a relative spread (coefficient of variation); 0: none"),
    "confidence": Bound(0.5, 0.9999, False, False, "", "a confidence level; 1 would take endless runs"),
    "hypervolume": Bound(0, 1e13, False, False, "", "an area of metric points x milliseconds"),
}


def _is_number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int)
    return isinstance(value, (int, float))


def describe(kind: str, high: Optional[Number] = None, why: bool = False) -> str:
    """What `kind` must be, as an error says it: 'an integer in 1..1024', 'a number in (0, 3600000] ms'."""
    b = BOUNDS[kind]
    top = b.high if high is None else min(b.high, high)
    if b.integer:
        text = f"an integer in {b.low}..{top}"
    else:
        text = f"a number in {'(' if b.low_open else '['}{b.low:g}, {top:g}]"
    text += f" {b.unit}" if b.unit else ""
    return text + (f" ({b.why})" if why else "")


def violation(kind: str, value: Any, high: Optional[Number] = None) -> Optional[str]:
    """None when `value` is a number of `kind` within its bounds (and <= `high` when given);
    otherwise what it must be (`describe`). A bool is not a number; NaN and infinities never pass."""
    b = BOUNDS[kind]
    if not _is_number(value, b.integer):
        return describe(kind, high)
    if not b.integer and not math.isfinite(value):
        return describe(kind, high)
    top = b.high if high is None else min(b.high, high)
    if value < b.low or value > top or (b.low_open and value == b.low):
        return describe(kind, high)
    return None


def check(kind: str, value: Any, name: str, error: type, high: Optional[Number] = None, hint: str = "") -> Any:
    """`value` when it is within `kind`'s bounds; else error("NAME must be RULE; got VALUE[; HINT]")."""
    rule = violation(kind, value, high)
    if rule is not None:
        raise error(f"{name} must be {rule}; got {value!r}" + (f"; {hint}" if hint else ""))
    return value


def parse(kind: str, text: str, high: Optional[Number] = None) -> Number:
    """The number `text` says, within `kind`'s bounds; ValueError whose message is the one line to print
    ('must be an integer in 1..1024; got '0''). '5.0' is not an integer here: a user typed it."""
    b = BOUNDS[kind]
    s = str(text).strip()
    try:
        value: Number = int(s) if b.integer else float(s)
    except ValueError:
        raise ValueError(f"must be {describe(kind, high)}; got {text!r}") from None
    if violation(kind, value, high) is not None:
        raise ValueError(f"must be {describe(kind, high)}; got {text}")
    return value


def arg_type(kind: str) -> Callable[[str], Number]:
    """argparse type: one number of `kind` within its range; its error is the one line argparse prints
    after the option's name. `bound_kind` names the kind (tests/test_bounds_options.py checks every
    numeric option of the CLI has one)."""

    def from_text(text: str) -> Number:
        try:
            return parse(kind, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    from_text.__name__ = kind
    from_text.bound_kind = kind  # type: ignore[attr-defined]
    return from_text


def glue_negative_values(words: Sequence[str]) -> List[str]:
    """['--slo', '-5ms'] -> ['--slo=-5ms']: argparse reads a word starting with '-' as an option unless it is a
    plain negative number, so '--slo -5ms' got "expected one argument" instead of the option's own check.
    No option of ours starts with a digit, so '-' and a digit after an option word is always its value."""
    out: List[str] = []
    for w in words:
        if (
            out
            and out[-1].startswith("--")
            and "=" not in out[-1]
            and len(w) > 1
            and w[0] == "-"
            and w[1] in "0123456789."
        ):
            out[-1] = f"{out[-1]}={w}"
        else:
            out.append(w)
    return out


def outside(kind: str, high: Optional[Number] = None) -> list:
    """Values just outside `kind`'s range and of the wrong type: what the property tests draw from."""
    b = BOUNDS[kind]
    top = b.high if high is None else min(b.high, high)
    values: list = [b.low - 1 if b.integer else (b.low if b.low_open else b.low - 1e-9 - abs(b.low) * 1e-9)]
    values.append(top + 1 if b.integer else top * 1.0001 + 1e-9)
    values += [10**12, -(10**12), True, "two"]
    if b.integer:
        values.append(float(b.low) + 0.5)
    else:
        values += [float("nan"), float("inf"), -float("inf")]
    return [v for v in values if violation(kind, v, high) is not None]  # 10**12 is inside a FLOP count's range


def markdown_table() -> str:
    """The table as docs/errors.md shows it (tests/test_bounds_options.py checks the docs hold it)."""
    lines = ["| kind | allowed | why |", "|---|---|---|"]
    for kind in BOUNDS:
        lines.append(f"| `{kind}` | {describe(kind)} | {BOUNDS[kind].why} |")
    return "\n".join(lines) + "\n"
