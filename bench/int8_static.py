"""Static against dynamic onnxruntime int8 (issue 18's "static with a calibration slice of train if it
measures better"): the grid points in the middle of the latency range and the full model, each
exported to fp32 ONNX and quantised twice (`dynabert.quantize.quantize_onnx`): dynamic (QInt8
weights, activations quantised at run time) and static (QDQ, S8S8, MinMax-calibrated on a seeded
slice of train), plus an extra variant "static-mm" that quantize_onnx does not make (the same
static QDQ S8S8 calibration, only MatMul quantised: quantize_onnx's static quantises every op). Then
- latency of fp32, dynamic and static at "ort1" (onnxruntime, 1 thread, batch 1) and "ort2b8"
  (2 threads, batch 8), length 64: one interleaved run of the project's timing protocol per setting
  (`time_interleaved`, `Protocol()`, sessions as the onnxruntime backend and the kit's runner build
  them: `dynasearch_runtime.fingerprint.ort_session`, no spinning), so drift hits all models alike;
- accuracy of every model on the whole dev split, measured with that ONNX model itself
  (`onnx_logits`), and paired bootstrap intervals of int8 - fp32.

Run alone (nothing else busy on the machine: the timings are the answer):
    .venv/bin/python bench/int8_static.py --run runs/bench-perlayer/sst2/grid+4-mid \\
        --data-dir path/to/glue/SST-2 --work runs/bench-int8-static
Writes WORK/int8-static.json (resumable: each step is kept as it finishes) and
bench/results/int8-static.md; --report-only writes the Markdown from the JSON again.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from perlayer import _log, machine  # noqa: E402

from dynabert.io import write_json  # noqa: E402

GRID = ("1x1", "0.75x1", "0.5x1", "0.75x0.75", "0.5x0.75")  # width x depth; the full model and the middle
# static-mm: an extra variant that `quantize_onnx` does not make: static QDQ S8S8 with the same calibration,
# but only MatMul quantised (onnxruntime's op_types_to_quantize); quantize_onnx's static quantises every op.
MODES = ("fp32", "dynamic", "static", "static-mm")
INT8 = MODES[1:]
SETTINGS = {"ort1": (1, 1), "ort2b8": (2, 8)}  # name -> (intra-op threads, batch)
SEQ = 64
CALIBRATION = 128  # train examples (seeded_subset of train.tsv, seed CAL_SEED), in batches of CAL_BATCH
CAL_SEED = 0
CAL_BATCH = 16
TARGET = 1.8  # int8 speed-up asked for in the middle of the latency range (issue 18)


def _grid(name: str) -> tuple[float, float]:
    w, d = name.split("x")
    return float(w), float(d)


def _load(doc_path: Path) -> dict:
    return json.loads(doc_path.read_text()) if doc_path.is_file() else {}


def quantize_static_matmul(src: Path, dst: Path, calibration) -> Path:
    """static-mm: `quantize_onnx(src, dst, "static", calibration=...)` with op_types_to_quantize=["MatMul"]
    (same pre-processing, QDQ, S8S8, MinMax on the same calibration batches)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    from dynabert.io import atomic_path
    from dynabert.quantize import _calibration_feeds

    with atomic_path(dst) as tmp:
        quant_pre_process(str(src), str(tmp))
        model = onnx.load(str(tmp))
        feeds = iter(_calibration_feeds(calibration, [i.name for i in model.graph.input]))

        class _Reader(CalibrationDataReader):
            def get_next(self) -> dict | None:
                return next(feeds, None)

        quantize_static(model, str(tmp), _Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])  # fmt: skip
    return dst


