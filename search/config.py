"""What `dynasearch search` takes (SearchConfig, checked before anything is read) and the cheap
checks and builders the search starts with: the evaluation length, the backbone's uniform widths,
the Optuna sampler, the predictor directory. No torch, Optuna or pandas at import (the --help path)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from dynabert.checks import one_of, positive_int
from dynabert.subnet import uniform_widths
from predictors import find_predictor

from .errors import SearchError
from .space import SpaceOptions

OPTUNA_SAMPLERS = ("nsga2", "tpe", "gp", "random")
DEFAULT_SAMPLER = "tpe"  # the benchmark's winner (bench/results/search.md): 98.9% median of the best-known hypervolume
RESCORE_SEED = 1  # the seeded dev subset of --rescore-dev (the search subset's default seed is 0)


@dataclass(frozen=True)
class SearchConfig:
    """Everything `dynasearch search` takes. Fields in `identity()` must match a resumed study."""

    run: str | Path  # a run directory of `dynasearch train` or a model directory
    predictor: str | Path  # a fitted predictor directory (fit-predictor OUT/predictors/<kind>, or OUT)
    out: str | Path  # results directory
    task: str | None = None  # None: the run's task
    data_dir: str | Path | None = None  # None: the run's
    dev_file: str | Path | None = None
    stage: str | None = None
    target_ms: float | None = None
    percentile: str = "p50"
    trials: int = 200
    sampler: str = DEFAULT_SAMPLER
    seed: int = 0
    space: SpaceOptions = field(default_factory=SpaceOptions)
    # A seeded subset of dev the search ranks configs on; the front is then reported on the REST of dev
    # (examples the ranking never saw). None: ranked and reported on the same examples (the whole split).
    search_dev: int | None = None
    # Which subset (independent of the sampler's seed, so runs of several seeds compare); None: not given,
    # the subset of seed 0 (given without search_dev it would pick nothing: refused).
    search_dev_seed: int | None = None
    # Report the front and grid on a seeded subset (seed RESCORE_SEED) of the report examples; None: all of them.
    rescore_dev: int | None = None
    racing: bool = False  # score proposals on growing chunks of the ranking examples, stop clearly worse ones
    evaluations: int | None = None  # budget: distinct configs whose evaluation started (None: --trials only)
    # Sub-network JSONs queued after the grid (search/devices.py: configs other devices' studies ranked,
    # answered by the shared accuracy cache), so this study's sampler starts from them.
    warm_start: tuple[str, ...] = ()
    precision: str = "fp32"  # the metric of: the PyTorch model (fp32), or its onnxruntime int8 export ("int8")
    queued_only: bool = False  # run the queued trials (grid + warm start) and propose nothing (int8 on fp32 fronts)
    batch: int | None = None  # latency shape; None: the predictor's
    seq_len: int | None = None
    max_seq_length: int | None = None  # evaluation length; None: the run's, else 128
    storage: str | None = None  # None: sqlite:///RESULTS/study.db; ":memory:" an in-process study (no resume)
    cache: str | None = None  # accuracy cache URL; None: the storage's database (RESULTS/study.db for ":memory:")
    study: str = "dynasearch"
    verify: bool = True
    raw: bool = False  # judge the target on raw (not speed-corrected) measured latency
    max_candidates: int = 10
    allow_unmeasured_widths: bool = False
    allow_untrained: bool = False
    heartbeat_interval: int = 30
    grace_period: int | None = None
    bf16: bool = False
    progress: bool = True

    def check(self) -> None:
        positive_int("trials", self.trials, SearchError, rule="a positive integer (the study's total)")
        one_of("sampler", self.sampler, OPTUNA_SAMPLERS, SearchError)
        one_of("percentile", self.percentile, ("p50", "p90"), SearchError)
        one_of("precision", self.precision, ("fp32", "int8"), SearchError)
        if self.precision == "int8" and self.bf16:
            raise SearchError(
                "--bf16 scores the PyTorch model; precision int8 scores the quantised ONNX model: pick one"
            )
        if self.target_ms is not None and not (math.isfinite(self.target_ms) and self.target_ms > 0):
            raise SearchError(f"target latency must be a positive number of milliseconds; got {self.target_ms!r}")
        for name in (
            "search_dev",
            "rescore_dev",
            "batch",
            "seq_len",
            "max_seq_length",
            "max_candidates",
            "evaluations",
        ):
            if getattr(self, name) is not None:
                positive_int(name.replace("_", "-"), getattr(self, name), SearchError)
        if self.raw and not self.verify:
            raise SearchError(
                "--raw judges the target on raw measured latency, but --no-verify measures nothing; drop one of them"
            )
        self.check_prerequisites()
        if not self.study or not isinstance(self.study, str):
            raise SearchError(f"study name must be a non-empty string; got {self.study!r}")

    def check_prerequisites(self) -> None:
        """Options that change nothing without another are refused, saying what would make them count."""
        if self.search_dev is None and self.rescore_dev is not None:
            raise SearchError(
                f"--rescore-dev {self.rescore_dev} reports on a subset of the examples the ranking never saw, and "
                "without --search-dev the ranking sees the whole dev split (none are held out): add --search-dev N "
                "(rank on N examples, report on the rest), or drop --rescore-dev"
            )
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            # a live worker beats every heartbeat_interval s: a shorter grace fails its running trial between beats
            raise SearchError(
                f"--grace-period {self.grace_period} must be longer than --heartbeat {self.heartbeat_interval}: a "
                "live worker's trial would count as dead between two heartbeats and be retried; give a grace period "
                f"above {self.heartbeat_interval} s (default 3 x --heartbeat), or drop --grace-period"
            )
        if self.search_dev is None and self.search_dev_seed is not None:
            raise SearchError(
                f"--search-dev-seed {self.search_dev_seed} picks the subset --search-dev ranks on, and without "
                "--search-dev the ranking takes the whole dev split: add --search-dev N, or drop --search-dev-seed"
            )


def check_positions(max_len: int, model_dir: str | Path) -> None:
    """The evaluation length fits the backbone's position table (as `train` checks), from config.json alone."""
    from dynabert.backbone import read_config  # torch: not on the --help path
    from dynabert.data import check_max_length  # torch: not on the --help path

    raw = read_config(Path(model_dir))
    roberta = raw.get("flavor") == "roberta" or raw.get("model_type") in ("roberta", "xlm-roberta", "camembert")
    check_max_length(
        max_len,
        SimpleNamespace(
            max_position_embeddings=int(raw.get("max_position_embeddings") or 512),
            flavor="roberta" if roberta else "bert",
            pad_token_id=int(raw.get("pad_token_id") or 0),
        ),
    )


