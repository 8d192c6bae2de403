"""dynasearch train --model MODEL_DIR --task sst2 --data-dir path/to/glue/SST-2 --out RUN"""

from __future__ import annotations

import argparse
import dataclasses
import os

from .common import (
    add_model_arg,
    add_space_args,
    add_task_args,
    bounded,
    bounded_list,
    given_dests,
    space_options_given,
    space_spec_from_args,
    task_from_args,
)


def _stages(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def register(sub) -> None:
    from dynabert.space import SAMPLE_BIASES
    from dynabert.train_config import DEFAULT_STAGES, SAMPLINGS, SPACE_DEPTHS, STAGES, TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a DynaBERT model on a task (teacher, rewiring, width, width+depth, final)",
        description="Runs the chosen stages in order, writing RUN/run.json (configuration), RUN/train.log, "
        "RUN/checkpoint (resumable) and one model directory per finished stage (RUN/teacher, RUN/rewired, "
        "RUN/width, RUN/width_depth, RUN/final), each the stage's best checkpoint by the sum of the dev metric "
        "over its sub-networks. Runs unchanged under torchrun --nproc_per_node N.",
    )
    add_model_arg(p, positional=False)
    add_task_args(p, default="tweets; with --resume: the run's task, data files and backbone")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory")
    p.add_argument("--overwrite", action="store_true", help="replace a run directory that holds another run")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN from its last checkpoint (same data order, optimizer and RNG state); task, data files, "
        "backbone and hyper-parameters come from RUN/run.json",
    )
    p.add_argument(
        "--stages",
        type=_stages,
        default=DEFAULT_STAGES,
        help=f"comma-separated subset of {','.join(STAGES)} (default {','.join(DEFAULT_STAGES)})",
    )
    h = p.add_argument_group("hyper-parameters (defaults: the paper / reference code)")
    h.add_argument(
        "--widths",
        type=bounded_list("fraction"),
        default=d.widths,
        help="width multipliers, largest first (default 1,0.75,0.5,0.25)",
    )
    h.add_argument(
        "--depths",
        type=bounded_list("fraction"),
        default=d.depths,
        help="depth multipliers, largest first (default 1,0.75,0.5)",
    )
    h.add_argument(
        "--lr",
        type=bounded("learning_rate"),
        default=d.learning_rate,
        help=f"learning rate (default {d.learning_rate})",
    )
    h.add_argument(
        "--stage-lr",
        type=_stage_values("learning_rate"),
        default=(),
        metavar="STAGE=LR,...",
        help="per-stage learning rates overriding --lr, e.g. teacher=1e-4,depth=1e-4 (short budgets need larger rates)",
    )
    h.add_argument(
        "--stage-epochs",
        type=_stage_values("epochs"),
        default=(),
        metavar="STAGE=EPOCHS,...",
        help="per-stage epochs overriding --epochs, e.g. depth=2",
    )
    h.add_argument("--weight-decay", type=bounded("weight"), default=d.weight_decay)
    h.add_argument(
        "--warmup",
        type=bounded("warmup"),
        default=d.warmup_fraction,
        help="warm-up fraction of each stage's steps (RoBERTa: 0.06)",
    )
    h.add_argument(
        "--batch-size", type=bounded("batch"), default=d.batch_size, help="global batch size (all processes)"
    )
    h.add_argument("--epochs", type=bounded("epochs"), default=d.epochs, help="epochs per training stage")
    h.add_argument(
        "--max-steps", type=bounded("count"), default=None, help="steps per training stage (overrides --epochs)"
    )
    h.add_argument("--max-seq-length", type=bounded("max_seq_length"), default=d.max_seq_length)
    h.add_argument("--train-subset", type=bounded("count"), default=None, help="train on N examples (seeded choice)")
    h.add_argument(
        "--dev-subset",
        type=bounded("count"),
        default=None,
        help="select checkpoints on N dev examples (seeded choice; default all): faster on large dev sets",
    )
    h.add_argument("--seed", type=bounded("seed"), default=d.seed)
    h.add_argument("--max-grad-norm", type=bounded("weight"), default=d.max_grad_norm)
    h.add_argument(
        "--width-loss",
        type=bounded_list("weight"),
        default=(d.width_logit_weight, d.width_hidden_weight),
        metavar="LOGIT,HIDDEN",
        help="width stage loss weights (default 1,0.1)",
    )
    h.add_argument(
        "--depth-loss",
        type=bounded_list("weight"),
        default=(d.depth_logit_weight, d.depth_hidden_weight),
        metavar="LOGIT,HIDDEN",
        help="width+depth stage loss weights (default 1,1)",
    )
    h.add_argument(
        "--random-subnets",
        type=bounded("count0"),
        default=d.random_subnets,
        metavar="N",
        help="width+depth stage: also train N random per-layer sub-networks per step, after the 12 grid ones "
        "(full-width teacher; default 0 = the paper). For searches over the per-layer space",
    )
    h.add_argument(
        "--subnets-per-step",
        type=bounded("space_samples"),
        default=None,  # None: not given (0, every grid point every step)
        metavar="K",
        help="width+depth stage: train the largest and smallest grid points plus K of the other 10, rotating so "
        "that every grid point is trained within ceil(10/K) steps (default 0 = all 12 every step). Equal compute "
        "takes proportionally more steps: see docs/training.md (--stage-epochs depth=...)",
    )
    h.add_argument(
        "--largest-weight",
        type=bounded("loss_scale"),
        default=d.largest_weight,
        metavar="W",
        help="width and width+depth stages: multiply the largest sub-network's loss (the full model with the default "
        "--widths and --depths) by W, in [0.001, 100] (default 1: as much as every other's). The step's gradient is "
        "clipped to one norm, so the largest's share shrinks as sub-networks are added; W > 1 gives it back",
    )
    sp = p.add_argument_group(
        "training for the searched space",
        "every width-stage and width+depth-stage step also trains N configs sampled from this space (the one "
        "`dynasearch search` should then search: it warns when searching another)",
    )
    sp.add_argument(
        "--space-samples",
        type=bounded("space_samples"),
        default=None,  # None: not given (0, the paper)
        metavar="N",
        help="configs of the space sampled per step, seeded by (seed, stage, step) (default 0 = the paper)",
    )
    sp.add_argument(
        "--sampling",
        choices=SAMPLINGS,
        default=None,
        help="grid: the paper's fixed sub-networks plus the samples; sandwich: the space's largest and smallest plus "
        "the samples (default grid)",
    )
    sp.add_argument(
        "--space-bias",
        choices=SAMPLE_BIASES,
        default=None,
        help="per-layer choices sampled uniformly or weighted toward the middle ones (default uniform)",
    )
    sp.add_argument(
        "--space-depths",
        choices=SPACE_DEPTHS,
        default=None,
        help="width+depth stage: the samples' kept-layer counts drawn by the drop rule (sampled) or cycled evenly "
        "over every count the space allows (stratified) (default sampled)",
    )
    sp.add_argument(
        "--space-weight",
        type=bounded("fraction"),
        default=None,
        metavar="W",
        help="weight of the sampled sub-networks' loss, in (0, 1] (default 1: as much as a grid point's)",
    )
    add_space_args(sp)
    h.add_argument(
        "--depth-teacher",
        choices=("same-width", "full-width"),
        default=d.depth_teacher,
        help="width+depth teacher: DynaBERT_W at the same width (paper) or at full width (reference code)",
    )
    h.add_argument(
        "--rewire-data",
        choices=("heldout", "dev"),
        default=d.rewire_data,
        help="importance measured on a held-out part of train (default) or on dev (reference code)",
    )
    h.add_argument("--rewire-examples", type=bounded("count"), default=d.rewire_examples)
    h.add_argument(
        "--eval-every",
        type=bounded("count"),
        default=None,
        help="steps between dev evaluations (default: each epoch end)",
    )
    h.add_argument("--checkpoint-every", type=bounded("count"), default=d.checkpoint_every)
    h.add_argument("--eval-batch-size", type=bounded("batch"), default=d.eval_batch_size)
    h.add_argument(
        "--group-by-length",
        action="store_true",
        help="batches of similar lengths (less padding, faster; the paper uses uniformly random batches)",
    )
    h.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast of the forward passes (losses, weights and optimizer stay float32; changes the "
        "numerics): CPUs with native bf16 (AVX512-BF16 or AMX) or CUDA GPUs with bf16, refused elsewhere "
        "(default float32)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, _parser=p)


def _stage_values(kind: str):
    """argparse type: STAGE=VALUE,... with each VALUE a number of `kind` in the bounds table."""
    from dynasearch_runtime import bounds

    def parse(text: str) -> tuple[tuple[str, float], ...]:
        from dynabert.train_config import STAGES

        out = []
        parts = [p.strip() for p in text.split(",")]
        if text.strip() and any(not p for p in parts):  # 'teacher=1e-4,,depth=1e-4': a value left out
            raise argparse.ArgumentTypeError(f"{text!r} has an empty item; give STAGE=VALUE,... with no empty items")
        for part in (p for p in parts if p):
            stage, sep, value = part.partition("=")
            if not sep or stage not in STAGES:
                raise argparse.ArgumentTypeError(f"{part!r} is not STAGE=VALUE with STAGE one of {', '.join(STAGES)}")
            if stage in dict(out):  # 'teacher=1e-4,teacher=1e-3': one of them would be dropped in silence
                raise argparse.ArgumentTypeError(f"{text!r} gives stage {stage} twice; give each stage once")
            try:
                out.append((stage, float(bounds.parse(kind, value))))
            except ValueError as e:
                raise argparse.ArgumentTypeError(f"{part!r}: the value {e}") from None
        return tuple(out)

    parse.__name__ = f"STAGE={kind}"
    parse.bound_kind = kind
    return parse


def run(args) -> int:
    from dynabert.errors import DataError
    from dynabert.runs import RunInputs, resume_inputs
    from dynabert.space import SpaceSpec
    from dynabert.train import train
    from dynabert.train_config import TrainConfig, flag_dest

    from .train_checks import check_stage_options

    d = TrainConfig()
    if args.resume and args.overwrite:  # a resumed run is continued, never replaced: --overwrite would do nothing
        raise DataError("--overwrite replaces a run, and --resume continues it: give one of them")
    given = space_options_given(args) + [
        f"--{f.replace('_', '-')}"
        for f in ("sampling", "space_bias", "space_depths", "space_weight")
        if getattr(args, f) is not None
    ]
    if given and not args.space_samples and not args.resume:
        raise DataError(f"{given[0]} describes the space --space-samples N samples from; give --space-samples too")
    samples = d.space_samples if args.space_samples is None else args.space_samples
    space = space_spec_from_args(args, SpaceSpec, error=DataError).to_dict() if samples and not args.resume else None
    if args.resume and (given or args.space_samples is not None):
        asked_space = (
            space_spec_from_args(args, SpaceSpec, error=DataError).to_dict() if space_options_given(args) else None
        )
        _check_resumed_space(
            args.out,
            args.space_samples,
            args.sampling,
            args.space_bias,
            asked_space,
            args.space_depths,
            args.space_weight,
        )
    if args.resume and args.subnets_per_step is not None:
        _check_resumed_recipe(args.out, args.subnets_per_step)
    for name in ("width_loss", "depth_loss"):
        if len(getattr(args, name)) != 2:
            args._parser.error(f"--{name.replace('_', '-')} takes two numbers LOGIT,HIDDEN")
    cfg = TrainConfig(
        stages=args.stages,
        widths=args.widths,
        depths=args.depths,
        learning_rate=args.lr,
        stage_learning_rates=args.stage_lr,
        stage_epochs=args.stage_epochs,
        weight_decay=args.weight_decay,
        warmup_fraction=args.warmup,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_steps=args.max_steps,
        max_seq_length=args.max_seq_length,
        train_subset=args.train_subset,
        dev_subset=args.dev_subset,
        seed=args.seed,
        max_grad_norm=args.max_grad_norm,
        width_logit_weight=args.width_loss[0],
        width_hidden_weight=args.width_loss[1],
        depth_logit_weight=args.depth_loss[0],
        depth_hidden_weight=args.depth_loss[1],
        depth_teacher=args.depth_teacher,
        random_subnets=args.random_subnets,
        space=space,
        space_samples=0 if args.resume else samples,
        # resumed: run.json's configuration is used (checked against these above), so they stay at defaults here
        sampling=d.sampling if args.resume else args.sampling or d.sampling,
        space_bias=d.space_bias if args.resume else args.space_bias or d.space_bias,
        space_depths=d.space_depths if args.resume else args.space_depths or d.space_depths,
        space_weight=d.space_weight if args.resume or args.space_weight is None else args.space_weight,
        # on --resume a given K equals run.json's (checked above), so passing it on is what the run trains with
        subnets_per_step=d.subnets_per_step if args.subnets_per_step is None else args.subnets_per_step,
        largest_weight=args.largest_weight,
        rewire_data=args.rewire_data,
        rewire_examples=args.rewire_examples,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        eval_batch_size=args.eval_batch_size,
        group_by_length=args.group_by_length,
        bf16=args.bf16,
    )
    if not args.resume:  # a resumed run's own configuration is checked by train() (check_resumed)
        check_stage_options(cfg, d)
    if args.resume:
        # Whatever is not given again comes from RUN/run.json; train() checks what was given against it.
        inputs = resume_inputs(
            args.out,
            model_dir=args.model_dir,
            data_dir=args.data_dir,
            train_file=args.train_file,
            dev_file=args.dev_file,
        )
        if args.task is not None:
            inputs = dataclasses.replace(inputs, task=task_from_args(args, args._parser.error))
        elif args.text_col or args.label_col or args.text_pair_col or args.regression:
            args._parser.error("--text-col/--text-pair-col/--label-col/--regression need --task csv")
    else:
        if args.task is None:
            args.task = "tweets"
        inputs = RunInputs(
            args.out,
            task_from_args(args, args._parser.error),
            args.model_dir,
            args.data_dir,
            args.train_file,
            args.dev_file,
        )
    named = given_dests(args)
    given = frozenset(f.name for f in dataclasses.fields(TrainConfig) if flag_dest(f.name) in named)
    state = train(inputs, cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress, given=given)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only the first process reports
        return 0
    print(f"trained {args.out}: stages {', '.join(state['completed'])}; model {args.out}/{state['model']}")
    compute = state.get("compute", {})
    for stage, s in state["scores"].items():
        if "best" in s:
            c = compute.get(stage)
            cost = f"; {c['flops'] / 1e12:.4g} TFLOPs, {c['steps']} steps, {c['seconds']:.1f} s" if c else ""
            print(f"  {stage}: best dev score (sum over sub-networks) {s['best']:.2f}{cost}")
    if "total" in compute:
        t = compute["total"]
        print(
            f"  training compute {t['flops'] / 1e12:.4g} TFLOPs (student forward+backward "
            f"{t['student_flops'] / 1e12:.4g}, teacher forward {t['teacher_flops'] / 1e12:.4g}; encoder matmuls, "
            f"real tokens), {t['steps']} steps, {t['seconds']:.1f} s training"
        )
    return 0


def _check_resumed_recipe(out, k) -> None:
    """--subnets-per-step given on --resume must be the run's own (run.json), 0 included."""
    from dynabert.errors import DataError
    from dynabert.runs import run_config

    saved = run_config(out)
    if saved is not None and k != saved.subnets_per_step:
        raise DataError(
            f"--subnets-per-step {k} differs from the run's {saved.subnets_per_step} ({out}/run.json): a resumed run "
            "keeps its configuration; resume without it, or train a new run"
        )


def _check_resumed_space(out, samples, sampling, bias, space, depths=None, weight=None) -> None:
    """A resumed run keeps the space training of its run.json: a given option that differs is refused
    (silently training with the saved one would not be what was asked)."""
    from dynabert.checks import differences
    from dynabert.errors import DataError
    from dynabert.runs import run_config

    saved = run_config(out)
    if saved is None:
        return
    asked = {
        "--space-samples": samples,
        "--sampling": sampling,
        "--space-bias": bias,
        "the space options": space,
        "--space-depths": depths,
        "--space-weight": weight,
    }
    have = {
        "--space-samples": saved.space_samples,
        "--sampling": saved.sampling,
        "--space-bias": saved.space_bias,
        "--space-depths": saved.space_depths,
        "--space-weight": saved.space_weight,
        "the space options": saved.space_spec().to_dict() if saved.space_samples else None,
    }
    for k, v in asked.items():
        if v is not None and v != have[k]:
            # the space options are a dict: name the fields that differ, the run's value -> the asked one
            if isinstance(v, dict) and have[k] is None:
                what = f"{k} describe a space, but the run trains none (--space-samples 0)"
            elif isinstance(v, dict):
                what = f"{k} differ from the run's ({'; '.join(differences(have[k], v))})"
            else:
                what = f"{k} {v} differs from the run's {have[k]}"
            raise DataError(
                f"{what} ({out}/run.json): a resumed run keeps its configuration; resume without it, or train a new run"
            )
