"""The driver: measures configs chunk by chunk with an ANCHOR config timed in every round of every
chunk, and applies the per-round speed correction of `speed.py` over the whole run: per config
the raw median and the corrected one, the run's speed index (the anchor's corrected median against
its reference, the first run's) and speed spread; every timed run goes to `on_raw` (the
raw-timings file). Part of the device runtime (numpy only; see `dynasearch_runtime`).
"""

from __future__ import annotations

import gc
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .protocol import (
    STATS_COLUMNS,
    Protocol,
    _error_text,
    _interleave,
    _result,
    _Rounds,
    _State,
    _used,
    check_clock,
)
from .schema import CLOCK_COLUMNS, RECORD_COLUMNS, SCHEMA
from .speed import corrected_median, round_factors, speed_spread


# ----------------------------------------------------------------------------------- driver
@dataclass
class Item:
    """One config to measure: its static record columns and how to prepare its run-once callable."""

    key: str
    row: dict  # every record column except the measured ones
    prepare: Callable[[], Callable[[], Any]]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def measure_items(
    items: Sequence[Item],
    protocol: Protocol,
    on_rows: Callable[[list[dict]], None],
    progress: Callable[[int], None] | None = None,
    *,
    anchor: Item | None = None,
    reference_ms: float | None = None,
    on_raw: Callable[[list[tuple[str, int, int, float, bool]]], None] | None = None,
    on_round: Callable[[int], None] | None = None,
) -> list[dict]:
    """Prepare and time items chunk by chunk (`protocol.chunk_size` alive at once), calling
    `on_rows(rows)` after each chunk so a killed run keeps what it finished. A config whose
    preparation or run raises (crash, out of memory) becomes a row with status 'failed'.

    anchor: a config timed in every round of every chunk (its row is written only if it is also
    among `items`); it ties the chunks' rounds together and gives the run's speed index against
    `reference_ms` (None: this run is the reference, speed index 1). After the last chunk, when
    there were several, `on_rows` gets every row again with the final speed fit (rows of one run
    replace their earlier versions). on_raw gets every timed run so far after each chunk:
    (key, round, run index, ms, disturbed). on_round(round) is called as each round begins.

    With the cpu clock (`Protocol.clock`), every item's settings (its row's threads, spinning and
    device, where given) must allow it (`check_clock`): MeasurementError before anything is timed."""
    for it in list(items) + ([anchor] if anchor is not None else []):
        row = it.row
        check_clock(protocol.clock, row.get("threads"), bool(row.get("spinning")), row.get("device") or "cpu")
    rng = random.Random(protocol.seed)
    order = [it for it in items if anchor is None or it.key != anchor.key]
    rng.shuffle(order)
    anchor_row_item = next((it for it in items if anchor is not None and it.key == anchor.key), None)
    rounds = _Rounds(on_round)
    a_state: _State | None = None
    a_prep = 0.0
    if anchor is not None:
        t0 = time.perf_counter()
        try:
            a_state = _State(anchor.key, anchor.prepare(), [])
        except Exception as e:  # no anchor then: the run still measures, without a speed index
            a_state = _State(anchor.key, lambda: None, [], error=_error_text(e), done=True)
        a_prep = time.perf_counter() - t0
    if not items:
        return []
    states: dict[str, _State] = {}
    chunks: list[list[str]] = []
    rows_by_key: dict[str, dict] = {}
    prep_s: dict[str, float] = {}
    starts = list(range(0, len(order), protocol.chunk_size)) or [0]
    for n_chunk, start in enumerate(starts):
        chunk = order[start : start + protocol.chunk_size]
        chunk_states: list[_State] = []
        failed: dict[str, dict] = {}
        for it in chunk:
            t0 = time.perf_counter()
            try:
                chunk_states.append(_State(it.key, it.prepare(), []))
            except Exception as e:  # MemoryError included: record it, keep going
                failed[it.key] = {"error": _error_text(e)}
            prep_s[it.key] = time.perf_counter() - t0
        if chunk_states:
            _interleave(chunk_states, protocol, rng, a_state, rounds)
        elif not order and a_state is not None and not a_state.error:
            _anchor_only(a_state, protocol, rng, rounds)  # the anchor is the only config asked for
        for st in chunk_states:
            st.run = None  # type: ignore[assignment]  # release the model
            states[st.key] = st
        gc.collect()
        chunks.append([it.key for it in chunk])
        chunk_items = list(chunk) + ([anchor_row_item] if anchor_row_item is not None and n_chunk == 0 else [])
        if anchor_row_item is not None:
            prep_s[anchor_row_item.key] = a_prep
        speed = _speed_fit(states, chunks, a_state, reference_ms)
        for it in chunk_items:
            st = a_state if it is anchor_row_item else states.get(it.key)
            result = failed.get(it.key) or _result(st, protocol)
            rows_by_key[it.key] = _row(it, result, prep_s[it.key], protocol)
        _apply_speed(rows_by_key, states, a_state, speed)
        on_rows([rows_by_key[it.key] for it in chunk_items])
        if on_raw is not None:
            on_raw(_raw_list(states, a_state))
        if progress is not None:
            progress(len(chunk_items))
    if len(starts) > 1:  # the fit now has every round: update the earlier chunks' rows
        if anchor_row_item is not None:
            rows_by_key[anchor_row_item.key] = _row(anchor_row_item, _result(a_state, protocol), a_prep, protocol)
        _apply_speed(rows_by_key, states, a_state, _speed_fit(states, chunks, a_state, reference_ms))
        on_rows(list(rows_by_key.values()))
    return list(rows_by_key.values())


