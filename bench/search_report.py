"""Writes bench/results/search.md (and search_front.png, search_hypervolume.png) from the JSON files
bench/search_bench.py left in WORK. No timing here.

    .venv/bin/python bench/search_report.py --work WORK
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dynabert.tables import markdown_table  # noqa: E402

OUT = REPO / "bench" / "results"


def load(work: Path, name: str):
    p = work / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def samplers_section(r) -> list[str]:
    """Each seed is its own problem: the runs of this benchmark took the dev subset seeded by the
    sampler's seed (since decoupled: --search-dev-seed), so metrics compare only within a seed;
    reference point and best-known hypervolume are per seed (the union of that seed's runs)."""
    from search.pareto import hypervolume_2d, hypervolume_history

    runs = r["runs"]
    lines = [
        "## Search efficiency: hypervolume against evaluations",
        "",
        f"Metric: accuracy on a seeded subset of {r['search_dev']} SST-2 dev examples; latency: the fitted predictor. Each seed "
        "used its own subset (the subset was seeded by the sampler's seed in these runs; `--search-dev-seed` now sets it "
        "apart), so every seed is its own problem: its reference point is (the worst metric of that seed's runs, 1.01 x "
        "their slowest predicted latency) and its best-known hypervolume is that of the union of its runs' points. One "
        f"accuracy cache for all runs: {r['evaluations_logged']} evaluations logged for {r['distinct_evaluated']} distinct "
        f"(checkpoint, subset, config) triples, {r['evaluations_logged'] - r['distinct_evaluated']} repeated "
        f"({100 * (r['evaluations_logged'] - r['distinct_evaluated']) / max(1, r['evaluations_logged']):.1f}%: an evaluation "
        "interrupted when a first attempt of this phase was stopped and re-run is logged again).",
        "",
        "Evaluations = distinct configs: a run of 200 trials evaluates fewer configs when its sampler proposes configs it "
        "already has (free: answered by the cache, no evaluation). GP ran one seed of 60 trials (its cost per trial grows "
        "with the study; see the last column).",
        "",
    ]
    table = []
    per, curves = {}, {}
    for seed in sorted({x["seed"] for x in runs}):
        rs = [x for x in runs if x["seed"] == seed]
        allm = np.concatenate([np.asarray(x["metric"]) for x in rs])
        alll = np.concatenate([np.asarray(x["latency"]) for x in rs])
        ref = (float(allm.min()), float(alll.max()) * 1.01)
        best = hypervolume_2d(allm, alll, *ref)
        for x in rs:
            first = [k not in set(x["keys"][:i]) for i, k in enumerate(x["keys"])]
            m, t = np.asarray(x["metric"])[first], np.asarray(x["latency"])[first]
            hv = hypervolume_history(m, t, *ref) / best
            reach = np.nonzero(hv >= 0.95)[0]
            at = lambda n, hv=hv: f"{100 * hv[min(n, len(hv)) - 1]:.1f}%"  # noqa: E731
            table.append(
                (
                    x["sampler"],
                    seed,
                    x["trials"],
                    len(m),
                    f"{x['repeat_proposals']} ({100 * x['repeat_proposals'] / x['trials']:.1f}%)",
                    at(50),
                    at(100),
                    f"{100 * hv[-1]:.1f}%",
                    int(reach[0]) + 1 if len(reach) else "not reached",
                )
            )
            per.setdefault(x["sampler"], []).append((hv[-1], int(reach[0]) + 1 if len(reach) else None))
            curves.setdefault(x["sampler"], []).append(hv)
    header = (
        "sampler",
        "seed",
        "trials",
        "evaluations",
        "repeated proposals",
        "% of best-known @50 evals",
        "@100",
        "at the end",
        "evaluations to 95%",
    )
    lines += [markdown_table(header, table), ""]
    table = []
    for name, v in per.items():
        secs = np.median([x["optimize_s"] / x["trials"] for x in runs if x["sampler"] == name])
        hv = [a for a, _ in v]
        reach = [b for _, b in v if b is not None]
        table.append(
            (
                name,
                len(v),
                f"{100 * np.median(hv):.1f}%",
                f"{100 * min(hv):.1f}%",
                f"{100 * max(hv):.1f}%",
                int(np.median(reach)) if len(reach) == len(v) else f"{len(reach)} of {len(v)} runs reach it",
                f"{secs:.2f}",
            )
        )
    header = (
        "sampler",
        "runs",
        "median % of best-known at the end",
        "min",
        "max",
        "median evaluations to 95%",
        "seconds per trial (median run, evaluation included)",
    )
    lines.append(markdown_table(header, table))
    _plot_hv(curves)
    return lines


def _plot_hv(curves) -> None:
    from dynabert.figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6.4, 4.0), dpi=120)
    for i, (name, cs) in enumerate(curves.items()):
        n = min(len(c) for c in cs)
        med = np.median(np.stack([c[:n] for c in cs]), axis=0)
        ax.plot(np.arange(1, n + 1), 100 * med, label=f"{name} (median of {len(cs)})", color=f"C{i}")
        for c in cs:
            ax.plot(np.arange(1, len(c) + 1), 100 * c, color=f"C{i}", alpha=0.2, lw=0.8)
    ax.axhline(95, color="k", ls="--", lw=0.8)
    ax.set_xlabel("evaluations (distinct configs)")
    ax.set_ylabel("% of best-known hypervolume (per seed)")
    ax.set_ylim(50, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, OUT / "search_hypervolume.png")


