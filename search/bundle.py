"""A deployment bundle: ONE folder serving every device of a search
(`dynasearch export --results RESULTS --bundle --out BUNDLE`).

Per device entry of RESULTS/devices.json (a single-device RESULTS: the one device of its search.json,
named BACKEND-DEVICE, e.g. onnxruntime-cpu) the bundle holds that device's answer in that device's
format: ONNX (model.onnx, or model.int8.onnx for an int8 entry) for onnxruntime devices, the Hugging
Face directory for torch devices. Each distinct (config, precision) is exported once with
`export_from_results` into BUNDLE/models/<key>-<precision>/ (with the formats its devices need), and
every device that picked it points at it. Layout and the loader: see `dynasearch_runtime.bundle`
(copied into the bundle as dynasearch_runtime/, with dynasearch_bundle.py beside it).

What the model folders lose against a plain export: the tokenizer files (once at BUNDLE/ instead)
and, in an int8 folder, the fp32 model.onnx it was quantised from; each folder's manifest.json is
the export's as written (its `files` digests still list them); BUNDLE/devices.json `models` says
what was removed, and its `files` holds the sha256 of every file the bundle does hold.

Every entry of THIS machine (its fingerprint is the one this machine has under the entry's setting,
and its backend imports here) is also timed before the bundle appears, through the bundle's own loader
(`BundleModel.time_ms`, the loop `python BUNDLE/dynasearch_bundle.py BUNDLE --check` runs, same warm-up and
runs, CHECK_REPEATS times with a fresh model each): `check_ms` (the median of the repeats' medians),
`check_repeats_ms`, `check_runs`, `check_when`. --check compares with it first: the
search's verification times models interleaved and cold (several models alternating in rounds, an
anchor every round), a lone warm loop runs 2-20% faster, so the verified latency (`measured_ms`,
`measured_raw_ms`, kept as they are) is no yardstick for --check. Other machines' entries get
check_ms null; `check_time` says what was timed (or that --no-check-time skipped it).

The front (devices.json version 2; `--front K`, default FRONT_CONFIGS, 0: the answers alone): each entry also
carries `front`, up to K configs of its device's Pareto front (RESULTS' front.csv) spread over the front's
predicted-latency range (`spread_front`: the device's answer, the fastest and the most accurate first, the rest
chosen evenly in latency between them), each exported once per (config, precision) like the answers, with its
metric on the report examples (front.csv's metric_full) and its predicted and measured latency where known.
The index's `report` says on which dev examples those metrics were scored (search.json's report_dev: the task,
its data source, the seeds and counts that cut the dev split and a sha256 of the report examples' indices), or
that the search held nothing out (then they are the whole dev split the configs were ranked on).

Bad input (one line, nothing written): a RESULTS whose devices have no answer at all. A device
without an answer is left out with a warning and listed under `skipped`.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import math
import re
import shutil
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

from dynabert.backbone import TOKENIZER_FILES
from dynabert.errors import ExportError
from dynabert.io import atomic_dir, check_output_dir, file_sha256, write_json, write_text
from dynasearch_runtime import bounds
from dynasearch_runtime.bundle import (
    BUNDLE_VERSION,
    CHECK_RUNS,
    CHECK_WARMUP,
    BundleModel,
    describe_entry,
    describe_machine,
    fingerprint_here,
    this_machine,
)
from predictors.kit import copy_runtime
from predictors.measure import shape_key

from .deploy import export_from_results
from .devices import read_devices
from .errors import ResultsError, SearchError
from .results import read_results

BACKEND_FORMATS = {"onnxruntime": "onnx", "torch": "hf"}
LOADER = "dynasearch_bundle.py"
RUNTIME_DIR = "dynasearch_runtime"
FRONT_CONFIGS = 6  # export --bundle --front: front configs per device (0: the answer alone)
CHECK_REPEATS = 3  # export: --check's loop this many times per entry (a fresh model each); check_ms is their median

# BUNDLE/dynasearch_bundle.py: puts the bundle folder on the import path and re-exports the loader,
# dynasearch_runtime/bundle.py, which the bundle holds as dynasearch_runtime/bundle.py.
SHIM = '''"""dynasearch deployment bundle loader (dynasearch_runtime/ is a copy of dynasearch's device runtime,
dynasearch_runtime; its bundle module is this loader). Needs Python 3.8+, numpy, onnxruntime and tokenizers.

    import sys; sys.path.insert(0, "BUNDLE")      # this folder on the import path (or run from inside it)
    import dynasearch_bundle
    model = dynasearch_bundle.load("BUNDLE")      # device=NAME, threads=N, batch=N choose another entry
    model.predict(["some text"])                  # [(label, scores)]
    dynasearch_bundle.front(dynasearch_bundle.read_index("BUNDLE"), "NAME")   # the device's front configs
    dynasearch_bundle.load_front("BUNDLE", "NAME", KEY)                       # the model of one of them

    python BUNDLE/dynasearch_bundle.py BUNDLE --check [--device NAME]   # time it here against the recorded
                                                                        # latency (from any directory)
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from dynasearch_runtime.bundle import (  # noqa: E402
    BundleError,
    BundleModel,
    choose,
    front,
    load,
    load_front,
    no_front,
    read_index,
    verify_files,
)
from dynasearch_runtime.bundle_cli import check, main  # noqa: E402

