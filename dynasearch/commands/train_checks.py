"""`dynasearch train`'s options checked against each other before any work: options no stage of the run
reads (DataError, one line). Options given to a resumed run are checked by the library
(`dynabert.train_config.check_resumed`: it trains with its run.json configuration)."""

from __future__ import annotations

from dynabert.train_config import TrainConfig  # no torch: the --help path may import it

# Options that act in some stages only (dynabert/train.py, dynabert/distill.py): given (other than the
# default) while --stages runs none of those stages, they would change nothing.
STAGE_ONLY = (
    ("--width-loss", ("width_logit_weight", "width_hidden_weight"), ("width",)),
    ("--depth-loss", ("depth_logit_weight", "depth_hidden_weight"), ("depth",)),
    ("--depth-teacher", ("depth_teacher",), ("depth",)),
    ("--random-subnets", ("random_subnets",), ("depth",)),
    ("--space-samples", ("space_samples",), ("width", "depth")),
    ("--subnets-per-step", ("subnets_per_step",), ("depth",)),
    ("--largest-weight", ("largest_weight",), ("width", "depth")),
    ("--space-depths", ("space_depths",), ("depth",)),
    # rewiring stays in float32 (importance scores and reordering): bf16 acts in the training stages only
    ("--bf16", ("bf16",), ("teacher", "width", "depth", "final")),
)


def check_stage_options(cfg: TrainConfig, d: TrainConfig) -> None:
    """A new run's options (`cfg`; `d` the defaults) that no stage it runs reads are refused (DataError),
    naming what would make them count."""
    from dynabert.errors import DataError

    ran = ",".join(cfg.stages)
    for flag, fields, stages in STAGE_ONLY:
        if any(getattr(cfg, f) != getattr(d, f) for f in fields) and not set(stages) & set(cfg.stages):
            raise DataError(
                f"{flag} acts in the {' and '.join(stages)} stage{'s' if len(stages) > 1 else ''}, and --stages "
                f"{ran} runs none of them: add {stages[0]} to --stages, or drop {flag}"
            )
    for flag, pairs in (("--stage-lr", cfg.stage_learning_rates), ("--stage-epochs", cfg.stage_epochs)):
        for stage, value in pairs:
            if stage == "rewire":  # rewiring measures importance and reorders; it takes no optimizer steps
                raise DataError(f"{flag} rewire={value:g}: the rewire stage trains nothing; drop it")
            if stage not in cfg.stages:
                raise DataError(
                    f"{flag} {stage}={value:g}: --stages {ran} does not run {stage}: add it to --stages, or drop it"
                )
    if cfg.max_steps is not None:  # a stage's length is --max-steps then, whatever its epochs
        given = "--stage-epochs" if cfg.stage_epochs else "--epochs" if cfg.epochs != d.epochs else None
        if given:
            raise DataError(
                f"{given} sets how long a stage trains, and --max-steps {cfg.max_steps} sets every stage's steps "
                "whatever the epochs: drop one of them"
            )
