"""Run directories of `dynasearch train`: what they hold, read defensively (no torch import).

    RUN/run.json     task, backbone, data files, TrainConfig (written once, at the start)
    RUN/state.json   finished stages, dev scores, throughput, the latest model dir (after each stage)
    RUN/<stage dir>/ a model dir per finished stage, with stage.json (which stage produced it, its
                     dev scores, and the run's task and configuration)

`resolve_run` accepts a run directory OR a plain model directory and says which model to load and
what is known about it; `model_digest` is a cache key for a model's weights; `is_dynabert_trained`
tells whether a model's sub-networks were trained at all. Every run file goes through
`io.read_json`: a broken file is a one-line ModelLoadError naming it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynasearch_runtime.field_bounds import SHAPE_BOUNDS, Field, first_violation, under

from .checks import differences
from .errors import DataError, ModelLoadError, OutputExistsError
from .io import read_json
from .space import SearchSpace
from .subnet import BackboneShape
from .tasks import TaskSpec, spec_from_dict
from .train_config import CONFIG_BOUNDS, STAGE_DIRS, STAGE_KINDS, STAGES, WIDTH_KIND, TrainConfig

RUN_FORMAT = 1  # run.json "format"
# Every number of run.json by its kind in the bounds table (`field_bounds.Field`): the backbone, the
# data counts, the task description and the TrainConfig (whose own checks say the same for callers).
RUN_BOUNDS: tuple[Field, ...] = (
    under("backbone", SHAPE_BOUNDS)
    + (
        ("train_examples", "count", False),
        ("rewire_holdout_examples", "count0", False),
        ("task.n_columns", "count", True),
        ("task.label_range.*", "metric", False),
        ("config.widths.*", WIDTH_KIND, False),
        ("config.depths.*", WIDTH_KIND, False),
        ("config.space.head_choices.*", "heads", False),
        ("config.space.ffn_choices.*", "ffn", False),
        ("config.space.ffn_step", "ffn_step", True),
        ("config.space.min_layers", "layers", False),
    )
    + tuple((f"config.{name}.*.1", kind, False) for name, kind in STAGE_KINDS.items())
    + tuple((f"config.{name}", kind, nullable) for name, (kind, nullable) in CONFIG_BOUNDS.items())
)

# Stages whose product has trained sub-networks (the width stage: widths at full depth only).
SUBNET_STAGES = ("width", "depth", "final")
EMPTY_STATE = {"completed": [], "scores": {}, "throughput": {}, "model": None}


def _check(cond: bool, path: Path, what: str, problem: str) -> None:
    if not cond:
        raise ModelLoadError(f"{what} {path} is not a valid {what}: {problem}")


def is_run(path: str | Path) -> bool:
    """A run directory (run.json), as opposed to a plain model directory."""
    return (Path(path) / "run.json").is_file()


def read_run_record(run: str | Path) -> dict[str, Any] | None:
    """RUN/run.json, checked field by field; None when the directory holds no run."""
    p = Path(run) / "run.json"
    if not p.is_file():
        return None
    rec = read_json(p, "run file", error=ModelLoadError)
    fmt = rec.get("format", RUN_FORMAT)  # files of the first version may lack it
    _check(
        isinstance(fmt, int) and not isinstance(fmt, bool) and 1 <= fmt <= RUN_FORMAT,
        p,
        "run file",
        f"format {fmt!r} is not one this dynasearch reads (1..{RUN_FORMAT}; a newer dynasearch wrote it?)",
    )
    for key, kind in (("task", dict), ("config", dict), ("backbone", dict), ("model_dir", str)):
        _check(
            isinstance(rec.get(key), kind),
            p,
            "run file",
            f"field '{key}' must be a JSON {'object' if kind is dict else 'string'}; got {rec.get(key)!r:.60}",
        )
    _check(isinstance(rec.get("data", {}), dict), p, "run file", "field 'data' must be a JSON object")
    _check(isinstance(rec["task"].get("name"), str), p, "run file", "field 'task.name' must be a string")
    bad = first_violation(rec, RUN_BOUNDS)
    _check(bad is None, p, "run file", f"field '{bad[0]}' must be {bad[2]}; got {bad[1]!r:.40}" if bad else "")
    return rec


def run_task(run: str | Path) -> TaskSpec | None:
    """The task a run was trained on (a csv task with its label set); None for a plain model dir."""
    rec = read_run_record(run)
    if rec is None:
        return None
    try:
        return spec_from_dict(rec["task"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(
            f"run file {Path(run) / 'run.json'} is not a valid run file: bad task description ({e!r:.80})"
        ) from None


def run_config(run: str | Path):
    """The TrainConfig a run was started with (None for a plain model dir)."""
    rec = read_run_record(run)
    if rec is None:
        return None
    try:
        return TrainConfig.from_dict(rec["config"])
    except (DataError, TypeError, ValueError) as e:
        raise ModelLoadError(f"run file {Path(run) / 'run.json'} is not a valid run file: bad config ({e})") from None


def read_state(run: str | Path) -> dict[str, Any]:
    """RUN/state.json, checked; an empty state when the run has finished no stage yet."""
    p = Path(run) / "state.json"
    if not p.is_file():
        return {k: (type(v)() if v is not None else None) for k, v in EMPTY_STATE.items()}
    state = read_json(p, "run state file", error=ModelLoadError)
    done = state.get("completed")
    _check(
        isinstance(done, list) and all(isinstance(s, str) and s in STAGES for s in done),
        p,
        "run state file",
        f"'completed' must be a list of stage names ({', '.join(STAGES)}); got {done!r:.60}",
    )
    _check(
        state.get("model") is None or state.get("model") in STAGE_DIRS.values(),
        p,
        "run state file",
        f"'model' must be a stage directory name; got {state.get('model')!r:.60}",
    )
    for key in ("scores", "throughput"):
        _check(isinstance(state.get(key, {}), dict), p, "run state file", f"'{key}' must be a JSON object")
        state.setdefault(key, {})
    return state


def read_stage_info(model_dir: str | Path) -> dict[str, Any] | None:
    """MODEL_DIR/stage.json, written beside every model a training stage saves; None if absent."""
    p = Path(model_dir) / "stage.json"
    if not p.is_file():
        return None
    info = read_json(p, "stage info file", error=ModelLoadError)
    _check(
        info.get("stage") in STAGES,
        p,
        "stage info file",
        f"'stage' must be one of {', '.join(STAGES)}; got {info.get('stage')!r:.60}",
    )
    for key in ("task", "config"):
        _check(isinstance(info.get(key, {}), dict), p, "stage info file", f"'{key}' must be a JSON object")
    return info


def run_model_dir(run: str | Path, stage: str | None = None) -> Path:
    """The model dir of a run's latest (or the named) finished stage; a plain model dir is returned as is."""
    run = Path(run)
    if (run / "config.json").is_file() and not is_run(run):
        return run
    if not (run / "state.json").is_file():
        if not run.exists():
            raise ModelLoadError(f"'{run}' does not exist (expected a model directory or a training run)")
        raise ModelLoadError(
            f"'{run}' is neither a model directory (config.json) nor a finished training run (state.json)"
        )
    state = read_state(run)
    if stage is None:
        if not state["model"]:
            raise ModelLoadError(f"run '{run}' has no finished stage yet")
        return run / state["model"]
    if stage not in STAGE_DIRS or stage not in state["completed"]:
        raise ModelLoadError(f"run '{run}' has no finished stage {stage!r}; finished: {state['completed']}")
    return run / STAGE_DIRS[stage]


