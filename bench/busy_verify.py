"""Verification on a busy machine (issue 18, item 3): the same configs verified on a quiet machine
and with 2 and 4 busy processes beside it, with a plain wall-clock view (preempted runs kept), the
wall-clock protocol (preempted runs discarded) and verification's own protocol on a one-thread
setting (both clocks; the wall median of the undisturbed runs is judged, search.verify).
Conditions alternate (quiet, busy, ... in each repeat)
so that drift hits them alike; each condition measures into its own results folder through the
search's `measure_configs`/`read_measured` (what `search --target-latency` judges).

Run alone (nothing else busy on the machine; the script starts its own busy processes):
    .venv/bin/python bench/busy_verify.py --run runs/bench-perlayer/sst2/grid+4 --work runs/bench-busy
Writes bench/results/busy-verify.md (and WORK/busy.json).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from perlayer import _log, machine  # noqa: E402

from dynabert.io import write_json  # noqa: E402

BUSY = [sys.executable, "-c", "while True: pass"]  # one busy process: a core's worth of pure CPU work
GRID = ((1.0, 1.0), (0.5, 1.0), (0.25, 1.0), (0.5, 0.5))  # (width, depth) points spanning the latency range


def _grid_configs(shape):
    from dynabert.subnet import SubnetConfig

    return [SubnetConfig.from_grid(shape, w, d) for w, d in GRID]


def _condition(model, shape, subnets, settings, out: Path, protocol: str, busy: int, reference_ms) -> dict:
    """Verify `subnets` into `out` with `busy` busy processes running; protocol 'wall' (the wall-clock
    protocol), 'naive' (the same, preempted runs kept) or 'verify' (verification's own: both clocks at one
    thread). reference_ms: the anchor's
    reference median (as a predictor's records give it to the search), None on the first run."""
    from predictors import Protocol, read_records, verify_latency
    from search.verify import busy_note, measure_configs, read_measured

    procs = [subprocess.Popen(BUSY) for _ in range(busy)]
    try:
        if protocol == "verify":
            measure_configs(model, shape, subnets, settings, out, "p50", progress=False, reference_ms=reference_ms)
        else:  # wall: the wall-clock protocol; naive: the same keeping preempted runs (a plain timing loop's view)
            verify_latency(
                shape,
                subnets,
                settings,
                out / "measured.csv",
                Protocol(discard_disturbed=protocol == "wall"),
                model=model,
                reference_ms=reference_ms,
                progress=False,
            )
    finally:
        for p in procs:
            p.kill()
            p.wait()
    got = read_measured(out, "p50")
    keys = [s.key for s in subnets]
    anchor = read_records(out / "measured.csv")["anchor_ms"].dropna()
    return {
        "protocol": protocol,
        "busy": busy,
        "note": busy_note(got, keys),
        "anchor_ms": float(anchor.iloc[-1]) if len(anchor) else None,
        "rows": {k: _measured_row(got.get(k)) for k in keys},
    }


def _measured_row(m) -> dict:
    """What one condition measured of a config; a config the protocol could not time (every run
    preempted: the wall protocol's 'no timed runs') has no latency."""
    if m is None:
        return {"judged_ms": None, "raw_ms": None, "speed_index": None, "busy_share": None, "undisturbed": 0, "runs": 0}
    return {
        "judged_ms": m.judged(raw=False),
        "raw_ms": m.raw_ms,
        "speed_index": m.speed_index,
        "busy_share": m.busy_share,
        "undisturbed": m.undisturbed_runs,
        "runs": m.runs,
        "throughout": m.busy_throughout,
    }


def reread(work: Path, doc: dict) -> dict:
    """The conditions' rows and notes read again from their results folders (what the search's code
    says of them now), for --report-only."""
    from search.verify import busy_note, read_measured

    keys = list(doc["grid"])
    for c in doc["conditions"]:
        got = read_measured(work / f"r{c['repeat']}-{c['protocol']}-busy{c['busy']}", "p50")
        c["rows"] = {k: _measured_row(got.get(k)) for k in keys}
        c["note"] = busy_note(got, keys)
    return doc


def run(run_dir: Path, work: Path, repeats: int, seq: int, levels: list[int]) -> dict:
    from dynabert.backbone import load_model
    from dynabert.extract import model_shape
    from dynabert.runs import run_model_dir
    from predictors import BackendSettings

    model = load_model(run_model_dir(run_dir)).eval()
    shape = model_shape(model)
    subnets = _grid_configs(shape)
    settings = BackendSettings(backend="onnxruntime", threads=1, batch=1, seq_len=seq)
    conditions = []
    reference = None  # the first quiet run's anchor median: the "predictor's records" every later run is judged against
    for rep in range(repeats):
        for busy in (0, *levels):
            for protocol in ("naive", "wall", "verify"):
                out = work / f"r{rep}-{protocol}-busy{busy}"
                _log(f"repeat {rep}: {protocol} protocol, {busy} busy process(es)")
                c = _condition(model, shape, subnets, settings, out, protocol, busy, reference)
                c["repeat"] = rep
                conditions.append(c)
                reference = reference or c["anchor_ms"]
    doc = {
        "machine": machine(),
        "setting": {"backend": "onnxruntime", "threads": 1, "batch": 1, "seq_len": seq},
        "grid": {s.key: f"{w:g}x{d:g}" for s, (w, d) in zip(subnets, GRID)},
        "conditions": conditions,
    }
    write_json(work / "busy.json", doc)
    return doc


PROTOCOL_NAMES = {
    "naive": "wall clock, preempted runs kept",
    "wall": "wall protocol (preempted runs discarded)",
    "verify": "verification (both clocks, undisturbed runs' wall)",
}


def report(doc: dict, out: Path) -> None:
    from dynabert.tables import markdown_table

    m, st = doc["machine"], doc["setting"]
    cond = doc["conditions"]
    protocols = [p for p in PROTOCOL_NAMES if any(c["protocol"] == p for c in cond)]
    levels = sorted({c["busy"] for c in cond})

    def med(protocol, busy, key, field="judged_ms"):
        vals = [c["rows"][key][field] for c in cond if c["protocol"] == protocol and c["busy"] == busy]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else math.nan

    def failed(protocol, busy, key):
        return sum(c["rows"][key]["judged_ms"] is None for c in cond if c["protocol"] == protocol and c["busy"] == busy)

    repeats = len({c["repeat"] for c in cond})
    rows = []
    ratios: dict[tuple[str, int], list[float]] = {}
    for key, name in doc["grid"].items():
        quiet = med("wall", 0, key)
        for busy in levels:
            cells = []
            for protocol in protocols:
                j, r, f = med(protocol, busy, key), med(protocol, busy, key, "raw_ms"), failed(protocol, busy, key)
                ratios.setdefault((protocol, busy), []).append(j / quiet)
                cell = f"{j:.3f} ({j / quiet:.2f}x); raw {r:.3f}" if j == j else "-"
                cells.append(cell + (f"; FAILED in {f} of {repeats} (no undisturbed run)" if f else ""))
            und = [
                f"{c['rows'][key]['undisturbed']}/{c['rows'][key]['runs']}"
                for c in cond
                if c["protocol"] == "verify" and c["busy"] == busy
            ]
            rows.append(
                [
                    name,
                    str(busy),
                    *cells,
                    f"{med('verify', busy, key, 'speed_index'):.2f}",
                    f"{med('verify', busy, key, 'busy_share'):.0%}",
                    ", ".join(und),
                ]
            )
    summary = [
        f"- {busy} busy: "
        + ", ".join(
            f"{PROTOCOL_NAMES[p]} {statistics.median([x for x in ratios[(p, busy)] if x == x] or [math.nan]):.2f}x"
            + (
                f" (failed: {sum(failed(p, busy, k) for k in doc['grid'])} config runs)"
                if any(failed(p, busy, k) for k in doc["grid"])
                else ""
            )
            for p in protocols
        )
        for busy in levels
        if busy
    ]
    notes = [
        f"> ({c['busy']} busy, repeat {c['repeat']}) {c['note']}"
        for c in cond
        if c["note"] and c["busy"] and c["protocol"] == "verify"
    ]
    quiet_notes = [c["note"] for c in cond if c["note"] and c["busy"] == 0]
    lines = [
        "# Verification on a busy machine",
        "",
        f"Machine: {m.get('cpu')} ({m.get('cores', '?')} cores), Python {m.get('python')}, torch {m.get('torch')}; "
        f"commit {m.get('commit')}, {m.get('date')}. Script: `bench/busy_verify.py`.",
        "",
        f"Setting: onnxruntime, {st['threads']} thread, batch {st['batch']}, length {st['seq_len']}; four grid points "
        "of the trained SST-2 model. Each condition verified the four configs (with the full model as anchor, timed "
        "in every round) into its own results folder through the search's own code (`search.verify.measure_configs` / "
        "`predictors.verify_latency` + `search.verify.read_measured`), judged against the first quiet run's anchor as "
        "the search judges against its predictor's records: the judged latency is speed-corrected by the anchor (raw "
        f"beside it). {repeats} repeats, conditions alternating within each; medians over the repeats. Busy: N "
        "`python -c 'while True: pass'` processes beside the measurement on this 2-core machine.",
        "",
        *[f"- *{PROTOCOL_NAMES[p]}*" for p in protocols],
        "",
        "The x factors are against the quiet wall protocol's judged latency of the same config.",
        "",
        markdown_table(
            [
                "grid",
                "busy processes",
                *[f"{PROTOCOL_NAMES[p]} ms" for p in protocols],
                "speed index (verification)",
                "busy rounds",
                "undisturbed/timed runs (verification)",
            ],
            rows,
        ),
        "",
        "Judged latency busy against quiet, median over the four configs:",
        "",
        *summary,
        "",
        "What the search said (its note; quiet runs gave "
        + (f"{len(quiet_notes)} notes" if quiet_notes else "none, as they should")
        + "):",
        "",
        *notes,
        "",
    ]
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--busy", type=int, nargs="+", default=[2, 4], help="busy processes of the busy conditions")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.report_only:
        doc = reread(a.work, json.loads((a.work / "busy.json").read_text()))
    else:
        doc = run(a.run, a.work, a.repeats, a.seq, a.busy)
    out = REPO / "bench" / "results" / "busy-verify.md"
    report(doc, out)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