__all__ = [
    "BundleError",
    "BundleModel",
    "check",
    "choose",
    "front",
    "load",
    "load_front",
    "main",
    "no_front",
    "read_index",
    "verify_files",
]

if __name__ == "__main__":
    sys.exit(main())
'''

README = """dynasearch deployment bundle: {n} device entr{ies} over {m} model folder(s).

BUNDLE below is this folder's path; the commands work from any directory.

    pip install numpy onnxruntime tokenizers        # torch entries also need torch and transformers
    python BUNDLE/dynasearch_bundle.py BUNDLE --check            # the entry for this machine,
                                                                 # timed here against its recorded latency
    python BUNDLE/dynasearch_bundle.py BUNDLE --text "some text"

    import sys; sys.path.insert(0, "BUNDLE")        # in Python: this folder on the import path
    import dynasearch_bundle
    model = dynasearch_bundle.load("BUNDLE", device=None, threads=None, batch=None)
    model.predict(["some text"])                    # [(label, scores)]

devices.json lists every entry (device, precision, backend, threads, batch, length, fingerprint, model
file, sub-network key, metric, predicted and measured latency, and check_ms: the latency --check's own
loop gave at export, for the exporting machine's entries), each device's front (front: configs spread over
its latency range, each with its metric on the report examples; `python BUNDLE/dynasearch_bundle.py BUNDLE
--front` lists them), which dev examples those metrics were scored on (report) and the sha256 of every file.
"""


def _mtime(path: Path) -> str:
    return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")


def device_entries(results: str | Path) -> list[dict[str, Any]]:
    """Every device of RESULTS (devices.json, else the single device of search.json), each with its
    results folder (`dir`), its checked search.json (`meta`), its setting and its answer (or None)."""

    root = Path(results)
    doc = read_devices(root)
    if doc is None:
        meta = read_results(root).meta
        fp = meta.get("fingerprint") or {}
        name = f"{fp.get('backend') or 'device'}-{fp.get('device') or 'cpu'}"
        raw = [
            {
                "name": name,
                "precision": meta["study"].get("precision", "fp32"),
                "results": None,
                "setting": fp,
                "target_ms": meta["study"].get("target_ms"),
                "answer": meta.get("answer"),
                "message": meta.get("message", ""),
            }
        ]
    else:
        raw = doc["devices"]
    out = []
    for d in raw:
        folder = root if d["results"] is None else root / d["results"]
        res = read_results(folder)
        meta = res.meta
        setting = d.get("setting") or meta.get("fingerprint")
        label = f"device {d['name']} ({folder / 'search.json'})"
        if not isinstance(setting, dict) or setting.get("backend") not in BACKEND_FORMATS:
            raise ResultsError(f"{label} records no latency setting with a backend (onnxruntime or torch)")
        missing = [k for k in ("fingerprint", "threads", "batch", "seq_len") if setting.get(k) in (None, "")]
        if missing:
            raise ResultsError(f"{label}: its latency setting lacks {', '.join(missing)}")
        precision = d.get("precision") or meta["study"].get("precision", "fp32")
        if precision == "int8" and setting["backend"] != "onnxruntime":
            raise ResultsError(f"{label} is an int8 entry for {setting['backend']}; int8 runs with onnxruntime only")
        out.append(
            dict(
                d,
                precision=precision,
                dir=folder,
                meta=meta,
                shape=res.space.shape,
                setting=setting,
                results_name=d["results"] or ".",
                devices_index=doc,
                front=res.front,
            )
        )
    return out


def _number(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else float(v)


def front_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The device's front (its results' front.csv) as config rows, fastest first (the answer among them even
    if its results' front does not list it): key, subnet, grid, metric_value (metric_full, else metric_search),
    metric_full, metric_search, predicted_ms, measured_ms, measured_raw_ms."""
    rows: list[dict[str, Any]] = []
    for r in d["front"].to_dict("records"):
        subnet = json.loads(r["subnet"]) if isinstance(r["subnet"], str) else r["subnet"]
        rows.append({"key": r["key"], "subnet": subnet, "grid": r.get("grid") or "", **_scores(r)})
    a = d.get("answer")
    if a and a["key"] not in {r["key"] for r in rows}:
        rows.append({"key": a["key"], "subnet": a.get("subnet"), "grid": a.get("grid") or "", **_scores(a)})
    return sorted(rows, key=lambda r: (r["predicted_ms"], -(r["metric_value"] or 0.0), r["key"]))


def _scores(r: dict[str, Any]) -> dict[str, Any]:
    full, search = _number(r.get("metric_full")), _number(r.get("metric_search"))
    out = {"metric_value": full if full is not None else search, "metric_full": full, "metric_search": search}
    return out | {k: _number(r.get(k)) for k in ("predicted_ms", "measured_ms", "measured_raw_ms")}


def spread_front(rows: list[dict[str, Any]], k: int, answer: str | None = None) -> list[dict[str, Any]]:
    """Up to k of `rows` (a front, fastest first) spread over its predicted-latency range, fastest first: the
    answer (key `answer`), the fastest and the most accurate first (in that order while k lasts), then again
    and again the config nearest to the one of k evenly spaced latencies (from the fastest's to the slowest's)
    that lies farthest from every config chosen so far. Deterministic; all of them when there are k or fewer."""
    if k <= 0:
        return []
    if len(rows) <= k:
        return list(rows)
    lat = [float(r["predicted_ms"]) for r in rows]
    best = max(range(len(rows)), key=lambda i: ((rows[i]["metric_value"] or 0.0), -lat[i]))
    first = [i for i, r in enumerate(rows) if r["key"] == answer] + [0, best]
    chosen: list[int] = []
    for i in first:
        if i not in chosen and len(chosen) < k:
            chosen.append(i)
    lo, hi = lat[0], lat[-1]
    targets = [lo + (hi - lo) * j / (k - 1) for j in range(k)] if k > 1 else [lo]
    while len(chosen) < k:
        t = max(targets, key=lambda t: min(abs(lat[i] - t) for i in chosen))
        chosen.append(min((i for i in range(len(rows)) if i not in chosen), key=lambda i: (abs(lat[i] - t), i)))
    return [rows[i] for i in sorted(chosen)]


_SUBSET = re.compile(r"subset-(\d+)-seed(\d+)$")


def bundle_report(meta: dict[str, Any]) -> dict[str, Any]:
    """devices.json's `report` for a device's search.json: its report_dev (the task, data source, seeds, counts
    and the sha256 of the report examples' indices) with a note; for a search that predates report_dev, what its
    selections and summary say (data source and sha256 null, recorded false)."""
    rd = meta.get("report_dev")
    if isinstance(rd, dict):
        report = dict(rd, recorded=True)
    else:
        summary = meta.get("summary") or {}
        rank = _SUBSET.fullmatch(str(meta["study"].get("search_dev") or ""))
        rescore = _SUBSET.search(str(meta.get("rescore_dev") or ""))
        held_out = bool(summary.get("report_held_out", rank is not None))
        report = {
            "task": meta["study"]["task"],
            "data_dir": None,
            "dev_file": None,
            "source": None,
            "dev_examples": None,
            "held_out": held_out,
            "search_dev": int(rank.group(1)) if rank else None,
            "search_dev_seed": int(rank.group(2)) if rank else None,
            "rescore_dev": int(rescore.group(1)) if rescore else None,
            "rescore_seed": int(rescore.group(2)) if rescore else None,
            "selection": meta.get("rescore_dev") or "all",
            "examples": summary.get("report_examples"),
            "sha256": None,
            "recorded": False,
        }
    if not report["recorded"]:
        note = (
            "the search predates report_dev: its data source and the report examples' sha256 are not recorded "
            "(search again with this dynasearch to record them)"
        )
    elif report["held_out"]:
        note = (
            "the front's metrics were scored on these report examples, which the ranking never saw: "
            "dynabert.evaluate.report_indices(dev_examples, search_dev, search_dev_seed, rescore_dev, rescore_seed) "
            "gives their indices in the dev split"
        )
    else:
        note = (
            "nothing was held out (the search ran without --search-dev): the report examples are the whole dev split "
            "the configs were ranked on, so the front's metrics are not held-out estimates"
        )
    report["note"] = note
    report["sha256_of"] = (
        "the report examples' ascending indices in the dev split, as decimal numbers joined by commas "
        "(dynabert.evaluate.index_sha256)"
    )
    return report


def _model_labels(model_dir: Path) -> dict[str, str] | None:
    try:
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    labels = cfg.get("id2label")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) and labels else None


def _text_inputs(task: str) -> int | None:
    """Texts per example of a named task (2 for a sentence-pair task, what a server asks for); None for a
    task the search did not name (a user's csv task: its pair column is not in the results)."""
    from dynabert.errors import DataError
    from dynabert.tasks import get_task  # the task table (plain Python)

    try:
        return 2 if get_task(task).pair_col is not None else 1
    except DataError:
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _runs_here(entry: dict[str, Any], machine: dict[str, Any], key: str) -> bool:
    """The entry was measured on this machine (same fingerprint under its setting) and its backend imports here."""
    if fingerprint_here(entry, machine, key)["fingerprint"] != entry["fingerprint"]:
        return False
    module = {"onnxruntime": "onnxruntime", "torch": "torch"}.get(entry["backend"])
    return module is not None and importlib.util.find_spec(module) is not None


def _time_entry(bundle: Path, index: dict[str, Any], entry: dict[str, Any], runs: int, warmup: int) -> float:
    """The median ms of the loader's own loop (`BundleModel.time_ms`) for `entry` of the bundle at `bundle`,
    loaded afresh (as a --check process loads it)."""
    torch = transformers = None
    if entry["backend"] == "torch":  # BundleModel sets torch's (process-wide) threads: give them back after
        import torch
        import transformers

        threads, bars = torch.get_num_threads(), transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # no 'Loading weights' bar per timing
    try:
        model = BundleModel(str(bundle), index, entry)
        ms = model.time_ms(runs, warmup)
        del model
    finally:
        if torch is not None:
            torch.set_num_threads(threads)
            if bars:
                transformers.utils.logging.enable_progress_bar()
    return ms


def time_entries(
    bundle: str | Path,
    index: dict[str, Any],
    runs: int = CHECK_RUNS,
    warmup: int = CHECK_WARMUP,
    repeats: int = CHECK_REPEATS,
    progress: bool = True,
) -> dict[str, Any]:
    """Time every entry of `index` (the bundle at `bundle`'s devices.json, in memory) that this machine
    runs with --check's loop (`runs` timed runs after `warmup`, the model loaded afresh each time),
    `repeats` times in rounds over the entries; sets each entry's check_ms (the median of the repeats'
    medians: the middle of what --check gives, not one draw of it), check_repeats_ms, check_runs and
    check_when (null for the others) and returns the `check_time` summary. Entries of one model file
    and one setting share one timing; onnxruntime entries are timed before torch ones."""
    machine = this_machine()
    key = index.get("shape_key", "")
    here = []
    for e in index["devices"]:
        e.update(check_ms=None, check_runs=None, check_when=None, check_repeats_ms=None)
        if _runs_here(e, machine, key):
            here.append(e)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for e in sorted(here, key=lambda e: e["backend"] != "onnxruntime"):
        groups.setdefault((e["file"], e["fingerprint"], e["threads"], e["batch"], e["length"]), []).append(e)
    times: dict[tuple, list[float]] = {k: [] for k in groups}
    for r in range(repeats):
        for k, members in groups.items():
            times[k].append(_time_entry(Path(bundle), index, members[0], runs, warmup))
            if r < repeats - 1:
                continue
            ms = float(statistics.median(times[k]))
            for e in members:
                e.update(check_ms=ms, check_runs=runs, check_when=_now(), check_repeats_ms=list(times[k]))
            if progress:
                each = ", ".join(f"{t:.3f}" for t in times[k])
                print(
                    f"timed {describe_entry(members[0])}: {ms:.3f} ms (median of {repeats} x the median of {runs} "
                    f"runs: {each})",
                    file=sys.stderr,
                    flush=True,
                )
    return {
        "timed": bool(here),
        "runs": runs,
        "warmup": warmup,
        "repeats": repeats,
        "entries": len(here),
        "machine": describe_machine(machine),
        "note": "check_ms: the median of `repeats` timings with the loader's own loop (BundleModel.time_ms, what "
        "--check runs) at export, for the entries of the machine that exported the bundle; null for other "
        "machines' entries",
    }


def write_bundle(
    results: str | Path,
    out: str | Path,
    overwrite: bool = False,
    check_time: bool = True,
    progress: bool = True,
    front: int = FRONT_CONFIGS,
) -> dict[str, Any]:
    """Export every device's answer of RESULTS into the bundle folder `out` (atomically), and up to `front`
    configs of its front (`spread_front`; 0: the answer alone); returns its devices.json. SearchError when no
    device has an answer. check_time: time this machine's entries (their answers) with --check's loop
    (`time_entries`) before the bundle appears; progress: one line per timed entry on stderr."""

    bounds.check("front", front, "front", SearchError)
    check_output_dir(out, overwrite)  # before any slow work
    devices = device_entries(results)
    answered = [d for d in devices if d.get("answer")]
    skipped = [d for d in devices if not d.get("answer")]
    if not answered:
        why = "; ".join(f"{d['name']} ({d['precision']}): {d.get('message') or 'no answer'}" for d in devices)
        raise SearchError(
            f"no device of {results} has an answer, so there is nothing to bundle ({why}); search again with "
            "looser --target-latency values"
        )
    for d in skipped:
        warnings.warn(
            f"device {d['name']} ({d['precision']}) has no answer in {results} and is left out of the bundle: "
            f"{d.get('message') or 'no config met its target'}",
            stacklevel=2,
        )
    first = answered[0]["meta"]
    shape = answered[0]["shape"]
    for d in answered:  # the answer first: its model folder is exported from its own results, as before
        d["picked"] = spread_front(front_rows(d), front, d["answer"]["key"]) if front else []
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for d in answered:
        for key in [d["answer"]["key"]] + [r["key"] for r in d["picked"]]:
            g = groups.setdefault(
                (key, d["precision"]),
                {"folder": f"models/{key}-{d['precision']}", "formats": set(), "source": d["dir"]},
            )
            g["formats"].add(BACKEND_FORMATS[d["setting"]["backend"]])
    models: dict[str, dict[str, Any]] = {}
    entries = []
    with atomic_dir(out, overwrite) as tmp:
        tokenizer: list[str] = []
        for (key, precision), g in groups.items():
            folder = tmp / g["folder"]
            formats = ",".join(f for f in ("onnx", "hf") if f in g["formats"])
            manifest = export_from_results(g["source"], folder, key=key, formats=formats)
            removed = []
            for name in TOKENIZER_FILES:  # once, at the bundle's root
                f = folder / name
                if f.is_file():
                    if not (tmp / name).exists():
                        shutil.copyfile(f, tmp / name)
                        tokenizer.append(name)
                    f.unlink()
                    removed.append(name)
            onnx_file = manifest.get("onnx_file") or ("model.onnx" if "onnx" in g["formats"] else None)
            if precision == "int8":
                if onnx_file != "model.int8.onnx" or not (folder / onnx_file).is_file():
                    raise ExportError(f"the export of {key} holds no int8 model (model.int8.onnx) for its int8 devices")
                (folder / "model.onnx").unlink(missing_ok=True)  # the fp32 model it was quantised from
                removed.append("model.onnx")
            g["onnx_file"] = onnx_file
            g["manifest"] = manifest
            models[g["folder"]] = {
                "key": key,
                "precision": precision,
                "formats": formats.split(","),
                "manifest": f"{g['folder']}/manifest.json",
                "removed_from_export": removed,
            }
        report = bundle_report(answered[0]["meta"])
        for d in answered:
            a, s = d["answer"], d["setting"]
            g = groups[(a["key"], d["precision"])]
            fmt = BACKEND_FORMATS[s["backend"]]

            def where_is(key: str, fmt: str = fmt, precision: str = d["precision"]) -> dict[str, str]:
                g = groups[(key, precision)]
                return {
                    "file": f"{g['folder']}/{g['onnx_file']}" if fmt == "onnx" else g["folder"],
                    "model_dir": g["folder"],
                }

            metric = a.get("metric_full") if a.get("metric_full") is not None else a.get("metric_search")
            where = {k: s.get(k) for k in ("fingerprint", "cpu_model", "cpu_cores", "gpu_name")}
            entries.append(
                {
                    "name": d["name"],
                    "precision": d["precision"],
                    "label": d.get("label") or d["name"],
                    "backend": s["backend"],
                    "device": s.get("device") or "cpu",
                    "provider": s.get("provider") or "",
                    "threads": int(s["threads"]),
                    "spinning": bool(s.get("spinning", False)),
                    "dtype": s.get("dtype") or ("int8" if d["precision"] == "int8" else "float32"),
                    "batch": int(s["batch"]),
                    "length": int(s["seq_len"]),
                    "cpu_model": s.get("cpu_model"),
                    "cpu_cores": s.get("cpu_cores"),
                    "gpu_name": s.get("gpu_name") or "",
                    "fingerprint": s["fingerprint"],
                    "target_id": s.get("target_id"),
                    "format": fmt,
                    "file": f"{g['folder']}/{g['onnx_file']}" if fmt == "onnx" else g["folder"],
                    "model_dir": g["folder"],
                    "key": a["key"],
                    "subnet": a.get("subnet"),
                    "grid": a.get("grid") or "",
                    "metric": a.get("metric") or d["meta"]["study"]["metric"],
                    "metric_value": metric,
                    "metric_full": a.get("metric_full"),
                    "metric_search": a.get("metric_search"),
                    "predicted_ms": a.get("predicted_ms"),
                    "measured_ms": a.get("measured_ms"),
                    "measured_raw_ms": a.get("measured_raw_ms"),
                    "check_ms": None,  # set by time_entries below, for this machine's entries
                    "check_runs": None,
                    "check_when": None,
                    "check_repeats_ms": None,
                    "verified": bool(a.get("verified")),
                    "target_ms": d.get("target_ms"),
                    "when": _mtime(d["dir"] / "search.json"),
                    "exported": g["manifest"].get("created"),
                    "where": where,
                    "results": d["results_name"],
                }
            )
            if front:
                rows = front_rows(d)
                entries[-1]["front_size"] = len(rows)
                entries[-1]["front"] = [
                    {
                        "key": r["key"],
                        "precision": d["precision"],
                        "format": fmt,
                        **where_is(r["key"]),
                        "subnet": r["subnet"],
                        "grid": r["grid"],
                        **{k: r[k] for k in ("metric_value", "metric_full", "metric_search")},
                        **{k: r[k] for k in ("predicted_ms", "measured_ms", "measured_raw_ms")},
                        "answer": r["key"] == a["key"],
                    }
                    for r in d["picked"]
                ]
            own = bundle_report(d["meta"])
            if (own["sha256"], own["selection"], own["task"]) != (
                report["sha256"],
                report["selection"],
                report["task"],
            ):
                entries[-1]["report"] = own  # this device's search reported on other examples than the index says
        copy_runtime(tmp / RUNTIME_DIR)
        write_text(tmp / LOADER, SHIM)
        write_text(
            tmp / "README.txt",
            README.format(n=len(entries), ies="y" if len(entries) == 1 else "ies", m=len(models)),
        )
        dindex = answered[0].get("devices_index") or {}
        index = {
            "format": "dynasearch-bundle",
            "version": BUNDLE_VERSION,
            "created": _now(),
            "results": str(Path(results).resolve()),
            "task": first["study"]["task"],
            "metric": first["study"]["metric"],
            "model_dir": first["study"]["model_dir"],
            "checkpoint": first["study"]["checkpoint"],
            "backbone": shape.to_dict(),
            "shape_key": shape_key(shape),
            "vocab_size": shape.vocab_size,
            "text_inputs": _text_inputs(first["study"]["task"]),
            "labels": _model_labels(Path(first["study"]["model_dir"])),
            "tokenizer": tokenizer,
            "precision": dindex.get("precision") or {},
            "front": {
                "configs": front,
                "spread": "up to `configs` configs of each device's Pareto front (metric on the report examples "
                "against predicted latency), spread evenly over its predicted-latency range: the device's answer, the "
                "fastest and the most accurate among them",
                "metric": "metric_value: the metric on the report examples (front.csv's metric_full); see `report`",
            },
            "report": report,
            "models": models,
            "skipped": [
                {"name": d["name"], "precision": d["precision"], "message": d.get("message") or ""} for d in skipped
            ],
            "devices": entries,
        }
        # in the temporary folder: a kill while timing leaves no bundle
        index["check_time"] = (
            time_entries(tmp, index, progress=progress)
            if check_time
            else {"timed": False, "note": "not timed at export (--no-check-time): --check compares with the "
                  "search's measured latency"}
        )  # fmt: skip
        index["files"] = {
            p.relative_to(tmp).as_posix(): file_sha256(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.relative_to(tmp).as_posix() != "devices.json" and "__pycache__" not in p.parts
        }
        write_json(tmp / "devices.json", index)
    return index
