"""Issue 2 benchmark: latency of the paper's 12 grid sub-networks of the packaged MiniLM-L6 next to
the full model's, onnxruntime CPU, batch 1 and 8, sequence length 128, with the issue-4 protocol
(extracted models, 1 intra-op thread, spinning off, interleaved rounds).

    flock /tmp/dynasearch-cpu.lock .venv/bin/python bench/grid_latency.py
writes bench/results/grid_latency.md and bench/results/latency_records/grid.csv.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results"


def main() -> None:
    from dynabert.space import SearchSpace
    from dynabert.subnet import count_flops, count_params, paper_grid
    from dynabert.tables import markdown_table
    from predictors import BackendSettings, Protocol, measure, read_records
    from predictors.measure import load_shape

    shape = load_shape(None)
    grid = paper_grid(shape)
    subnets = list({s.key: s for _, _, s in grid}.values())
    assert len(subnets) == 12 and any(s == SearchSpace.default(shape).grid()[0] for s in subnets)
    path = OUT / "latency_records" / "grid.csv"
    prot = Protocol(rel_ci=0.005, min_runs=10, max_runs=60, max_seconds=6.0, warmup_max_seconds=2.0, seed=0)
    t0 = time.time()
    settings = [BackendSettings(backend="onnxruntime", threads=1, batch=b, seq_len=128) for b in (1, 8)]
    measure(shape, subnets, settings, path, prot, sampler="grid", onnx_cache=REPO / "bench" / ".cache" / "onnx")
    seconds = time.time() - t0
    df = read_records(path)
    df = df[df["status"] == "ok"]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    first = df.iloc[0]
    lines = [
        "# Grid sub-network latency (issue 2 benchmark)",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit `{commit}` (measuring code), "
        f"measured in {seconds:.0f} s (resumed runs count only their own part)",
        f"- machine: {first['cpu_model']}, {first['cpu_cores']} cores, {first['os']}; onnxruntime {first['onnxruntime_version']}, "
        f"CPUExecutionProvider, intra_op_num_threads=1, spinning off, float32; fingerprint `{first['fingerprint']}`",
        "- backbone: packaged MiniLM-L6 (6 layers, hidden 384, 12 heads x 32, FFN 1536); each grid point EXTRACTED "
        "(physically smaller model) and exported to ONNX; random weights (latency depends on the shape only)",
        f"- protocol: warm-up until stable, interleaved random-order rounds, stop at a 95% CI of the median within "
        f"+-{prot.rel_ci:.1%} (>= {prot.min_runs} runs) or {prot.max_runs} runs / {prot.max_seconds:.0f} s; sequence length 128, "
        "all tokens real",
        "",
    ]
    summary = []
    for batch in (1, 8):
        d = df[df["batch"] == batch].set_index("key")
        full_key = next(s.key for w, dd, s in grid if w == 1.0 and dd == 1.0)
        full = d.loc[full_key]
        lines += [
            f"## Batch {batch}",
            "",
        ]
        ratios, table = [], []
        for w, dd, s in grid:
            r = d.loc[s.key]
            fl = count_flops(shape, s, batch, 128)
            fr = fl / count_flops(shape, subnets_full(shape), batch, 128)
            lr = r["median_ms"] / full["median_ms"]
            ratios.append((fr, lr))
            table.append(
                (
                    w,
                    dd,
                    s.depth,
                    s.heads[0],
                    s.ffn[0],
                    f"{count_params(shape, s)['total'] / 1e6:.1f}",
                    f"{fl / 1e9:.3f}",
                    f"{r['median_ms']:.3f}",
                    f"{r['p90_ms']:.3f}",
                    f"{r['cv']:.1%}",
                    int(r["n_runs"]),
                    f"{fr:.3f}",
                    f"{lr:.3f}",
                    f"{lr / fr:.2f}",
                )
            )
        header = (
            "width",
            "depth",
            "layers",
            "heads",
            "FFN",
            "params (M)",
            "GFLOPs",
            "median ms",
            "p90 ms",
            "CV",
            "runs",
            "FLOPs ratio",
            "latency ratio",
            "latency / FLOPs ratio",
        )
        lines.append(markdown_table(header, table))
        fr_arr, lr_arr = np.array(ratios).T
        slope, intercept = np.polyfit(fr_arr, lr_arr, 1)
        dev = np.abs(lr_arr / fr_arr - 1)
        corr = float(np.corrcoef(fr_arr, lr_arr)[0, 1])
        smallest = int(np.argmin(fr_arr))
        faster = int(sum(1 for f, lat in ratios if f < 1 and lat < 1))
        summary.append((batch, corr, slope, intercept, dev.mean(), dev.max(), faster, len(ratios) - 1))
        lines += [
            "",
            f"Latency ratio vs FLOPs ratio: Pearson r = {corr:.4f}; least-squares fit latency_ratio = "
            f"{slope:.3f} x FLOPs_ratio + {intercept:.3f}; |latency ratio / FLOPs ratio - 1| mean {dev.mean():.1%}, "
            f"max {dev.max():.1%}. Smallest grid point (width 0.25, depth 0.5): {fr_arr[smallest]:.3f} of the FLOPs, "
            f"{lr_arr[smallest]:.3f} of the latency ({1 / lr_arr[smallest]:.1f}x faster than the full model).",
            "",
        ]
    lines += ["## How close to proportional to FLOPs", ""]
    for batch, corr, _slope, intercept, mean_dev, max_dev, faster, others in summary:
        lines.append(
            f"- batch {batch}: {faster} of the {others} smaller sub-networks are faster than the full model; latency tracks FLOPs "
            f"(r = {corr:.3f}), with a fixed part (intercept {intercept:.3f} of the full model's latency: embeddings, "
            f"classifier, per-operator overhead) that makes the smallest sub-networks relatively slower than their FLOPs "
            f"suggest (mean deviation from proportional {mean_dev:.0%}, worst {max_dev:.0%})."
        )
    lines += ["", "Raw records: `bench/results/latency_records/grid.csv` (dynasearch records format).", ""]
    (OUT / "grid_latency.md").write_text("\n".join(lines))
    print("\n".join(lines))


def subnets_full(shape):
    from dynabert.subnet import SubnetConfig

    return SubnetConfig.full(shape)


if __name__ == "__main__":
    main()
