"""The training configuration (no torch import: the CLI reads its defaults when building --help)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dynasearch_runtime.bounds import BOUNDS, check

from .checks import one_of
from .errors import DataError
from .space import DROP_RULES, SAMPLE_BIASES, SpaceSpec
from .subnet import PAPER_DEPTHS, PAPER_WIDTHS

STAGES: tuple[str, ...] = ("teacher", "rewire", "width", "depth", "final")
STAGE_DIRS = {"teacher": "teacher", "rewire": "rewired", "width": "width", "depth": "width_depth", "final": "final"}
DEFAULT_STAGES: tuple[str, ...] = ("teacher", "rewire", "width", "depth")
SAMPLINGS: tuple[str, ...] = ("grid", "sandwich")
# How the space samples' kept-layer counts are drawn (issue 25 (b)): "sampled" (the drop rule's own draw: under
# "any" each layer kept with probability 1/2, so counts near half the layers dominate) or "stratified" (cycled
# evenly over every count the space allows, the layers of a count then drawn uniformly).
SPACE_DEPTHS: tuple[str, ...] = ("sampled", "stratified")
MAX_SPACE_SAMPLES = BOUNDS["space_samples"].high  # sampled configs per step (the bounds table's range)
# The `dynasearch train` flag of each space option (dynasearch/commands/train.py, add_space_args in
# dynasearch/commands/common.py): messages name the field and the flag, for callers of either.
SPACE_FLAGS = {
    "random_subnets": "--random-subnets",
    "space_samples": "--space-samples",
    "sampling": "--sampling",
    "space_bias": "--space-bias",
    "drop_rule": "--drop-rule",
    "space_depths": "--space-depths",
    "space_weight": "--space-weight",
    "subnets_per_step": "--subnets-per-step",
}


# Every number of a TrainConfig (run.json's config) by its kind in the bounds table, and whether it may be
# None; widths, depths and the per-stage values are checked item by item (WIDTH_KIND, STAGE_KINDS).
CONFIG_BOUNDS: dict[str, tuple[str, bool]] = {
    "learning_rate": ("learning_rate", False),
    "adam_eps": ("epsilon", False),
    "weight_decay": ("weight", False),
    "warmup_fraction": ("warmup", False),
    "batch_size": ("batch", False),
    "epochs": ("epochs", False),
    "max_steps": ("count", True),
    "max_seq_length": ("max_seq_length", False),
    "train_subset": ("count", True),
    "dev_subset": ("count", True),
    "seed": ("seed", False),
    "max_grad_norm": ("weight", False),
    "width_logit_weight": ("weight", False),
    "width_hidden_weight": ("weight", False),
    "depth_logit_weight": ("weight", False),
    "depth_hidden_weight": ("weight", False),
    "random_subnets": ("count0", False),
    "space_samples": ("space_samples", False),
    "space_weight": ("fraction", False),
    "subnets_per_step": ("space_samples", False),
    "largest_weight": ("loss_scale", False),
    "rewire_examples": ("count", False),
    "eval_every": ("count", True),
    "checkpoint_every": ("count", False),
    "eval_batch_size": ("batch", False),
}
WIDTH_KIND = "fraction"  # each of widths and depths: a multiplier in (0, 1]
STAGE_KINDS = {"stage_learning_rates": "learning_rate", "stage_epochs": "epochs"}


def _opt(field: str) -> str:
    """'space_samples (--space-samples)': a field named with its CLI flag."""
    return f"{field} ({SPACE_FLAGS[field]})"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; defaults are the paper's / reference code's (BERT)."""

    stages: tuple[str, ...] = DEFAULT_STAGES
    widths: tuple[float, ...] = PAPER_WIDTHS  # trained largest first, as in the reference
    depths: tuple[float, ...] = PAPER_DEPTHS
    learning_rate: float = 2e-5
    # Per-stage budgets overriding learning_rate / epochs, e.g. (("depth", 1e-4),): the paper's 2e-5 is
    # tuned for 3 epochs of full GLUE sets; a few hundred steps need a larger rate (see the README).
    stage_learning_rates: tuple[tuple[str, float], ...] = ()
    stage_epochs: tuple[tuple[str, float], ...] = ()
    adam_eps: float = 1e-8
    weight_decay: float = 0.0  # never applied to biases and LayerNorm weights
    warmup_fraction: float = 0.0  # reference: 0 for BERT, 0.06 for RoBERTa
    batch_size: int = 32  # global (all processes together)
    epochs: float = 3.0  # per training stage
    max_steps: int | None = None  # per training stage; overrides epochs
    max_seq_length: int = 128
    train_subset: int | None = None  # train on the first N examples of a seeded shuffle
    dev_subset: int | None = None  # select checkpoints on N dev examples (seeded choice); None: all
    seed: int = 42
    max_grad_norm: float = 1.0  # after all sub-networks of a step
    width_logit_weight: float = 1.0  # stage width: SCE(student, teacher logits)
    width_hidden_weight: float = 0.1  # stage width: sum of hidden-state MSEs (embedding output included)
    depth_logit_weight: float = 1.0
    depth_hidden_weight: float = 1.0
    depth_teacher: str = "same-width"  # paper; "full-width" = reference code
    # Depth stage: N random per-layer sub-networks (SearchSpace.default) trained every step AFTER the
    # 12 grid ones, taught by the full-width teacher; 0 = the paper. For searches over the per-layer
    # space. Drawn from an RNG seeded by (seed, stage, step): resume reproduces them (see distill.py).
    random_subnets: int = 0
    # Training for the searched space (issue 17): every width-stage and width+depth-stage step also
    # trains `space_samples` configs drawn from `space` (a SpaceSpec dict: head/FFN choices, drop rule,
    # min layers; None = the paper's widths per layer, any layer droppable), full depth in the width
    # stage. `sampling`: "grid" keeps the paper's fixed sub-networks (widths / the 12 grid points) in
    # every step; "sandwich" trains the space's largest and smallest instead (once-for-all, HAT).
    # `space_bias`: "uniform" per-layer choices or "mid" (weighted toward the middle choices).
    # Seeded by (seed, stage, step): resume and every torchrun rank draw the same configs.
    space: dict | None = None
    space_samples: int = 0
    sampling: str = "grid"
    space_bias: str = "uniform"
    # Issue 25 (b): "stratified" cycles the samples' kept-layer counts evenly over the counts the space allows
    # (SPACE_DEPTHS; width+depth stage only, the width stage samples at full depth); `space_weight` scales the
    # sampled sub-networks' loss (1 = as much as a fixed one). Defaults: today's recipe.
    space_depths: str = "sampled"
    space_weight: float = 1.0
    # Issue 25 (a): K > 0 trains, in each width+depth step, the largest and the smallest grid point plus K of the
    # others, rotating with the global step so that every grid point is trained within ceil(others / K) steps
    # (distill.rotation_period); 0 = every grid point every step (the paper, today's default).
    subnets_per_step: int = 0
    # Issue 25: the largest sub-network's loss (1x1, the full model; under "sandwich" the space's largest) is
    # multiplied by this in the width and width+depth stages. The gradient of the summed loss of a step's sub-networks
    # is clipped to one norm, so the full model's share of each step shrinks as sub-networks are added; > 1 gives
    # it back. 1 = the paper (every sub-network alike).
    largest_weight: float = 1.0
    rewire_data: str = "heldout"  # held-out part of train (dev stays clean); "dev" = reference code
    rewire_examples: int = 1024  # size of the held-out part (at most a tenth of train)
    eval_every: int | None = None  # steps between dev evaluations; None: at the end of every epoch
    checkpoint_every: int = 500  # steps between resumable checkpoints (and at each stage end)
    eval_batch_size: int = 128
    # Batches of similar lengths (chunks of 50 batches sorted by length, batch order shuffled), so
    # dynamic padding wastes little. Off by default: the paper's batches are uniformly random.
    group_by_length: bool = False
    # Issue 25: the forward passes of every training stage (student and teacher) under bfloat16 autocast; the
    # losses, the backward's accumulation into the float32 weights, the optimizer and the dev evaluation that
    # selects checkpoints stay float32. Only where bf16 is native (dynabert.checks.bf16_unsupported); it changes
    # the numerics (see docs/training.md).
    bf16: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "widths", tuple(float(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(float(d) for d in self.depths))
        for name in ("stage_learning_rates", "stage_epochs"):
            pairs = getattr(self, name)
            if isinstance(pairs, dict):
                pairs = pairs.items()
            try:
                norm = tuple((str(k), float(v)) for k, v in pairs)
            except (TypeError, ValueError):
                raise DataError(f"{name} must be (stage, number) pairs; got {pairs!r}") from None
            bad_stage = [k for k, _ in norm if k not in STAGES]
            if bad_stage:
                raise DataError(f"{name}: unknown stage(s) {bad_stage}; allowed: {', '.join(STAGES)}")
            for k, v in norm:
                check(STAGE_KINDS[name], v, f"{name}: the value of {k}", DataError)
            object.__setattr__(self, name, norm)
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise DataError(f"unknown or no stage(s) {bad or list(self.stages)}; allowed: {', '.join(STAGES)}")
        for name, vals in (("widths", self.widths), ("depths", self.depths)):
            if not vals:
                raise DataError(f"{name} must be non-empty multipliers in (0, 1]; got {list(vals)}")
            for v in vals:
                check(WIDTH_KIND, v, f"each of {name}", DataError, hint=f"{name} {list(vals)}")
            if list(vals) != sorted(vals, reverse=True) or len(set(vals)) != len(vals):
                raise DataError(f"{name} must be unique and in descending order (largest first); got {list(vals)}")
        for k, (kind, nullable) in CONFIG_BOUNDS.items():
            v = getattr(self, k)
            if not (nullable and v is None):
                check(kind, v, _opt(k) if k in SPACE_FLAGS else k + (" (when given)" if nullable else ""), DataError)
        if self.space_samples and self.random_subnets:
            raise DataError(
                f"give {_opt('space_samples')} (width and width+depth stages, any space) or "
                f"{_opt('random_subnets')} (the earlier, depth-stage-only form), not both; got "
                f"space_samples={self.space_samples}, random_subnets={self.random_subnets}"
            )
        one_of(_opt("sampling"), self.sampling, SAMPLINGS, DataError)
        one_of(_opt("space_bias"), self.space_bias, SAMPLE_BIASES, DataError)
        if self.sampling == "sandwich" and not self.space_samples:
            raise DataError(
                f"{_opt('sampling')} 'sandwich' needs {_opt('space_samples')} >= 1 (the configs between largest "
                f"and smallest); got {self.space_samples}"
            )
        one_of(_opt("space_depths"), self.space_depths, SPACE_DEPTHS, DataError)
        for k, changed in (("space_depths", self.space_depths != "sampled"), ("space_weight", self.space_weight != 1)):
            if changed and not self.space_samples:
                raise DataError(
                    f"{_opt(k)} applies to the space samples: give {_opt('space_samples')} >= 1 too; "
                    f"got space_samples={self.space_samples}"
                )
        if self.subnets_per_step:
            others = len(self.widths) * len(self.depths) - 2
            if self.subnets_per_step > others:
                raise DataError(
                    f"{_opt('subnets_per_step')} must be in 0..{max(others, 0)} (the grid's "
                    f"{len(self.widths)} x {len(self.depths)} points less its largest and smallest; 0 = all every "
                    f"step); got {self.subnets_per_step}"
                )
            if self.sampling == "sandwich":
                raise DataError(
                    f"{_opt('subnets_per_step')} rotates the grid points of {_opt('sampling')} 'grid'; "
                    f"'sandwich' trains no grid points: give one of them"
                )
        if self.space is not None:
            if isinstance(self.space, SpaceSpec):
                object.__setattr__(self, "space", self.space.to_dict())
            if not isinstance(self.space, dict):
                raise DataError(f"space must be a space description (a dict); got {self.space!r}")
            one_of(f"space {_opt('drop_rule')}", self.space.get("drop_rule", "any"), DROP_RULES, DataError)
            try:
                SpaceSpec.from_dict(self.space)
            except (TypeError, ValueError) as e:
                raise DataError(f"space {self.space!r} is malformed ({e})") from None
        if self.depth_teacher not in ("same-width", "full-width"):
            raise DataError(f"depth_teacher must be 'same-width' or 'full-width'; got {self.depth_teacher!r}")
        if self.rewire_data not in ("heldout", "dev"):
            raise DataError(f"rewire_data must be 'heldout' or 'dev'; got {self.rewire_data!r}")
        if not isinstance(self.bf16, bool):
            raise DataError(f"bf16 must be true or false; got {self.bf16!r}")

    def lr_for(self, stage: str) -> float:
        return dict(self.stage_learning_rates).get(stage, self.learning_rate)

    def epochs_for(self, stage: str) -> float:
        return dict(self.stage_epochs).get(stage, self.epochs)

    def space_spec(self) -> SpaceSpec:
        """The space the distillation samples from (the paper's per-layer widths when None)."""
        return SpaceSpec() if self.space is None else SpaceSpec.from_dict(self.space)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})


