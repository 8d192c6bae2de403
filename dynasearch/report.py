"""The demo's one-page report: OUT/report.md and OUT/report.html (images inlined: readable offline).

Both are rendered from one list of blocks, so they cannot say different things.
"""

from __future__ import annotations

import base64
import html
import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from dynabert.io import read_json, write_text
from dynabert.runs import run_model_dir
from dynabert.tables import frame_table

Block = tuple  # ("h1"|"h2"|"p"|"ul"|"code"|"table"|"img", payload...)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _md(blocks: list[Block], out: Path) -> str:
    lines: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            lines += [f"# {b[1]}", ""]
        elif kind == "h2":
            lines += [f"## {b[1]}", ""]
        elif kind == "p":
            lines += [b[1], ""]
        elif kind == "ul":
            lines += [f"- {x}" for x in b[1]] + [""]
        elif kind == "code":
            lines += ["```bash", b[1], "```", ""]
        elif kind == "table":
            lines += [frame_table(b[1], _fmt), ""]
        elif kind == "img":
            path: Path = b[1]
            rel = path.relative_to(out) if path.is_relative_to(out) else path
            lines += [f"![{b[2]}]({rel.as_posix()})" if path.is_file() else f"({b[2]}: not written)", ""]
    return "\n".join(lines)


