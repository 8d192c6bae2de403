"""Evaluate sub-networks on a dev set: a tidy table (one row per sub-network) and a heatmap.

Table schema (CSV columns): key, width, depth (NaN for a non-grid sub-network), layers, heads, ffn
(comma-joined per kept layer), params (total parameters of the extracted model), encoder_params,
one column per task metric (percent), seconds (wall time of that sub-network's evaluation), examples.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checks import positive_int
from .data import Encoded, encode, eval_batches, load_tokenizer
from .errors import DataError
from .figures import pyplot, save_figure
from .metrics import compute_metrics
from .modeling import DynaBertForSequenceClassification
from .subnet import BackboneShape, SubnetConfig, count_params
from .tasks import TaskSpec, load_split


class DevSet:
    """A tokenised dev split, cut once into length-sorted batches reused by every sub-network.

    selection: which examples it holds, for people ("all", or "subset-N-seedS");
    digest: what a score depends on in it (every token id, token type and label, in order, and the
    length): two dev sets with one digest give every sub-network the same score, so caches key by it;
    n: how many; max_seq_length: the tokenisation length (None when built from an Encoded directly)."""

    def __init__(self, enc: Encoded, batch_size: int = 128, selection: str = "all", max_seq_length: int | None = None):
        self.batches, self.order = eval_batches(enc, batch_size)
        self.labels = enc.labels.numpy()
        self.n = len(enc)
        self.selection = selection
        self.max_seq_length = max_seq_length
        self.digest = _encoded_digest(enc, max_seq_length)

    def to(self, device) -> DevSet:
        self.batches = [b.to(device) for b in self.batches]
        return self


def _encoded_digest(enc: Encoded, max_seq_length: int | None) -> str:
    h = hashlib.sha256(f"len={max_seq_length};pad={enc.pad_id};n={len(enc)};".encode())
    for ids, types in zip(enc.input_ids, enc.token_type_ids):
        h.update(np.asarray(ids, dtype=np.int64).tobytes() + b"|" + np.asarray(types, dtype=np.int64).tobytes() + b";")
    h.update(np.ascontiguousarray(enc.labels.numpy()).tobytes() + str(enc.labels.dtype).encode())
    return h.hexdigest()[:16]


def seeded_subset(n: int, k: int, seed: int) -> list[int]:
    """k of range(n) chosen by a permutation seeded with `seed`, in ascending order (not the first k:
    files may be sorted by label)."""
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


def load_dev_set(
    task: TaskSpec,
    tokenizer_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    dev_file: str | Path | None = None,
    max_seq_length: int = 128,
    subset: int | None = None,
    seed: int = 0,
    batch_size: int = 128,
) -> DevSet:
    """The task's dev split tokenised once (tokenizer of `tokenizer_dir`). subset=N keeps N examples
    chosen by `seeded_subset(len, N, seed)` (N >= the split's size: all of them)."""
    for name, v in (("subset", subset), ("max_seq_length", max_seq_length), ("batch_size", batch_size)):
        if v is not None:
            positive_int(name, v, DataError, rule="an integer >= 1")
    data = load_split(task, "dev", data_dir, dev_file)
    if len(data) == 0:
        raise DataError(f"the dev set of task {task.name} is empty ({data.source})")
    selection = "all"
    if subset is not None and subset < len(data):
        data = data.subset(seeded_subset(len(data), subset, seed))
        selection = f"subset-{subset}-seed{seed}"
    enc = encode(data, load_tokenizer(tokenizer_dir), max_seq_length, task.is_regression)
    return DevSet(enc, batch_size, selection, max_seq_length)


@dataclass
class DevParts:
    """A dev split cut for a search: `rank` (the examples configs are ranked on, optionally cut into
    `chunks` for racing) and `report` (the examples the front is reported on). `held_out`: True when
    report and rank share no example (the winner's curse stays out of the reported front)."""

    rank: DevSet
    chunks: list[DevSet]
    report: DevSet
    held_out: bool
    dev_examples: int = 0  # examples of the whole dev split
    report_index: list[int] = field(default_factory=list)  # the report examples' indices in the split, ascending
    source: str = ""  # the dev file read


def index_sha256(idx: Sequence[int]) -> str:
    """The sha256 of a set of example indices: of their ascending decimal numbers joined by commas (ASCII),
    e.g. "0,3,7". A bundle records its report examples' this way (`DevParts.report_index`)."""
    return hashlib.sha256(",".join(str(int(i)) for i in sorted(idx)).encode("ascii")).hexdigest()


def _take(enc: Encoded, idx: Sequence[int]) -> Encoded:
    return Encoded(
        [enc.input_ids[i] for i in idx], [enc.token_type_ids[i] for i in idx], enc.labels[list(idx)], enc.pad_id
    )


def _cut(
    n: int, rank: int | None, rank_seed: int, report_subset: int | None, report_seed: int
) -> tuple[list[int], list[int], str, str, bool]:
    """(rank indices, report indices, their selections, held out) of a dev split of n examples: see
    `load_dev_parts`."""
    if rank is not None and rank < n:
        rank_idx = seeded_subset(n, rank, rank_seed)
        chosen = set(rank_idx)
        report_idx = [i for i in range(n) if i not in chosen]
        rank_sel, report_sel, held_out = f"subset-{rank}-seed{rank_seed}", f"rest-{len(report_idx)}", True
    else:
        rank_idx, report_idx = list(range(n)), list(range(n))
        rank_sel, report_sel, held_out = "all", "all", False
    if report_subset is not None and report_subset < len(report_idx):
        report_idx = [report_idx[i] for i in seeded_subset(len(report_idx), report_subset, report_seed)]
        report_sel = (
            f"{report_sel}-subset-{report_subset}-seed{report_seed}"
            if held_out
            else f"subset-{report_subset}-seed{report_seed}"
        )
    return rank_idx, report_idx, rank_sel, report_sel, held_out


def report_indices(
    n: int, rank: int | None, rank_seed: int = 0, report_subset: int | None = None, report_seed: int = 1
) -> list[int]:
    """The indices (ascending) of the report examples `load_dev_parts` cuts from a dev split of n examples
    with these settings: what a search.json's `report_dev` (search_dev, search_dev_seed, rescore_dev,
    rescore_seed) replays; `index_sha256` of them is its sha256."""
    return _cut(n, rank, rank_seed, report_subset, report_seed)[1]


def load_dev_parts(
    task: TaskSpec,
    tokenizer_dir: str | Path,
    *,
    rank: int | None,
    rank_seed: int = 0,
    report_subset: int | None = None,
    report_seed: int = 1,
    chunk_fractions: Sequence[float] | None = None,
    data_dir: str | Path | None = None,
    dev_file: str | Path | None = None,
    max_seq_length: int = 128,
    batch_size: int = 128,
) -> DevParts:
    """The dev split tokenised once and cut: rank = `seeded_subset(len, rank, rank_seed)` (None or
    >= the split: all of it), report = the rest (when rank is the whole split: the same examples),
    optionally a seeded subset of it (`report_subset`, seed `report_seed`); chunks: the rank part in
    a seeded order cut at the cumulative `chunk_fractions` (None: one chunk, the rank part itself)."""
    for name, v in (("rank", rank), ("report_subset", report_subset), ("max_seq_length", max_seq_length)):
        if v is not None:
            positive_int(name, v, DataError, rule="an integer >= 1")
    data = load_split(task, "dev", data_dir, dev_file)
    n = len(data)
    if n == 0:
        raise DataError(f"the dev set of task {task.name} is empty ({data.source})")
    enc = encode(data, load_tokenizer(tokenizer_dir), max_seq_length, task.is_regression)
    rank_idx, report_idx, rank_sel, report_sel, held_out = _cut(n, rank, rank_seed, report_subset, report_seed)
    report_set = DevSet(_take(enc, report_idx) if report_sel != "all" else enc, batch_size, report_sel, max_seq_length)
    if not held_out:  # ranked on what is reported (a subset of it when report_subset is given)
        rank_idx, rank_sel = report_idx, report_sel
    rank_set = DevSet(_take(enc, rank_idx), batch_size, rank_sel, max_seq_length) if held_out else report_set
    chunks = [rank_set]
    if chunk_fractions is not None and len(rank_idx) >= 2 * len(chunk_fractions):
        # A seeded order, not the file's: files may be sorted by label (the tweets corpus is).
        g = torch.Generator().manual_seed(rank_seed + 2)
        order = [rank_idx[i] for i in torch.randperm(len(rank_idx), generator=g).tolist()]
        chunks, start = [], 0
        for i, k in enumerate(chunk_sizes(len(order), chunk_fractions)):
            idx = sorted(order[start : start + k])
            start += k
            chunks.append(DevSet(_take(enc, idx), batch_size, f"{rank_sel}-chunk{i}-{k}", max_seq_length))
    return DevParts(rank_set, chunks, report_set, held_out, n, list(report_idx), str(data.source))


def chunk_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Sizes of the chunks n examples are cut into at the cumulative `fractions` (they add up to n;
    no empty chunk)."""
    sizes, done = [], 0
    for i in range(len(fractions)):
        k = n - done if i == len(fractions) - 1 else round(n * sum(fractions[: i + 1])) - done
        if k > 0:
            sizes.append(k)
            done += k
    return sizes or [n]


@torch.inference_mode()
def predict(
    model: DynaBertForSequenceClassification, dev: DevSet, subnet: SubnetConfig | None, bf16: bool = False
) -> np.ndarray:
    """Logits in the original example order. bf16: matrix products in bfloat16 (autocast), about
    twice as fast on CPUs with AVX512-BF16 / AMX, for searches that score hundreds of sub-networks."""
    was_training = model.training
    model.eval()
    if subnet is not None:  # a sub-network wider than a layer physically is (an export) would crash in the matmuls
        from .extract import check_fits

        check_fits(model, subnet)
    active = subnet.active_spec() if subnet is not None else None
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        out = [
            model(b.input_ids, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids, active=active).logits
            for b in dev.batches
        ]
    model.train(was_training)
    sorted_logits = torch.cat(out).float().cpu().numpy()
    logits = np.empty_like(sorted_logits)
    logits[np.asarray(dev.order)] = sorted_logits
    return logits


def score_subnet(
    model: DynaBertForSequenceClassification,
    dev: DevSet,
    subnet: SubnetConfig | None,
    metrics: Sequence[str],
    bf16: bool = False,
) -> dict[str, float]:
    """Metric name -> percent of one sub-network (None: the model as built) on `dev`: what a search
    calls once per candidate."""
    logits = predict(model, dev, subnet, bf16)
    return {k: float(v) for k, v in compute_metrics(metrics, logits, dev.labels).items()}


def prediction_spread(logits) -> dict[str, float]:
    """Classification: how many classes the sub-network predicts and the share of the most predicted
    one (1.0 = a one-class model, however good its accuracy looks on a skewed dev set)."""
    arr = np.asarray(logits)
    if arr.ndim != 2 or arr.shape[1] < 2 or not len(arr):
        return {}
    counts = np.bincount(arr.argmax(1), minlength=arr.shape[1])
    return {
        "classes_predicted": int((counts > 0).sum()),
        "top_class_share": round(float(counts.max() / counts.sum()), 4),
    }


def majority_share(labels) -> float | None:
    """Share of the most frequent dev label: the accuracy of always predicting it (None: regression)."""
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu" or not len(arr):
        return None
    return float(np.bincount(arr).max() / len(arr))


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
        scores = {k: float(v) for k, v in compute_metrics(metrics, logits, dev.labels).items()}
        spread = prediction_spread(logits)
        sub = as_built if sub is None else sub
        secs = time.perf_counter() - t0
        p = count_params(shape, sub)
        rows.append(
            {
                "key": sub.key,
                "width": math.nan if w is None else w,
                "depth": math.nan if d is None else d,
                "layers": ",".join(map(str, sub.layers)),
                "heads": ",".join(map(str, sub.heads)),
                "ffn": ",".join(map(str, sub.ffn)),
                "params": p["total"],
                "encoder_params": p["encoder"],
                **scores,
                **spread,
                "seconds": round(secs, 4),
                "examples": dev.n,
            }
        )
    return pd.DataFrame(rows)


def heatmap(table, metric: str, path: str | Path, title: str = "") -> None:
    """Width x depth heatmap of one metric (grid rows only), written atomically as PNG."""
    plt = pyplot()
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
    save_figure(fig, path, dpi=110)


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
    dev_subset: int | None = None  # score a seeded subset of dev (large dev sets on a CPU); None: all of it
    dev_seed: int = 1  # the subset's seed (1: the selection `search --rescore-dev` re-scores on)
    # Score the examples a `search --search-dev N` (seed `exclude_seed`) reports on: dev less its N
    # ranking examples (then dev_subset is a seeded subset of that rest, as `--rescore-dev` takes it).
    exclude_subset: int | None = None
    exclude_seed: int = 0


def evaluate_run(inputs: EvalInputs):
    """Score the grid (or one sub-network) on dev; write <stem>.csv and <stem>.png. Returns (table, csv, png)."""
    from .backbone import load_model
    from .data import check_max_length
    from .runs import read_run_record, resolve_run
    from .subnet import paper_grid

    info = resolve_run(inputs.run, inputs.stage)
    task = inputs.task
    if task.labels == ():  # a csv task's label set is fixed by its training run
        if info.task is None or info.task.name != task.name:
            raise DataError("evaluating a csv task needs a training run (RUN/run.json records its label set)")
        task = info.task
    model_dir = info.model_dir
    model = load_model(model_dir)
    if model.config.num_labels != task.num_labels:
        raise DataError(
            f"model {model_dir} has {model.config.num_labels} output(s) but task {task.name} needs {task.num_labels}"
        )
    # An exported sub-network is a backbone of its own: the grid and --width/--depth are relative to
    # its own shape, and need one width for all its layers; an explicit subnet must fit each layer.
    # Both are refused here, before the dev set is read.
    from .extract import check_fits, check_uniform

    if inputs.subnet is None:
        check_uniform(model, "the paper grid's width/depth multipliers")
    else:
        if inputs.subnet[1] is not None:
            check_uniform(model, "width/depth multipliers")
        check_fits(model, inputs.subnet[0])
    max_len = inputs.max_seq_length if inputs.max_seq_length is not None else (info.max_seq_length or 128)
    check_max_length(max_len, model.config)
    data_dir, dev_file = inputs.data_dir, inputs.dev_file
    if (
        data_dir is None
        and dev_file is None
        and info.run_dir is not None
        and info.task is not None
        and info.task.name == task.name
    ):
        recorded = (read_run_record(info.run_dir) or {}).get("data", {})  # the run's own data, as `search RUN` uses it
        data_dir, dev_file = recorded.get("data_dir"), recorded.get("dev_file")
    if inputs.exclude_subset is not None:
        dev = load_dev_parts(
            task,
            model_dir,
            rank=inputs.exclude_subset,
            rank_seed=inputs.exclude_seed,
            report_subset=inputs.dev_subset,
            report_seed=inputs.dev_seed,
            data_dir=data_dir,
            dev_file=dev_file,
            max_seq_length=max_len,
            batch_size=inputs.batch_size,
        ).report
    else:
        dev = load_dev_set(
            task,
            model_dir,
            data_dir=data_dir,
            dev_file=dev_file,
            max_seq_length=max_len,
            batch_size=inputs.batch_size,
            subset=inputs.dev_subset,
            seed=inputs.dev_seed,
        )
    shape = BackboneShape.from_config(model.config)
    if inputs.subnet is None:
        plan = [(w, d, s) for w, d, s in paper_grid(shape)]
        stem = f"{task.name}-grid"
    else:
        sub, point = inputs.subnet
        plan = [(point[0] if point else None, point[1] if point else None, sub)]
        stem = f"{task.name}-{sub.key}"
    table = evaluate_subnets(model, dev, plan, task.metrics, inputs.bf16)
    share = None if task.is_regression else majority_share(dev.labels)
    if share is not None:  # the accuracy of always predicting the most frequent class: the floor to beat
        table["dev_majority_share"] = round(share, 4)
    out = inputs.out_dir or Path(inputs.run) / "eval"
    title = f"{task.name} dev {task.metrics[0]} ({model_dir.name})"
    csv_path, png_path = write_table(table, out, stem, task.metrics[0], title)
    return table, csv_path, png_path