def check_uniform_backbone(model_dir: str | Path) -> None:
    """The search space and its grid need one width for every layer: an export of a per-layer
    sub-network (layers of different widths) is refused in one line, before anything is written."""
    from dynabert.backbone import read_config  # torch: not on the --help path

    raw = read_config(Path(model_dir))
    if not uniform_widths(SimpleNamespace(**raw)):
        raise SearchError(
            f"model {model_dir} has layers of different widths (heads {raw.get('layer_heads')}, FFN "
            f"{raw.get('layer_ffn')}): the search space needs one width for all layers; search the model it "
            "was exported from"
        )


def digest_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def make_sampler(name: str, seed: int, trials: int):
    import optuna  # optuna: not on the --help path

    if name == "nsga2":
        # Small generations: 200 evaluations give 10 generations of 20 (50 would give 4).
        return optuna.samplers.NSGAIISampler(population_size=20 if trials <= 400 else 50, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=24)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=24)
    return optuna.samplers.RandomSampler(seed=seed)


def find_search_predictor(path: str | Path):
    """A predictor directory, or a fit-predictor output (its metrics.json names the best kind):
    `predictors.find_predictor` is the one reader of both (PredictorError naming file and key)."""
    p = Path(path)
    if not p.exists():
        raise SearchError(f"predictor directory {p} does not exist")
    if not (p / "predictor.json").exists() and not (p / "metrics.json").exists():
        raise SearchError(
            f"{p} is not a dynasearch latency predictor (no predictor.json; a fit-predictor output needs metrics.json "
            "naming the best kind and predictors/<kind>/)"
        )
    return find_predictor(p)


__all__ = ["DEFAULT_SAMPLER", "OPTUNA_SAMPLERS", "RESCORE_SEED", "SearchConfig", "make_sampler"]