def _html(blocks: list[Block], title: str) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.4}"
        "table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}"
        "pre{background:#f4f4f4;padding:.6rem;overflow-x:auto}img{max-width:100%}.warn{color:#a40}</style></head><body>"
    ]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "code":
            parts.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "table":
            df = b[1].map(_fmt)
            parts.append(df.to_html(index=False, escape=True, border=0))
        elif kind == "img":
            path: Path = b[1]
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append(f"<p><img alt='{html.escape(b[2])}' src='data:image/png;base64,{data}'></p>")
            else:
                parts.append(f"<p>({html.escape(b[2])}: not written)</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def reproduce_commands(out: Path, cfg: dict[str, Any], target_ms: float, default_protocol: dict[str, Any]) -> str:
    """The demo's steps as the CLI commands that do each one by hand (same settings)."""
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    model = f" --model {q(cfg['model_dir'])}" if cfg.get("model_dir") else ""
    data = f" --data-dir {q(cfg['data_dir'])}" if cfg.get("data_dir") else ""
    lrs = ",".join(f"{s}={lr:g}" for s, lr in cfg.get("learning_rates", []))
    eps = ",".join(f"{s}={e:g}" for s, e in cfg.get("stage_epochs", []))
    train = (
        f"dynasearch train --out {q(out / 'run')} --task {cfg['task']}{model}{data} --stages {','.join(cfg['stages'])} "
        f"--epochs {cfg['epochs']:g} --max-seq-length {cfg['max_seq_length']} --batch-size {cfg['batch_size']} --seed {cfg['seed']}"
        + (f" --train-subset {cfg['train_subset']}" if cfg.get("train_subset") else "")
        + (f" --dev-subset {cfg['dev_subset']}" if cfg.get("dev_subset") else "")
        + (f" --max-steps {cfg['max_steps']}" if cfg.get("max_steps") else "")
        + (" --group-by-length" if cfg.get("group_by_length") else "")
        + (f" --stage-lr {lrs}" if lrs else "")
        + (f" --stage-epochs {eps}" if eps else "")
        + (f" --depth-loss {cfg['depth_loss'][0]:g},{cfg['depth_loss'][1]:g}" if cfg.get("depth_loss") else "")
    )
    try:
        model_dir = run_model_dir(out / "run")
    except Exception:  # noqa: BLE001 - a run that never finished: name where its model will be
        model_dir = out / "run" / "width_depth"
    p = cfg.get("measure_protocol") or default_protocol
    protocol = "".join(
        f" --{k.replace('_', '-')} {p[k]:g}"
        for k in ("rel_ci", "min_runs", "min_visits", "runs_per_visit", "max_runs", "max_seconds", "chunk_size")
        if k in p
    )
    lines = [
        "# 1. train DynaBERT (teacher, rewiring, width, width+depth)",
        train,
        "# 2. score the 12 grid sub-networks on dev",
        f"dynasearch evaluate {q(out / 'run')} --out {q(out / 'eval')}"
        + (f" --dev-subset {cfg['eval_dev']}" if cfg.get("eval_dev") else ""),
        "# 3. time layer-table, grid and random per-layer configs in one run",
        f"dynasearch measure {q(model_dir)} --out {q(out / 'latency' / 'records.csv')} --sampler layer-table,grid,uniform "
        f"--n {cfg['random_configs']} --seed {cfg['seed']} --backend {cfg['backend']} --threads {cfg['threads']} "
        f"--batch {cfg['latency_batch']} --seq-len {cfg['latency_seq_len']}{protocol}",
        "# 4. fit the latency predictors (held-out error printed)",
        f"dynasearch fit-predictor {q(out / 'latency' / 'records.csv')} --out {q(out / 'predictor')} --overwrite",
        "# 5. search grid + per-layer choices, verify the answer by measurement",
        f"dynasearch search {q(out / 'run')} --predictor {q(out / 'predictor')} --out {q(out / 'search')} --target-latency "
        f"{target_ms:g}ms --trials {cfg['trials']} --sampler {cfg['sampler']} --seed {cfg['seed']}"
        + (f" --search-dev {cfg['search_dev']}" if cfg.get("search_dev") else "")
        + (f" --rescore-dev {cfg['eval_dev']}" if cfg.get("eval_dev") and cfg.get("search_dev") else ""),
        "# 6. export the answer",
        f"dynasearch export --results {q(out / 'search')} --target-latency {target_ms:g}ms "
        f"--out {q(out / 'export')} --overwrite",
        "# any other target, from the results alone (no torch, seconds)",
        f"dynasearch query {q(out / 'search')} --target-latency {target_ms * 0.8:.3g}ms",
    ]
    return "\n".join(lines)


def report_blocks(
    out: Path, s: dict[str, Any], steps: dict[str, Any], cfg: dict[str, Any], default_protocol: dict[str, Any]
) -> list[Block]:
    metric = s["metric"]
    lat = s["latency_setting"]
    blocks: list[Block] = [("h1", f"dynasearch demo: {s['task']} on {s['backbone']}")]
    grid = pd.DataFrame(s["grid"])
    n_dev = int(grid["examples"].iloc[0]) if "examples" in grid and len(grid) else None
    epochs = {st: e for st, e in cfg.get("stage_epochs", [])}
    per_stage = ", ".join(
        f"{st} {round((cfg.get('train_subset') or 0) * epochs.get(st, cfg.get('epochs', 1))) or 'all'}"
        for st in cfg.get("stages", [])
        if st != "rewire"
    )
    blocks.append(
        (
            "p",
            f"Task {s['task']} ({metric}), backbone {s['backbone']}; training examples per stage: {per_stage}; "
            f"scored on {n_dev} dev examples"
            + (
                f" (always predicting the majority class scores {s['dev_majority']:.1f}%)"
                if s.get("dev_majority")
                else ""
            )
            + f". Latency: {lat['backend']} CPU, {lat['threads']} thread(s), batch {lat['batch']}, length {lat['seq_len']}, "
            "of the physically extracted sub-networks on this machine.",
        )
    )
    tl = s.get("dev_token_lengths")
    if tl:
        blocks.append(
            (
                "p",
                f"Dev texts in tokens: median {tl['p50']}, 90th percentile {tl['p90']}, 99th {tl['p99']}, longest "
                f"{tl['max']}; {100 * tl['truncated_share']:.1f}% are cut at the training and scoring length "
                f"{tl['max_seq_length']}.",
            )
        )
    if s["warnings"]:
        blocks += [("h2", "Warnings"), ("ul", list(s["warnings"]))]
    c = s.get("chosen")
    blocks.append(("h2", "Answer"))
    if c is None:
        blocks.append(
            (
                "p",
                f"No sub-network met the target {s['target_ms']:.2f} ms ({s['target_rule']}): {s.get('search_message', '')}",
            )
        )
    else:
        blocks.append(
            (
                "ul",
                [
                    f"target {s['target_ms']:.2f} ms ({s['target_rule']}; the full model measured {s['full']['median_ms']:.2f} ms)",
                    f"chosen sub-network {c['key']}: layers {c['subnet']['layers']}, heads {c['subnet']['heads']}, FFN {c['subnet']['ffn']}",
                    f"{metric} {_fmt(c[metric])} on the scoring selection of dev (full model {_fmt(s['full'][metric])}, its teacher "
                    f"{_fmt(s.get('teacher', {}).get(metric))})",
                    f"measured {_fmt(c['measured_ms'], 3)} ms speed-corrected ({_fmt(c['measured_raw_ms'], 3)} ms raw, host speed index "
                    f"{_fmt(c.get('speed_index'), 3)}), predicted {_fmt(c['predicted_ms'], 3)} ms: "
                    + ("meets the target" if c["meets_target"] else "MISSES the target"),
                    f"speed-up against the full model: {_fmt(c['speedup'])}x; exported to {s['files']['export']}",
                    *_against_grid(s, metric),
                    *_int8_line(s, metric),
                ],
            )
        )
    blocks += [
        ("h2", "Pareto front"),
        (
            "img",
            out / "search" / "front.png",
            "searched configs, paper grid, front, measured points, target and answer",
        ),
    ]
    blocks.append(("h2", "The 12 grid sub-networks"))
    cols = [
        k
        for k in ("width", "depth", "layers", "heads", "ffn", "params", metric, "classes_predicted", "top_class_share")
        if k in grid
    ]
    blocks.append(("table", grid[cols]))
    blocks.append(
        (
            "img",
            next(iter(sorted((out / "eval").glob("*-grid.png"))), out / "eval" / "grid.png"),
            "width x depth heatmap",
        )
    )
    p = s["predictor"]
    blocks += [
        ("h2", "Latency predictor"),
        (
            "p",
            (
                f"Best kind {p['best']} (chosen by cross-validated error on the fitting part): on {p['n_test']} held-out timed configs "
                f"MAPE {p['mape']:.2f}%, {100 * p['within_5']:.0f}% within +-5%, Kendall tau {'n/a' if p['kendall_tau'] is None else format(p['kendall_tau'], '.3f')}, largest error "
                f"{p['max_ape']:.1f}% (fitted on {p['n_train']}). Every predictor's numbers: {s['files']['predictor']}/metrics.csv."
            ),
        ),
    ]
    t = pd.DataFrame([{"step": k, "seconds": v.get("seconds"), "done": v.get("done", False)} for k, v in steps.items()])
    blocks += [
        ("h2", "Time per step"),
        ("table", t),
        ("p", f"Total {t['seconds'].sum():.0f} s (all attempts of each step; the install is not included)."),
    ]
    blocks += [("h2", "Where everything is"), ("ul", [f"{k}: {v}" for k, v in s["files"].items()])]
    blocks += [
        ("h2", "Reproduce each step by hand"),
        ("code", reproduce_commands(out, cfg, s["target_ms"], default_protocol)),
    ]
    return blocks


def write_report(
    out: str | Path, summary: dict[str, Any], steps: dict[str, Any], default_protocol: dict[str, Any]
) -> tuple[Path, Path]:
    """OUT/report.md and OUT/report.html; `default_protocol`: the timing protocol the demo used when
    its settings name none (the demo passes it: the report does not import the demo)."""
    out = Path(out)
    cfg = read_json(out / "demo.json", "demo settings file")
    blocks = report_blocks(out, summary, steps, cfg, default_protocol)
    write_text(out / "report.md", _md(blocks, out))
    write_text(out / "report.html", _html(blocks, f"dynasearch demo: {summary['task']}"))
    return out / "report.md", out / "report.html"


def _against_grid(s: dict, metric: str) -> list[str]:
    """The answer against the best paper grid point under the target (demo.against_grid)."""
    a = s.get("against_grid")
    if not a:
        return []
    kind = "a paper grid point" if a["answer_is_grid"] else "a per-layer sub-network (not a grid point)"
    g = a.get("grid")
    if g is None:
        return [f"the answer is {kind}; no grid point is predicted under the target"]
    if a["answer_is_grid"] and g["key"] == (s.get("chosen") or {}).get("key"):
        return [f"the answer is {kind}: grid point {g['label']}, the best one under the target"]
    lo, hi = a["metric_diff_95"]
    ratio = a.get("latency_ratio")
    speed = (
        f", {100 * (1 - ratio):.0f}% faster"
        if ratio and ratio < 1
        else (f", {100 * (ratio - 1):.0f}% slower" if ratio else "")
    )
    return [
        f"the answer is {kind}; against the best grid point under the target, {g['label']} ({metric} {_fmt(g[metric])}, "
        f"predicted {_fmt(g['predicted_ms'], 3)} ms): {a['metric_diff']:+.2f} points [{lo:+.2f}, {hi:+.2f}] (paired bootstrap "
        f"95% over {a['examples']} report examples){speed}"
    ]


def _int8_line(s: dict, metric: str) -> list[str]:
    """The answer at onnxruntime int8 beside its fp32 self (demo.int8_of_answer)."""
    q = s.get("int8")
    if not q:
        return []
    lo, hi = q["metric_diff_95"]
    speed = f"{q['speedup']:.2f}x faster" if q.get("speedup") else "latency not measured"
    return [
        f"int8 (onnxruntime dynamic QInt8) of the same config: {metric} {q['metric_int8']:.2f} against fp32 "
        f"{q['metric_fp32']:.2f} ({q['metric_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}], paired, {q['examples']} report "
        f"examples), {_fmt(q.get('int8_ms'), 3)} ms against {_fmt(q.get('fp32_ms'), 3)} ms raw in consecutive runs: "
        f"{speed}"
    ]
