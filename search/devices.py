"""Many devices in one search: one trained model, one accuracy cache, a study per device.

A device is a name for a target setting (the backend, threads, batch, length and machine of its
latency predictor), optionally with a precision: `--predictor cpu=P1 --predictor cpu:int8=P2
--predictor gpu=P3`, targets `--target-latency cpu=8ms,gpu=3ms`. A NAME:int8 entry takes a predictor
fitted on int8 records (`dynasearch measure --dtype int8`), a plain NAME one a float32 predictor.

How the devices share the work (measured in bench/results/devices.md): every device gets its own
Optuna study (its own two objectives, metric and that device's latency, and its own target
constraint) in ONE storage with ONE accuracy cache. The devices run in turn; each study after the
first is warm-started with the configs the earlier devices ranked fully (enqueued first, answered
by the cache: no evaluation), so its sampler starts from everything already known and spends new
evaluations only where this device's latency moves the front. A single study with one latency
objective per device would make every device's front a slice of a 3+-objective front (harder for
TPE/NSGA-II and a constraint per device), and "the metric against the slowest normalised device"
optimises none of them.

Results: RESULTS/devices.json (the index) and one ordinary results directory per device,
RESULTS/<name> (RESULTS/<name>-int8 for an int8 entry): `query RESULTS --device-name NAME` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynabert.io import read_json, remove_stale_temporaries, write_json
from dynasearch_runtime.field_bounds import first_violation

from .errors import ResultsError, SearchError
from .results_bounds import DEVICES_BOUNDS
from .units import parse_latency

PRECISIONS = ("fp32", "int8")
# the records' dtype (`dynasearch measure --dtype`) a device entry's predictor must be fitted on, per precision
PRECISION_DTYPES = {"fp32": "float32", "int8": "int8"}
DEVICES_FORMAT = "dynasearch-devices"
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$")


@dataclass(frozen=True)
class Device:
    name: str
    precision: str
    predictor: Path
    target_ms: float | None = None

    @property
    def label(self) -> str:
        """The results folder and study suffix: NAME, or NAME-int8."""
        return self.name if self.precision == "fp32" else f"{self.name}-{self.precision}"


def parse_predictor_option(value: str) -> tuple[str, str, Path]:
    """'NAME=DIR' or 'NAME:PRECISION=DIR' -> (name, precision, dir)."""
    head, sep, path = value.partition("=")
    if not sep or not path:
        raise SearchError(f"--predictor {value!r}: give NAME=DIR (or NAME:int8=DIR) when naming devices")
    name, _, precision = head.partition(":")
    precision = precision or "fp32"
    if not NAME_RE.match(name):
        raise SearchError(
            f"device name {name!r} must start with a letter and hold only letters, digits, '_', '.', '-' (at most 40)"
        )
    if precision not in PRECISIONS:
        raise SearchError(f"device {name!r}: unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return name, precision, Path(path)


def parse_targets(text: str | None, names: Sequence[str]) -> dict[str, float]:
    """'cpu=8ms,gpu=40ms' -> {name: ms}; a bare '8ms' applies to a single device."""
    if text is None:
        return {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) == 1 and "=" not in parts[0]:
        if len(set(names)) != 1:
            raise SearchError(
                f"--target-latency {text!r} names no device; with several devices give NAME=LAT for each "
                f"(devices: {', '.join(sorted(set(names)))})"
            )
        return {names[0]: parse_latency(parts[0])}
    out: dict[str, float] = {}
    for p in parts:
        name, sep, lat = p.partition("=")
        if not sep:
            raise SearchError(f"--target-latency part {p!r}: give NAME=LAT, e.g. cpu=8ms")
        if name not in names:
            raise SearchError(
                f"target for device {name!r}, which has no --predictor {name}=DIR; devices: {', '.join(sorted(set(names)))}"
            )
        if name in out:
            raise SearchError(f"--target-latency names device {name!r} twice")
        out[name] = parse_latency(lat)
    return out


def devices_from_options(predictors: Sequence[str], targets: str | None) -> list[Device]:
    """The devices of repeated --predictor NAME[:PRECISION]=DIR options and --target-latency."""
    parsed = [parse_predictor_option(v) for v in predictors]
    seen: set[tuple[str, str]] = set()
    for name, precision, _ in parsed:
        if (name, precision) in seen:
            raise SearchError(
                f"device {name!r} at precision {precision} is given twice; one predictor per device and precision"
            )
        seen.add((name, precision))
    for name, precision, path in parsed:
        if precision == "int8" and (name, "fp32") not in seen:
            # int8 is scored only on the configs the same device's fp32 study ranked near its front
            # (run_devices: quantising and scoring cost seconds a config): alone it has no fronts to enter at.
            raise SearchError(
                f"--predictor {name}:int8={path}: an int8 entry is searched on the fp32 fronts of the same device, "
                f"and device {name!r} has no fp32 predictor: add --predictor {name}=DIR (a predictor fitted on "
                f"float32 records of that device: dynasearch measure --dtype float32 ...)"
            )
    names = [n for n, _, _ in parsed]
    tmap = parse_targets(targets, names)
    return [Device(n, p, d, tmap.get(n)) for n, p, d in parsed]


def check_precision(d: Device, dtype: str) -> None:
    """A NAME:int8 entry's predictor was fitted on int8 records, a plain NAME (fp32) entry's on
    float32 ones (SearchError naming the entry, the predictor and both dtypes otherwise)."""
    want = PRECISION_DTYPES[d.precision]
    if dtype == want:
        return
    entry = f"{d.name}:int8" if d.precision == "int8" else d.name
    what = "a NAME:int8 entry" if d.precision == "int8" else "a plain NAME (fp32) entry"
    hint = f"dynasearch measure --dtype {want} ..."
    if d.precision == "fp32" and dtype == "int8":
        hint += f"; or give it as --predictor {d.name}:int8={d.predictor} beside a float32 one"
    raise SearchError(
        f"--predictor {entry}={d.predictor}: predictor {d.predictor} was fitted on {dtype} records; "
        f"{what} needs a predictor fitted on {want} records ({hint})"
    )


def check_compatible(devices: Sequence[Device], loaded: dict[str, Any]) -> None:
    """Every device's predictor was fitted at the entry's precision (check_precision) and prices the
    same backbone at the same length: one model, one tokenisation (SearchError naming both otherwise)."""
    first = None
    for d in devices:
        f = loaded[d.label].fitted_on
        check_precision(d, f.dtype)
        sig = (f.shape_key, tuple(sorted(f.seq_lens)))
        if first is None:
            first = (d, sig)
        elif sig[0] != first[1][0]:
            raise SearchError(
                f"predictors of different backbones mixed: device {first[0].label} prices backbone {first[1][0]}, "
                f"device {d.label} prices {sig[0]}; every device of one search prices the same model"
            )
        elif sig[1] != first[1][1]:
            raise SearchError(
                f"predictors of different lengths mixed: device {first[0].label} at length(s) {list(first[1][1])}, "
                f"device {d.label} at {list(sig[1])}; give every device's predictor the same --seq-len"
            )


def run_devices(base, devices: Sequence[Device]) -> dict[str, Any]:
    """Search every device (a study each, one storage, one accuracy cache, warm-started in turn);
    write RESULTS/devices.json; returns it. `base` is the SearchConfig every device starts from."""
    from predictors import find_predictor, predictor_settings  # pandas: not on the query path
    from predictors.verify import machine_matches  # the same

    from .study import run_search  # pandas, tqdm, the study: not on the query path

    out = Path(base.out)
    for d in devices:  # every device's options checked before anything is read or written (--bf16 with int8)
        dataclasses.replace(base, target_ms=d.target_ms, precision=d.precision).check()
    loaded = {d.label: find_predictor(d.predictor)[0] for d in devices}
    check_compatible(devices, loaded)
    storage = base.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # killed runs' leftovers beside it (any command's)
    warm: list[str] = []  # fully ranked fp32 configs of the devices searched so far
    near_front: list[str] = []  # their fronts and neighbours: where int8 enters
    index: dict[str, Any] = {"format": DEVICES_FORMAT, "version": 1, "devices": []}
    total_evaluations = 0
    # fp32 devices first: the int8 entries are scored on the fp32 fronts they found (see INT8_MARGIN)
    for d in sorted(devices, key=lambda d: d.precision != "fp32"):
        pred = loaded[d.label]
        here = machine_matches(pred, predictor_settings(pred))
        int8_on_fronts = d.precision == "int8" and bool(near_front)
        start = near_front if d.precision == "int8" else warm
        cfg = dataclasses.replace(
            base,
            predictor=d.predictor,
            out=out / d.label,
            storage=storage,
            cache=base.cache or storage,
            study=f"{base.study}-{d.label}",
            target_ms=d.target_ms,
            verify=base.verify and here,
            trials=base.trials + len(start),
            queued_only=int8_on_fronts,
            warm_start=tuple(start),
            precision=d.precision,
        )
        outcome = run_search(cfg)
        s = outcome.meta["summary"]
        # configs this device's study evaluated itself (its first trial of the key was not a cache hit)
        new = int(outcome.trials[~outcome.trials["cache_hit"].astype(bool)]["key"].nunique())
        total_evaluations += new
        if d.precision == "fp32":
            ranked = outcome.trials[~outcome.trials["stopped"].astype(bool)].drop_duplicates("key")
            warm += [j for j in ranked["subnet"] if j not in warm]
            near_front += [j for j in neighbourhood(ranked) if j not in near_front]
        ans = outcome.answer
        index["devices"].append(
            {
                "name": d.name,
                "precision": d.precision,
                "label": d.label,
                "results": d.label,
                "predictor": str(Path(d.predictor).resolve()),
                "setting": outcome.meta["fingerprint"],
                "target_ms": d.target_ms,
                "verified_here": bool(cfg.verify and d.target_ms is not None),
                "this_machine": here,
                "how_to_verify": None
                if here
                else f"on that machine: dynasearch query {out} --device-name {d.name} --target-latency "
                f"{d.target_ms or 'LAT'}ms --verify (or measure there with `dynasearch kit` records)",
                "answer": ans,
                "met": outcome.met,
                "message": outcome.message,
                "evaluations_new": new,
                "evaluation_calls": int(outcome.meta["timing"].get("evaluations_this_run", 0)),  # racing: per chunk
                "warm_started_with": len(cfg.warm_start),
                "int8_on_fp32_fronts": int8_on_fronts,
                "distinct_configs": int(s["distinct_configs"]),
            }
        )
        write_json(out / "devices.json", index)
    index["distinct_configs_evaluated"] = total_evaluations
    index["precision"] = precision_verdicts(index["devices"])
    write_json(out / "devices.json", index)
    return index


# int8 enters at the fp32 fronts: every config whose fp32 ranking metric is within INT8_MARGIN points of
# the best at equal or lower predicted latency (exporting + quantising + scoring costs seconds per config,
# against a fraction of a second for an fp32 evaluation: bench/results/devices.md).
INT8_MARGIN = 2.0
# int8 is kept for a device only when its answer is faster than fp32's or better, and it loses at most
# this many points against fp32 on the same config.
INT8_MAX_DROP = 1.0


def neighbourhood(ranked, margin: float = INT8_MARGIN) -> list[str]:
    """Sub-network JSONs of the ranked configs within `margin` points of the front at their latency."""
    rows = ranked.sort_values("predicted_ms")
    out, best = [], -float("inf")
    for _, r in rows.iterrows():
        m = float(r["metric_search"])
        if m >= best - margin:
            out.append(r["subnet"])
        best = max(best, m)
    return out


def precision_verdicts(entries: list[dict[str, Any]]) -> dict[str, str]:
    """Per device with an fp32 and an int8 entry: which precision its answer takes, and why."""
    out = {}
    by_name: dict[str, dict[str, dict]] = {}
    for e in entries:
        by_name.setdefault(e["name"], {})[e["precision"]] = e
    for name, p in by_name.items():
        if "fp32" not in p or "int8" not in p:
            continue
        a, b = p["fp32"].get("answer"), p["int8"].get("answer")
        if b is None:
            out[name] = "fp32: no int8 config met the target"
        elif a is None:
            out[name] = "int8: only an int8 config met the target"
        else:
            ma, mb = a.get("metric_full") or 0.0, b.get("metric_full") or 0.0
            la = a.get("measured_ms") or a.get("predicted_ms")
            lb = b.get("measured_ms") or b.get("predicted_ms")
            if mb >= ma - INT8_MAX_DROP and (mb > ma or (lb and la and lb < la)):
                out[name] = f"int8: {mb:.2f} against fp32 {ma:.2f} at {lb:.3f} ms against {la:.3f} ms"
            else:
                out[name] = (
                    f"fp32: int8's answer scores {mb:.2f} against {ma:.2f} (allowed drop {INT8_MAX_DROP}) at "
                    f"{lb:.3f} ms against {la:.3f} ms"
                )
    return out


def read_devices(results: str | Path) -> dict[str, Any] | None:
    """RESULTS/devices.json when RESULTS is a multi-device search, else None."""
    p = Path(results) / "devices.json"
    if not p.is_file():
        return None
    doc = read_json(p, "devices index", error=ResultsError)
    if doc.get("format") != DEVICES_FORMAT or not isinstance(doc.get("devices"), list):
        raise ResultsError(f"{p} is not a dynasearch devices index (format {doc.get('format')!r})")
    for i, d in enumerate(doc["devices"]):
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.get("results"), str):
            raise ResultsError(f"{p}: devices[{i}] lacks a name or results folder")
        if "/" in d["results"] or d["results"] in ("", ".", ".."):
            raise ResultsError(f"{p}: devices[{i}].results {d['results']!r} must be a folder name inside {p.parent}")
    seen = [(d["name"], d.get("precision", "fp32")) for d in doc["devices"]]
    twice = sorted({f"{n}:{q}" for n, q in seen if seen.count((n, q)) > 1})
    if twice:
        raise ResultsError(f"{p}: device(s) {', '.join(twice)} listed twice; one entry per device and precision")
    bad = first_violation(doc, DEVICES_BOUNDS)  # every number within its kind's range (the bounds table)
    if bad:
        raise ResultsError(f"{p}: key '{bad[0]}' must be {bad[2]}; got {json.dumps(bad[1])[:60]}")
    return doc


def device_results(results: str | Path, name: str, precision: str | None = None) -> Path:
    """The results folder of device NAME (and precision) in a multi-device RESULTS."""
    doc = read_devices(results)
    if doc is None:
        raise SearchError(f"{results} is a single-device search (no devices.json); drop --device-name")
    hits = [d for d in doc["devices"] if d["name"] == name and (precision is None or d["precision"] == precision)]
    if not hits:
        names = sorted({f"{d['name']}:{d['precision']}" for d in doc["devices"]})
        raise SearchError(f"no device {name!r} in {results}; devices: {', '.join(names)}")
    return Path(results) / hits[0]["results"]