def _anchor_only(a_state: _State, protocol: Protocol, rng: random.Random, rounds: _Rounds) -> None:
    """Only the anchor is left to measure: time it like a config (it stops by the usual rules)."""
    a_state.done = False
    _interleave([a_state], protocol, rng, None, rounds)


def _raw_list(states: Mapping[str, _State], a_state: _State | None) -> list[tuple[str, int, int, float, bool]]:
    out = []
    for st in list(states.values()) + ([a_state] if a_state is not None else []):
        out += [(st.key, r, i, ms, d) for i, (r, ms, d) in enumerate(st.log)]
    return out


def _speed_fit(
    states: Mapping[str, _State], chunks: Sequence[Sequence[str]], a_state: _State | None, reference_ms: float | None
) -> dict[str, Any]:
    """Round factors of the run so far (one fit tied together by the anchor; without one, one fit
    per chunk: they share no rounds), the anchor's corrected median and the speed index."""
    timings = {k: _used(st) for k, st in states.items()}
    # An anchor that kept its preempted runs (every one was preempted: a machine too busy) times the
    # machine's load, not its speed: dividing by it would make every config look faster. No speed index then.
    has_anchor = a_state is not None and not a_state.error and bool(a_state.log) and not a_state.kept_disturbed
    if has_anchor:
        timings[a_state.key] = _used(a_state)
        groups = [list(timings)]
    else:
        groups = [[k for k in c if k in timings] for c in chunks]
    factors = round_factors(timings, groups)
    anchor_ms = corrected_median(timings[a_state.key], factors) if has_anchor else math.nan
    ref = reference_ms if reference_ms else anchor_ms
    return {
        "factors": factors,
        "timings": timings,
        "anchor_ms": anchor_ms,
        "speed_index": anchor_ms / ref if has_anchor else math.nan,
        "spread": speed_spread(factors.values()),
        "anchor_key": a_state.key if has_anchor else "",
    }


def _apply_speed(
    rows: Mapping[str, dict], states: Mapping[str, _State], a_state: _State | None, speed: Mapping[str, Any]
) -> None:
    for key, row in rows.items():
        row.update(
            speed_index=speed["speed_index"],
            speed_spread=speed["spread"],
            anchor_key=speed["anchor_key"],
            anchor_ms=speed["anchor_ms"],
        )
        t = speed["timings"].get(key)
        if row["status"] != "ok" or not t:
            row["corrected_median_ms"] = ""
            continue
        corrected = corrected_median(t, speed["factors"])
        si = speed["speed_index"]
        row["corrected_median_ms"] = corrected / si if math.isfinite(si) and si > 0 else corrected


def _row(item: Item, result: Mapping[str, Any], prepare_s: float, protocol: Protocol) -> dict:
    row = {c: "" for c in RECORD_COLUMNS}
    row.update(item.row)
    row.update(schema=SCHEMA, timestamp=utc_now(), prepare_s=round(prepare_s, 4), protocol=protocol.to_json())
    row["measure_s"] = round(float(result.get("measure_s", 0.0)), 4)
    row["warmup_runs"] = int(result.get("warmup_runs", 0))
    row["disturbed_runs"] = int(result.get("disturbed_runs", 0))
    for c in CLOCK_COLUMNS:  # the cpu clock's busy rounds and wall median; empty with the wall clock
        row[c] = result.get(c, "")
    if "error" in result:
        row.update(status="failed", error=result["error"], converged=False, n_runs=0)
        for c in STATS_COLUMNS:
            if c not in ("n_runs", "converged"):
                row[c] = ""
    else:
        row.update(status="ok", error="")
        for c in STATS_COLUMNS:
            row[c] = result[c]
    return row
