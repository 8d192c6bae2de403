"""Evaluate sub-networks on a dev set: a tidy table (one row per sub-network) and a heatmap.

Table schema (CSV columns): key, width, depth (NaN for a non-grid sub-network), layers, heads, ffn
(comma-joined per kept layer), params (total parameters of the extracted model), encoder_params,
one column per task metric (percent), seconds (wall time of that sub-network's evaluation), examples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data import Encoded, eval_batches
from .metrics import compute_metrics
from .modeling import DynaBertForSequenceClassification
from .subnet import BackboneShape, SubnetConfig, count_params
from .tasks import TaskSpec


class DevSet:
    """A tokenised dev split, cut once into length-sorted batches reused by every sub-network."""

    def __init__(self, enc: Encoded, batch_size: int = 128):
        self.batches, self.order = eval_batches(enc, batch_size)
        self.labels = enc.labels.numpy()
        self.n = len(enc)

    def to(self, device) -> "DevSet":
        self.batches = [b.to(device) for b in self.batches]
        return self


@torch.inference_mode()
def predict(model: DynaBertForSequenceClassification, dev: DevSet, subnet: SubnetConfig | None,
            bf16: bool = False) -> np.ndarray:
    """Logits in the original example order. bf16: matrix products in bfloat16 (autocast), about
    twice as fast on CPUs with AVX512-BF16 / AMX, for searches that score hundreds of sub-networks."""
    was_training = model.training
    model.eval()
    active = subnet.active_spec() if subnet is not None else None
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        out = [model(b.input_ids, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids, active=active).logits
               for b in dev.batches]
    model.train(was_training)
    sorted_logits = torch.cat(out).float().cpu().numpy()
    logits = np.empty_like(sorted_logits)
    logits[np.asarray(dev.order)] = sorted_logits
    return logits


def evaluate_subnets(
    model: DynaBertForSequenceClassification,
    dev: DevSet,
    subnets: Sequence[tuple[float | None, float | None, SubnetConfig]],
    metrics: Sequence[str],
    bf16: bool = False,
):
    """One row per (width, depth, subnet); returns a pandas DataFrame with the schema above."""
    import pandas as pd

    shape = BackboneShape.from_config(model.config)
    rows = []
    cfg = model.config
    as_built = SubnetConfig(tuple(range(cfg.num_hidden_layers)), tuple(cfg.layer_heads), tuple(cfg.layer_ffn))
    for w, d, sub in subnets:
        t0 = time.perf_counter()
        logits = predict(model, dev, sub, bf16)  # sub None: the model as built (e.g. an extracted one)
        sub = as_built if sub is None else sub
        scores = compute_metrics(metrics, logits, dev.labels)
        secs = time.perf_counter() - t0
        p = count_params(shape, sub)
        rows.append({
            "key": sub.key, "width": math.nan if w is None else w, "depth": math.nan if d is None else d,
            "layers": ",".join(map(str, sub.layers)), "heads": ",".join(map(str, sub.heads)),
            "ffn": ",".join(map(str, sub.ffn)), "params": p["total"], "encoder_params": p["encoder"],
            **scores, "seconds": round(secs, 4), "examples": dev.n,
        })
    return pd.DataFrame(rows)


def heatmap(table, metric: str, path: str | Path, title: str = "") -> None:
    """Width x depth heatmap of one metric (grid rows only), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    from .io import atomic_file

    grid = table.dropna(subset=["width", "depth"])
    if grid.empty:
        return
    piv = grid.pivot_table(index="depth", columns="width", values=metric).sort_index(ascending=False)
    piv = piv[sorted(piv.columns, reverse=True)]
    fig, ax = plt.subplots(figsize=(1.4 * len(piv.columns) + 2, 1.0 * len(piv.index) + 1.6))
    im = ax.imshow(piv.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(piv.columns)), [f"{c:g}" for c in piv.columns])
    ax.set_yticks(range(len(piv.index)), [f"{r:g}" for r in piv.index])
    ax.set_xlabel("width multiplier")
    ax.set_ylabel("depth multiplier")
    for (r, c), v in np.ndenumerate(piv.values):
        ax.text(c, r, f"{v:.1f}", ha="center", va="center", color="w" if v < np.nanmean(piv.values) else "k")
    ax.set_title(title or metric)
    fig.colorbar(im, ax=ax, label=metric)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_table(table, out_dir: str | Path, stem: str, metric: str, title: str = "") -> tuple[Path, Path]:
    from .io import write_text

    out = Path(out_dir)
    csv_path, png_path = out / f"{stem}.csv", out / f"{stem}.png"
    write_text(csv_path, table.to_csv(index=False))
    heatmap(table, metric, png_path, title)
    return csv_path, png_path


@dataclass(frozen=True)
class EvalInputs:
    """What `evaluate_run` scores: a run (or model dir), a task's dev split, grid or one sub-network."""

    run: str | Path
    task: TaskSpec
    data_dir: str | Path | None = None
    dev_file: str | Path | None = None
    stage: str | None = None  # a finished stage of the run; None: its latest
    max_seq_length: int | None = None  # None: the run's, else 128
    batch_size: int = 128
    subnet: tuple | None = None  # (SubnetConfig, (width, depth) or None); None: the paper grid
    out_dir: Path | None = None  # None: RUN/eval
    bf16: bool = False  # bfloat16 matrix products (faster on recent CPUs; metrics may move by ~0.1 point)


def evaluate_run(inputs: EvalInputs):
    """Score the grid (or one sub-network) on dev; write <stem>.csv and <stem>.png. Returns (table, csv, png)."""
    import json

    from .backbone import load_model
    from .data import check_max_length, encode, load_tokenizer
    from .errors import DataError
    from .subnet import paper_grid
    from .tasks import load_split
    from .train import run_model_dir, run_task

    task = inputs.task
    if task.labels == ():  # a csv task's label set is fixed by its training run
        saved = run_task(inputs.run)
        if saved is None or saved.name != task.name:
            raise DataError("evaluating a csv task needs a training run (RUN/run.json records its label set)")
        task = saved
    model_dir = run_model_dir(inputs.run, inputs.stage)
    model = load_model(model_dir)
    if model.config.num_labels != task.num_labels:
        raise DataError(f"model {model_dir} has {model.config.num_labels} output(s) but task {task.name} needs {task.num_labels}")
    max_len = inputs.max_seq_length
    run_json = Path(inputs.run) / "run.json"
    if max_len is None:
        max_len = json.loads(run_json.read_text())["config"]["max_seq_length"] if run_json.is_file() else 128
    check_max_length(max_len, model.config)
    dev_data = load_split(task, "dev", inputs.data_dir, inputs.dev_file)
    if len(dev_data) == 0:
        raise DataError(f"the dev set of task {task.name} is empty ({dev_data.source})")
    enc = encode(dev_data, load_tokenizer(model_dir), max_len, task.is_regression)
    dev = DevSet(enc, inputs.batch_size)
    shape = BackboneShape.from_config(model.config)
    if inputs.subnet is None:
        plan = [(w, d, s) for w, d, s in paper_grid(shape)]
        stem = f"{task.name}-grid"
    else:
        sub, point = inputs.subnet
        plan = [(point[0] if point else None, point[1] if point else None, sub)]
        stem = f"{task.name}-{sub.key}"
    table = evaluate_subnets(model, dev, plan, task.metrics, inputs.bf16)
    out = inputs.out_dir or Path(inputs.run) / "eval"
    title = f"{task.name} dev {task.metrics[0]} ({model_dir.name})"
    csv_path, png_path = write_table(table, out, stem, task.metrics[0], title)
    return table, csv_path, png_path