# TrainConfig fields set by a `dynasearch train` flag other than --field-name (messages name what was typed).
FLAGS = {
    "learning_rate": "--lr",
    "stage_learning_rates": "--stage-lr",
    "warmup_fraction": "--warmup",
    "width_logit_weight": "--width-loss",
    "width_hidden_weight": "--width-loss",
    "depth_logit_weight": "--depth-loss",
    "depth_hidden_weight": "--depth-loss",
}
# Compared by the CLI itself (`train --resume` leaves them at their defaults here): the space training.
_RESUME_SPACE_FIELDS = ("space", "space_samples", "sampling", "space_bias", "space_depths", "space_weight")


def check_resumed(asked: TrainConfig, saved: TrainConfig, where: str, given: frozenset[str] = frozenset()) -> None:
    """A resumed run trains with its saved configuration, whatever the caller passes: a field the caller set
    that differs from the saved one would change nothing, so it is refused (DataError naming the flag and
    both values). Set = `given` (the fields the caller named, even at their default value: `--lr 2e-05` for
    a run trained at 1e-3) or any field away from its default."""
    default = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in _RESUME_SPACE_FIELDS:
            continue
        value, have = getattr(asked, f.name), getattr(saved, f.name)
        if (f.name in given or value != getattr(default, f.name)) and value != have:
            flag = FLAGS.get(f.name, f"--{f.name.replace('_', '-')}")
            if isinstance(value, bool):  # a switch: say whether the run used it, not True/False
                raise DataError(
                    f"{flag} was {'' if have else 'not '}used to train the run ({where}): a resumed run keeps its "
                    f"configuration; resume {'with' if have else 'without'} {flag}, or train a new run"
                )
            raise DataError(
                f"{flag} {_shown(value)} differs from the run's {_shown(have)} ({where}): a resumed run keeps its "
                f"configuration; resume without {flag}, or train a new run"
            )


def _shown(value: object) -> str:
    """A configuration value as typed on the command line: 0.0001, 1,0.75, teacher=0.0001."""
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v[0]}={_shown(v[1])}" if isinstance(v, (tuple, list)) else _shown(v) for v in value)
    if isinstance(value, float):  # :g unless it rounds: then every digit, so two different values never look alike
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    return str(value)


def flag_dest(field: str) -> str:
    """The argparse destination of a TrainConfig field's `dynasearch train` flag (FLAGS, else --field-name)."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))[2:].replace("-", "_")


__all__ = ["DEFAULT_STAGES", "SAMPLINGS", "SPACE_DEPTHS", "STAGES", "STAGE_DIRS", "TrainConfig", "check_resumed"]