def perlayer_section(r) -> list[str]:
    from search.pareto import pareto_mask

    lines = ["## Per-layer against grid, on measured latency of extracted models", ""]
    for label, x in r.items():
        if label.startswith("_"):
            continue
        rows = x["rows"]
        g = [q for q in rows if q["grid"]]
        f = [q for q in rows if q["on_front"] and not q["grid"]]
        gm, gl = np.array([q["metric_full"] for q in g]), np.array([q["measured_ms"] for q in g])
        gfront = [q for q, k in zip(g, pareto_mask(gm, gl)) if k]
        allp = [q for q in rows if q["on_front"]]
        lines += [
            f"### Model trained {label} ({x['run']})",
            "",
            f"{len(f)} per-layer front configs (not grid points) and the 12 grid points, timed together in one anchored run "
            f"({x['measure_s']:.0f} s). Metric: accuracy on the whole SST-2 dev split (872).",
            "",
        ]
        table = []
        for q in sorted(gfront, key=lambda q: q["measured_ms"]):
            better = [p for p in allp if p["metric_full"] >= q["metric_full"] and p["key"] != q["key"]]
            faster = [p for p in allp if p["measured_ms"] <= q["measured_ms"] and p["key"] != q["key"]]
            fb = min(better, key=lambda p: p["measured_ms"]) if better else None
            ff = max(faster, key=lambda p: p["metric_full"]) if faster else None
            saved = f"{100 * (1 - fb['measured_ms'] / q['measured_ms']):+.1f}%" if fb else "none"
            gain = f"{ff['metric_full'] - q['metric_full']:+.2f}" if ff else "none"
            both = fb and ff
            table.append(
                (
                    q["grid"],
                    f"{q['metric_full']:.2f}",
                    f"{q['measured_ms']:.2f}",
                    f"{fb['measured_ms']:.2f}" if both else (fb["measured_ms"] if fb else "-"),
                    saved,
                    f"{ff['metric_full']:.2f}" if both else (ff["metric_full"] if ff else "-"),
                    gain,
                )
            )
        header = (
            "grid point on the grid front",
            "accuracy",
            "measured ms",
            "fastest per-layer config at >= that accuracy: ms",
            "latency saved",
            "best per-layer accuracy at <= that latency",
            "accuracy gained",
        )
        lines.append(markdown_table(header, table))
        pm = np.array([q["predicted_ms"] for q in rows])
        mm = np.array([q["measured_ms"] for q in rows])
        err = np.abs(pm / mm - 1)
        lines += [
            "",
            f"Predicted against measured over these {len(rows)} configs: MAPE {100 * err.mean():.2f}%, "
            f"{100 * (err <= 0.05).mean():.0f}% within 5%, speed index of the run "
            f"{np.nanmedian([q['speed_index'] or np.nan for q in rows]):.3f}.",
            "",
        ]
    return lines