def phase_models(work: Path, run: Path, data_dir: str | None, grid: list[str], n_cal: int, doc: dict, out: Path):
    """fp32 export and both int8 files per grid point (timed), into WORK/models."""
    from dynabert.backbone import load_model
    from dynabert.data import encode, load_tokenizer
    from dynabert.evaluate import DevSet, seeded_subset
    from dynabert.extract import extract_subnet, model_shape
    from dynabert.onnx_export import export_onnx
    from dynabert.quantize import quantize_onnx
    from dynabert.runs import run_model_dir
    from dynabert.subnet import SubnetConfig
    from dynabert.tasks import get_task, load_split

    mdir = run_model_dir(run)
    model = load_model(mdir).eval()
    shape = model_shape(model)
    task = get_task(doc["task"])
    train = load_split(task, "train", data_dir)
    idx = seeded_subset(len(train), n_cal, CAL_SEED)
    enc = encode(train.subset(idx), load_tokenizer(mdir), SEQ, task.is_regression)
    cal = DevSet(enc, CAL_BATCH, f"train-subset-{n_cal}-seed{CAL_SEED}", SEQ)
    doc["calibration"] = {"examples": len(idx), "seed": CAL_SEED, "batch": CAL_BATCH, "digest": cal.digest,
                          "batches": len(cal.batches), "max_seq_length": SEQ}  # fmt: skip
    doc.setdefault("models", {})
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    for g in grid:
        if g in doc["models"] and all(Path(doc["models"][g]["paths"][m]).is_file() for m in MODES):
            continue
        s = SubnetConfig.from_grid(shape, *_grid(g))
        small = extract_subnet(model, s).eval()
        paths = {m: models / f"{g}.{m}.onnx" for m in MODES}
        t0 = time.perf_counter()
        diff = export_onnx(small, paths["fp32"])
        rec = {"key": s.key, "export_s": time.perf_counter() - t0, "export_max_abs_diff": diff}
        for m in INT8:
            t0 = time.perf_counter()
            if m == "static-mm":
                quantize_static_matmul(paths["fp32"], paths[m], cal)
            else:
                quantize_onnx(paths["fp32"], paths[m], m, calibration=cal if m == "static" else None)
            rec[f"{m}_quantise_s"] = time.perf_counter() - t0
        rec["paths"] = {m: str(p) for m, p in paths.items()}
        rec["mb"] = {m: p.stat().st_size / 1e6 for m, p in paths.items()}
        doc["models"][g] = rec
        write_json(out, doc)
        _log(f"models {g} ({s.key}): export {rec['export_s']:.1f} s, dynamic {rec['dynamic_quantise_s']:.1f} s, "
             f"static {rec['static_quantise_s']:.1f} s")  # fmt: skip
    return model.config.vocab_size


def phase_accuracy(run: Path, data_dir: str | None, grid: list[str], dev_limit: int | None, doc: dict, out: Path):
    """Whole-dev accuracy of every ONNX model itself; paired bootstrap of int8 - fp32 (and static - dynamic)."""
    import numpy as np

    from dynabert.evaluate import load_dev_set
    from dynabert.metrics import paired_bootstrap
    from dynabert.quantize import onnx_logits
    from dynabert.runs import run_model_dir
    from dynabert.tasks import get_task

    doc.setdefault("accuracy", {})
    todo = [g for g in grid if g not in doc["accuracy"]]
    if not todo:
        return
    dev = load_dev_set(get_task(doc["task"]), run_model_dir(run), data_dir=data_dir, max_seq_length=SEQ,
                       subset=dev_limit)  # fmt: skip
    labels = np.asarray(dev.labels)
    doc["dev"] = {"examples": int(len(labels)), "selection": dev.selection, "digest": dev.digest}
    for g in todo:
        correct, secs = {}, {}
        for m in MODES:
            t0 = time.perf_counter()
            correct[m] = (onnx_logits(doc["models"][g]["paths"][m], dev, threads=2).argmax(-1) == labels).astype(int)
            secs[m] = time.perf_counter() - t0
        rec = {f"{m}_acc": 100 * float(correct[m].mean()) for m in MODES}
        for m in INT8:
            rec[f"{m}_diff"] = list(paired_bootstrap(correct[m], correct["fp32"]))
            rec[f"{m}_agree"] = 100 * float((correct[m] == correct["fp32"]).mean())
        for m in ("static", "static-mm"):
            rec[f"{m}_minus_dynamic"] = list(paired_bootstrap(correct[m], correct["dynamic"]))
        rec["score_s"] = secs
        doc["accuracy"][g] = rec
        write_json(out, doc)
        _log(f"accuracy {g}: " + ", ".join(f"{m} {rec[f'{m}_acc']:.2f}" for m in MODES))


def phase_timing(grid: list[str], vocab: int, protocol, doc: dict, out: Path) -> None:
    """One interleaved protocol run per setting over every (grid point, precision)."""
    from dynasearch_runtime.fingerprint import ort_feeds, ort_run_once, ort_session
    from dynasearch_runtime.protocol import time_interleaved

    doc.setdefault("timing", {})
    for name, (threads, batch) in SETTINGS.items():
        if name in doc["timing"] and all(f"{g}/{m}" in doc["timing"][name]["stats"] for g in grid for m in MODES):
            continue
        runs = []
        for g in grid:
            for m in MODES:
                sess = ort_session(doc["models"][g]["paths"][m], "CPUExecutionProvider", threads, False)
                feeds = ort_feeds([i.name for i in sess.get_inputs()], batch, SEQ, vocab)
                runs.append((f"{g}/{m}", ort_run_once(sess, feeds)))
        _log(f"timing {name}: {len(runs)} models, {threads} thread(s), batch {batch}, length {SEQ}")
        t0 = time.perf_counter()
        stats = time_interleaved(runs, protocol, random.Random(protocol.seed))
        wall = time.perf_counter() - t0
        del runs
        gc.collect()
        doc["timing"][name] = {"threads": threads, "batch": batch, "seq_len": SEQ, "wall_s": wall,
                               "protocol": json.loads(protocol.to_json()), "stats": stats}  # fmt: skip
        write_json(out, doc)
        bad = [k for k, v in stats.items() if "error" in v]
        _log(f"timing {name}: {wall:.0f} s" + (f"; FAILED {bad}" if bad else ""))