@dataclass(frozen=True)
class RunInfo:
    """What `resolve_run` found: the model dir to load and what is known about how it was made."""

    model_dir: Path
    run_dir: Path | None  # None: a plain model directory was given
    task: TaskSpec | None  # from run.json (runs only)
    max_seq_length: int | None  # the run's training length (runs only)
    stage: str | None  # the stage that produced model_dir (its stage.json), if known
    stages_done: tuple[str, ...]  # the run's finished stages, in order; () for a plain model dir


def resolve_run(path: str | Path, stage: str | None = None) -> RunInfo:
    """A run directory of `dynasearch train` (its latest finished stage, or `stage`) or a plain model
    directory (`stage` must then be None). Raises ModelLoadError naming the file for anything broken."""
    path = Path(path)
    model_dir = run_model_dir(path, stage)
    if not is_run(path):
        if stage is not None:
            raise ModelLoadError(f"'{path}' is a model directory, not a training run: --stage {stage} does not apply")
        info = read_stage_info(model_dir)
        return RunInfo(model_dir, None, None, None, info["stage"] if info else None, ())
    state = read_state(path)
    cfg = run_config(path)
    done = tuple(state["completed"])
    if stage is None:
        stage = next((s for s in reversed(done) if STAGE_DIRS[s] == state["model"]), None)
    return RunInfo(model_dir, path, run_task(path), cfg.max_seq_length, stage, done)