def targets_section(r) -> list[str]:
    table = []
    ok = 0
    for a in r["answers"]:
        meets = a["remeasured_ms"] <= a["target_ms"]
        ok += meets
        table.append(
            (
                a["target_ms"],
                f"{a['key']} ({len(a['subnet']['layers'])} layers)",
                f"{a['metric_full']:.2f}",
                f"{a['predicted_ms']:.2f}",
                f"{a['measured_ms']:.2f}",
                f"{a['measured_raw_ms']:.2f}",
                f"{a['remeasured_ms']:.2f}",
                "yes" if meets else "NO",
            )
        )
    header = (
        "target ms",
        "answer",
        "accuracy (dev)",
        "predicted ms",
        "measured ms (corrected)",
        "raw ms",
        "re-measured ms",
        "meets target when re-measured",
    )
    lines = ["## Target answers (verified)", "", markdown_table(header, table)]
    lines += ["", f"{ok} of {len(r['answers'])} returned configs meet their target when re-measured.", ""]
    return lines


def cost_section(r) -> list[str]:
    t = r["timing"]
    q = sorted(r["query_s"])
    return [
        "## Cost of a 200-trial search",
        "",
        f"`dynasearch {r['command'].split('dynasearch.cli ', 1)[-1]}` (exit status {r['rc']}): **{r['wall_s']:.0f} s wall** in all "
        f"(imports, model and dev loading, study, re-scoring, plots and verification included).",
        "",
        markdown_table(
            ("part", "seconds"),
            [
                (
                    f"accuracy evaluation ({t['evaluations_this_run']} evaluations, {t['cache_hits_this_run']} cache hits)",
                    f"{t['evaluation_s']:.1f}",
                ),
                ("latency prediction", f"{t['prediction_s']:.1f}"),
                ("sampler + Optuna storage (SQLite)", f"{t['sampler_and_storage_s']:.1f}"),
                ("measurement (verification)", f"{t['measurement_s']:.1f}"),
            ],
        ),
        "",
        f"`dynasearch query RESULTS --target-latency ...` wall time over 5 processes: median {q[2]:.2f} s "
        f"(min {q[0]:.2f}, max {q[-1]:.2f}); target < 2 s.",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    work = Path(a.work)
    parts = {n: load(work, n) for n in ("perlayer", "targets", "cost")}
    pieces = [json.loads(p.read_text()) for p in sorted(work.glob("samplers*.json"))]
    if pieces:  # parallel parts of the samplers phase share one accuracy cache: merge their runs
        last = max(pieces, key=lambda p: p["evaluations_logged"])  # the cache's totals when the last part ended
        parts["samplers"] = dict(last, runs=[r for p in pieces for r in p["runs"]])
        for p in pieces[:-1]:
            parts[f"samplers-part-{id(p)}"] = p
    metas = [p["_meta"] for p in parts.values() if p]
    head = [
        "# Search benchmark (issue 8)",
        "",
        f"Machine: {metas[0]['cpu']}; commit(s) {', '.join(sorted({m['commit'] for m in metas}))}; "
        f"runs started {', '.join(m['started'] for m in metas)}. Written by `bench/search_report.py` from the JSON files of "
        "`bench/search_bench.py` (phases and their arguments below).",
        "",
    ]
    body = []
    if parts["cost"]:
        body += cost_section(parts["cost"])
    if parts["targets"]:
        body += targets_section(parts["targets"])
    if parts["perlayer"]:
        body += perlayer_section(parts["perlayer"])
    if parts.get("samplers"):
        body += samplers_section(parts["samplers"])
    body += ["## Phases run", ""] + [
        f"- `{m['phase']}`: {m['seconds']:.0f} s, load average before {m['load_before'][0]:.1f}, "
        f"arguments {json.dumps({k: v for k, v in m['args'].items() if k not in ('work',)})}"
        for m in metas
    ]
    (OUT / "search.md").write_text("\n".join(head + body) + "\n")
    if (work / "cost" / "front.png").is_file():
        shutil.copyfile(work / "cost" / "front.png", OUT / "search_front.png")
        shutil.copyfile(work / "cost" / "shapes.png", OUT / "search_shapes.png")
    print(f"wrote {OUT / 'search.md'}")


if __name__ == "__main__":
    main()