def _ms(doc: dict, setting: str, g: str, m: str) -> float:
    st = doc["timing"][setting]["stats"].get(f"{g}/{m}", {})
    return float(st.get("median_ms", float("nan")))


def _pm(x: list[float]) -> str:
    d, lo, hi = x
    return f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _median(xs: list[float]) -> float:
    import numpy as np

    return float(np.median(xs)) if xs else float("nan")


def report(doc: dict, path: Path) -> Path:
    from dynabert.io import write_text
    from dynabert.tables import markdown_table

    m = doc["machine"]
    grid = [g for g in GRID if g in doc.get("models", {})] + [g for g in doc.get("models", {}) if g not in GRID]
    cal, dev = doc["calibration"], doc["dev"]
    lines = [
        "# Static against dynamic onnxruntime int8 (issue 18)",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}, onnxruntime "
        f"{doc['onnxruntime']}; commit `{m['commit']}`; {m['date']}; written by `bench/int8_static.py`, run alone "
        f"({doc['total_s']:.0f} s in all)",
        f"- model: `{doc['run']}` (task {doc['task']}); fp32: the extracted sub-network exported to ONNX; dynamic: "
        "`quantize_dynamic`, QInt8 weights, activations quantised at run time; static: `quantize_static`, QDQ, "
        f"S8S8, MinMax-calibrated on {cal['examples']} train examples (seeded subset of train, seed {cal['seed']}, "
        f"{cal['batches']} batches of {cal['batch']}, length {cal['max_seq_length']}); no per-channel, onnxruntime "
        "defaults otherwise (`dynabert.quantize.quantize_onnx`); static-mm: the same static QDQ S8S8 with the same "
        "calibration, only MatMul quantised (`op_types_to_quantize=['MatMul']`; made here, not by quantize_onnx)",
        f"- latency: median ms of the project's protocol (`time_interleaved`, `Protocol()` defaults), all "
        f"{len(grid) * len(MODES)} models interleaved in ONE run per setting; length {SEQ}, random tokens, no "
        "padding; sessions as the onnxruntime backend builds them (ORT_ENABLE_ALL, sequential, no spinning)",
        f"- accuracy: every ONNX model itself on the {'whole ' if dev['selection'] == 'all' else ''}dev split "
        f"({dev['examples']} examples, {dev['selection']}); int8 - fp32 in points with the paired bootstrap 95% "
        "interval (2000 resamples)",
        "",
    ]
    verdicts = []
    for setting, (threads, batch) in SETTINGS.items():
        if setting not in doc.get("timing", {}):
            continue
        rows = []
        for g in grid:
            a = doc["accuracy"][g]
            f = _ms(doc, setting, g, "fp32")
            rows.append([g, f"{f:.3f}"]
                        + [f"{_ms(doc, setting, g, q):.3f} ({f / _ms(doc, setting, g, q):.2f}x)" for q in INT8]
                        + [f"{a['fp32_acc']:.2f}"]
                        + [f"{a[f'{q}_acc']:.2f} ({_pm(a[f'{q}_diff'])})" for q in INT8])  # fmt: skip
        t = doc["timing"][setting]
        lines += [f"## {setting}: onnxruntime, {threads} thread(s), batch {batch}, length {SEQ} "
                  f"(one protocol run, {t['wall_s']:.0f} s)", "",
                  markdown_table(["grid", "fp32 ms"] + [f"{q} ms (speed-up)" for q in INT8] + ["fp32 acc"]
                                 + [f"{q} acc (diff [95%])" for q in INT8], rows), ""]  # fmt: skip
        mid = [g for g in grid if g != "1x1"]
        sp = {q: [_ms(doc, setting, g, "fp32") / _ms(doc, setting, g, q) for g in mid] for q in INT8}
        med = {q: _median(v) for q, v in sp.items()}
        holds = {q: [g for g in mid if doc["accuracy"][g][f"{q}_diff"][1] <= 0 <= doc["accuracy"][g][f"{q}_diff"][2]]
                 for q in INT8}  # fmt: skip
        eq = {q: _median([x for g, x in zip(mid, sp[q]) if g in holds[q]]) for q in INT8}
        ok = [q for q in INT8 if len(holds[q]) == len(mid)] or ["dynamic"]
        better = max(ok, key=lambda q: med[q])
        why = (
            f"median speed-up over the {len(mid)} middle grid points ({', '.join(mid)}): "
            + ", ".join(f"{q} {med[q]:.2f}x" for q in INT8)
            + "; points at equal accuracy (paired interval holds 0): "
            + ", ".join(f"{q} {len(holds[q])}/{len(mid)} (median {eq[q]:.2f}x)" for q in INT8)
            + "; speed of static / dynamic per point (all grid points): "
            + ", ".join(
                f"{g} {_ms(doc, setting, g, 'dynamic') / _ms(doc, setting, g, 'static'):.2f} "
                f"(static-mm {_ms(doc, setting, g, 'dynamic') / _ms(doc, setting, g, 'static-mm'):.2f})"
                for g in grid
            )
        )
        verdicts.append((setting, better, med, why))
    lines += ["## Quantisation time per config (seconds) and file sizes", ""]
    lines += [markdown_table(["grid", "key", "fp32 export s"] + [f"{q} quantise s" for q in INT8]
                             + [f"{q} MB" for q in MODES] + ["static - dynamic acc [95%]", "static-mm - dynamic acc [95%]"],
                             [[g, r["key"], f"{r['export_s']:.1f}"] + [f"{r[f'{q}_quantise_s']:.1f}" for q in INT8]
                              + [f"{r['mb'][q]:.1f}" for q in MODES]
                              + [_pm(doc["accuracy"][g][f"{q}_minus_dynamic"]) for q in ("static", "static-mm")]
                              for g, r in ((g, doc["models"][g]) for g in grid)]), "",
              "(static quantise s includes the calibration runs; static-mm: static QDQ S8S8 with only MatMul "
              "quantised, an extra variant `dynabert.quantize.quantize_onnx` does not make)", ""]  # fmt: skip
    lines += ["## Conclusion", ""]
    for setting, better, _, why in verdicts:
        lines.append(f"- **{setting}: use {better} int8.** {why}.")
    if any(v[0] == "ort2b8" for v in verdicts):
        med = next(v[2] for v in verdicts if v[0] == "ort2b8")
        lines.append(
            f"- static int8 at ort2b8 against the {TARGET}x target (median of the middle grid points): "
            f"static (quantize_onnx) {med['static']:.2f}x: **{'met' if med['static'] >= TARGET else 'MISSED'}**; "
            f"static-mm {med['static-mm']:.2f}x: **{'met' if med['static-mm'] >= TARGET else 'MISSED'}** "
            f"(dynamic {med['dynamic']:.2f}x)"
        )
    lines.append("")
    write_text(path, "\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/bench-perlayer/sst2/grid+4-mid"))
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--work", type=Path, default=Path("runs/bench-int8-static"))
    ap.add_argument("--markdown", type=Path, default=REPO / "bench" / "results" / "int8-static.md")
    ap.add_argument("--grid", nargs="+", default=list(GRID), help="width x depth points, e.g. 0.75x1")
    ap.add_argument("--calibration", type=int, default=CALIBRATION, help="train examples to calibrate static int8 on")
    ap.add_argument("--dev-limit", type=int, default=None, help="score on N dev examples only (a smoke test)")
    ap.add_argument("--smoke", action="store_true", help="a tiny timing protocol (a smoke test, not a measurement)")
    ap.add_argument("--report-only", action="store_true", help="write the Markdown from WORK/int8-static.json")
    a = ap.parse_args(argv)
    out = a.work / "int8-static.json"
    if a.report_only:
        _log(f"report: {report(_load(out), a.markdown)}")
        return 0
    import onnxruntime
    import torch

    from dynasearch_runtime.protocol import Protocol

    # Export and PyTorch work run on one torch thread: no idle OpenMP worker spins on the cores
    # onnxruntime is timed on (as the onnxruntime backend's configure()).
    torch.set_num_threads(1)
    a.work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    doc = _load(out)
    prior = doc.get("total_s", 0.0)
    doc.update(run=str(a.run), task=a.task, onnxruntime=onnxruntime.__version__, machine=machine())
    vocab = phase_models(a.work, a.run, a.data_dir, a.grid, a.calibration, doc, out)
    protocol = Protocol(max_runs=6, max_seconds=0.3, warmup_max_seconds=0.2) if a.smoke else Protocol()
    phase_timing(a.grid, vocab, protocol, doc, out)
    phase_accuracy(a.run, a.data_dir, a.grid, a.dev_limit, doc, out)
    doc["total_s"] = prior + time.perf_counter() - t_all
    write_json(out, doc)
    _log(f"report: {report(doc, a.markdown)} ({doc['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