# ---------------------------------------------------------------------------- starting and resuming a run


@dataclass(frozen=True)
class RunInputs:
    """What to train on: backbone, task and its files, and where the run lives."""

    out_dir: str | Path
    task: TaskSpec
    model_dir: str | Path | None = None  # None: the packaged MiniLM-L6
    data_dir: str | Path | None = None
    train_file: str | Path | None = None  # overrides DIR/train.* (e.g. an augmented train file)
    dev_file: str | Path | None = None


def run_record(
    inputs: RunInputs,
    spec: TaskSpec,
    cfg: TrainConfig,
    shape: BackboneShape,
    model_dir: Path,
    n_train: int,
    n_hold: int,
) -> dict:
    return {
        "format": RUN_FORMAT,
        "model_dir": str(model_dir.resolve()),
        "backbone": shape.to_dict(),
        "task": spec.to_dict(),
        "data": {
            k: (str(Path(v).resolve()) if v is not None else None)
            for k, v in (
                ("data_dir", inputs.data_dir),
                ("train_file", inputs.train_file),
                ("dev_file", inputs.dev_file),
            )
        },
        "config": cfg.to_dict(),
        "train_examples": n_train,
        "rewire_holdout_examples": n_hold,
    }


def check_resume(out: Path, spec: TaskSpec, model_dir: Path, shape: BackboneShape) -> TrainConfig:
    """The saved configuration of a run, after checking it is this backbone and task."""
    rec = read_run_record(out)
    if rec is None:
        raise OutputExistsError(f"cannot resume: '{out}' holds no run (no run.json); start it without --resume")
    if rec["task"]["name"] != spec.name or (
        spec.labels is not None and rec["task"]["labels"] not in (None, list(spec.labels))
    ):
        raise DataError(f"cannot resume: run '{out}' trains task {rec['task']['name']!r}, not {spec.name!r}")
    saved = {"model_dir": rec["model_dir"], "backbone": rec["backbone"]}
    asked = {"model_dir": str(model_dir.resolve()), "backbone": shape.to_dict()}
    if saved != asked:
        raise ModelLoadError(
            f"cannot resume: run '{out}' was started from backbone {rec['model_dir']}, another than asked "
            f"({'; '.join(differences(saved, asked))}); resume with the run's own backbone, or train a new run"
        )
    return run_config(out)


