"""Pictures of a search: the front (metric against latency), hypervolume against evaluations, and
the per-layer shapes of the front's configs. PNGs written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dynabert.figures import pyplot, save_figure


def plot_search_front(
    trials: pd.DataFrame,
    front: pd.DataFrame,
    path: str | Path,
    metric: str,
    target_ms: float | None = None,
    answer_key: str | None = None,
    title: str = "",
) -> None:
    """Every searched config (grey: its metric on the ranking examples, the search's own; the legend says so,
    as grey points can sit above the front, which is scored on the report examples), the 12 grid points (orange squares), the front (blue step,
    whole-dev metric where re-scored), measured latencies (red crosses joined to their prediction),
    the target (dashed line) and the answer (circled)."""
    plt = pyplot()
    uniq = trials.drop_duplicates("key")
    fig, ax = plt.subplots(figsize=(7.2, 4.8), dpi=120)
    ax.scatter(
        uniq["predicted_ms"],
        uniq["metric_search"],
        s=10,
        color="0.7",
        label=f"searched ({len(uniq)} configs): metric on the ranking examples",
    )
    grid = uniq[uniq["grid"].fillna("").astype(str) != ""]
    if not grid.empty:
        g = grid.assign(m=grid["metric_full"].fillna(grid["metric_search"]))
        ax.scatter(
            g["predicted_ms"],
            g["m"],
            s=36,
            marker="s",
            color="tab:orange",
            label="paper grid: metric on the report examples",
            zorder=3,
        )
    f = front.sort_values("predicted_ms").assign(m=front["metric_full"].fillna(front["metric_search"]))
    ax.step(f["predicted_ms"], f["m"], where="post", color="tab:blue", lw=1.4, zorder=2)
    ax.scatter(
        f["predicted_ms"],
        f["m"],
        s=18,
        color="tab:blue",
        label="Pareto front (predicted latency): metric on the report examples",
        zorder=3,
    )
    meas = f[f["measured_ms"].notna()]
    if not meas.empty:
        ax.scatter(meas["measured_ms"], meas["m"], s=40, marker="x", color="tab:red", label="measured", zorder=4)
        for _, r in meas.iterrows():
            ax.plot([r["predicted_ms"], r["measured_ms"]], [r["m"], r["m"]], color="tab:red", lw=0.8)
    if target_ms is not None:
        ax.axvline(target_ms, color="k", ls="--", lw=1, label=f"target {target_ms:g} ms")
    if answer_key is not None and (f["key"] == answer_key).any():
        r = f[f["key"] == answer_key].iloc[0]
        x = r["measured_ms"] if pd.notna(r["measured_ms"]) else r["predicted_ms"]
        ax.scatter([x], [r["m"]], s=180, facecolors="none", edgecolors="tab:green", lw=2, label="answer", zorder=5)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel(f"{metric} (dev, %)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_hypervolume(hv: np.ndarray, path: str | Path, ref: tuple[float, float], title: str = "") -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.8), dpi=120)
    ax.plot(np.arange(1, len(hv) + 1), hv, color="tab:blue")
    ax.set_xlabel("distinct configs evaluated")
    ax.set_ylabel("hypervolume (metric points x ms)")
    ax.set_title(title or f"reference point: metric {ref[0]:.2f}, latency {ref[1]:.3g} ms", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_shapes(
    front: pd.DataFrame, num_layers: int, num_heads: int, ffn_size: int, path: str | Path, title: str = ""
) -> None:
    """Two heatmaps, one row per front config (fastest at the top): heads and FFN neurons kept
    per layer (blank: layer dropped)."""
    plt = pyplot()
    f = front.sort_values("predicted_ms")
    heads = np.full((len(f), num_layers), np.nan)
    ffn = np.full((len(f), num_layers), np.nan)
    labels = []
    for i, (_, r) in enumerate(f.iterrows()):
        s = json.loads(r["subnet"])
        for layer, h, n in zip(s["layers"], s["heads"], s["ffn"]):
            heads[i, layer], ffn[i, layer] = h, n
        m = r["metric_full"] if pd.notna(r["metric_full"]) else r["metric_search"]
        labels.append(f"{r['predicted_ms']:.2f} ms, {m:.1f}")
    h = max(2.5, 0.22 * len(f) + 1.4)
    fig, axes = plt.subplots(1, 2, figsize=(2 + 0.5 * num_layers * 2, h), dpi=110, sharey=True)
    for ax, data, vmax, name in (
        (axes[0], heads, num_heads, "heads kept"),
        (axes[1], ffn, ffn_size, "FFN neurons kept"),
    ):
        im = ax.imshow(data, aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
        ax.set_xticks(range(num_layers), [str(i) for i in range(num_layers)])
        ax.set_xlabel("layer")
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
    axes[0].set_yticks(range(len(f)), labels, fontsize=6)
    fig.suptitle(title or "Pareto front configs (predicted latency, metric); blank = layer dropped", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