def resume_inputs(
    out_dir: str | Path,
    *,
    model_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    train_file: str | Path | None = None,
    dev_file: str | Path | None = None,
) -> RunInputs:
    """RunInputs to resume the run in `out_dir` with what its run.json records (task, backbone, data
    files); an argument given overrides the recorded value."""
    rec = read_run_record(out_dir)
    if rec is None:
        what = "does not exist" if not Path(out_dir).is_dir() else "holds no run (no run.json)"
        raise OutputExistsError(f"cannot resume: run directory '{out_dir}' {what}")
    data = rec.get("data", {})
    try:
        spec = spec_from_dict(rec["task"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(
            f"run file {Path(out_dir) / 'run.json'} is not a valid run file: bad task description ({e!r:.80})"
        ) from None
    return RunInputs(
        out_dir,
        spec,
        model_dir if model_dir is not None else rec["model_dir"],
        data_dir if data_dir is not None else data.get("data_dir"),
        train_file if train_file is not None else data.get("train_file"),
        dev_file if dev_file is not None else data.get("dev_file"),
    )


def weight_files(model_dir: str | Path) -> list[Path]:
    """The files holding a model's weights: safetensors (possibly sharded), else PyTorch .bin."""
    d = Path(model_dir)
    files = sorted(d.glob("*.safetensors")) or sorted(d.glob("pytorch_model*.bin"))
    if not files:
        raise ModelLoadError(f"model directory '{d}' has no weight file (model.safetensors or pytorch_model.bin)")
    return files


def model_digest(model_dir: str | Path) -> str:
    """16 hex digits of a streaming sha256 over the weight files (name and bytes): the same weights
    give the same digest wherever the directory lives; retraining or editing them changes it."""
    h = hashlib.sha256()
    for f in weight_files(model_dir):
        h.update(f.name.encode() + b"\0")
        try:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise ModelLoadError(f"cannot read weight file {f}: {e.strerror or e}") from None
    return h.hexdigest()[:16]


def is_dynabert_trained(info: RunInfo, *, need_depth: bool = False) -> str | None:
    """None when `info.model_dir` is the product of a sub-network-training stage of a dynasearch run
    (width, width+depth or final; with need_depth, width alone is not enough: it never trains
    sub-networks that drop layers); otherwise a one-line reason why its sub-networks' metrics mean
    nothing. The model dir's own stage.json decides, so a stage dir given directly counts too.
    A model without stage.json (a plain backbone, a reference-code checkpoint) gives a reason."""
    d = info.model_dir
    stage_info = read_stage_info(d)
    if stage_info is None:
        return (
            f"model dir {d} has no stage.json (not written by `dynasearch train`): nothing says its sub-networks "
            "were trained, so their metrics may mean nothing"
        )
    stage = stage_info["stage"]
    if stage in ("teacher", "rewire"):
        what = "teacher" if stage == "teacher" else "rewired"
        return f"model dir {d} is a {what} checkpoint, not a width+depth-trained DynaBERT model: its sub-networks' metrics mean nothing"
    if stage == "width" and need_depth:
        return (
            f"model dir {d} is a width-only (DynaBERT_W) checkpoint: its sub-networks that drop layers were never "
            "trained, so their metrics mean nothing"
        )
    return None


__all__ = [
    "RUN_FORMAT",
    "RunInfo",
    "RunInputs",
    "check_resume",
    "resume_inputs",
    "run_record",
    "SUBNET_STAGES",
    "is_dynabert_trained",
    "is_run",
    "model_digest",
    "read_run_record",
    "read_stage_info",
    "read_state",
    "resolve_run",
    "run_config",
    "run_model_dir",
    "run_task",
    "weight_files",
]


def trained_space(config: Mapping[str, Any] | None, shape: BackboneShape) -> SearchSpace | None:
    """The space a run's training sampled from (its run.json `config`): `space_samples` configs of
    `space` per step, or the earlier `random_subnets` (the paper's per-layer widths, width+depth
    stage only); None when it trained the paper's fixed sub-networks only."""
    if not config:
        return None
    cfg = TrainConfig.from_dict(dict(config))
    if cfg.space_samples:
        return cfg.space_spec().build(shape)
    if cfg.random_subnets:
        return SearchSpace.default(shape, cfg.widths)
    return None
