"""What one optimizer step of a stage trains (its plan) and the distillation losses.

Plans (docs/training.md says how and why): teacher = the full model; width = each width at
full depth (largest first); depth and final = depth outer / width inner, the 12 grid sub-networks.
The paper's algorithm (stages, losses, teachers, model selection): docs/algorithm.md.
Training for the searched space: `space_samples = N` adds N configs drawn from the training's
`SearchSpace` (cfg.space: choices, drop rule, min layers) to every step of the width stage (at
full depth) and the width+depth stage, AFTER the fixed ones: the paper's widths / 12 grid points
(sampling "grid": the paper's training is kept and the samples add coverage of the space), or the
space's largest and smallest (sampling "sandwich", as once-for-all and HAT train). The earlier
`random_subnets = N` is the width+depth stage only, from the paper's per-layer widths. Samples
come from an RNG seeded by (seed, stage, global step), so a resumed run and every torchrun rank
draw the same ones with no extra state; their teacher is the full-width model of the stage's
teacher (as `depth_teacher="full-width"`).

Short-budget recipes (issue 25; the defaults keep today's recipe): `subnets_per_step = K` trains in
each width+depth step the largest and the smallest grid point plus K of the other grid points, the
others rotating with the global step (`rotated_grid`): any `rotation_period` consecutive steps train
every grid point. `space_depths = "stratified"` cycles the space samples' kept-layer counts evenly
over the counts the space allows (`SearchSpace.kept_counts`), and `space_weight` scales their loss.
`step_flops` is the compute the trainer counts per optimizer step.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import DataError
from .space import SearchSpace
from .subnet import BackboneShape, SubnetConfig, count_flops
from .train_config import TrainConfig

Plan = list[tuple[float | None, float | None, SubnetConfig]]


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """-sum softmax(t) log_softmax(s), mean over the batch (temperature 1)."""
    return -(F.softmax(teacher, dim=-1) * F.log_softmax(student, dim=-1)).sum(-1).mean()


def masked_mse(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens of each example, then mean over examples:
    independent of how much padding the batch has (and of how a batch is sharded)."""
    m = mask.to(s.dtype).unsqueeze(-1)  # (B, T, 1)
    per_ex = ((s - t) ** 2 * m).sum((1, 2)) / (m.sum((1, 2)) * s.shape[-1])
    return per_ex.mean()


def hidden_pairs(subnet: SubnetConfig | None, num_layers: int) -> list[tuple[int, int]]:
    """(student index, teacher index) of matched hidden states: the student's input to its j-th kept
    layer <-> the teacher's input to that original layer; final output <-> final output."""
    layers = list(range(num_layers)) if subnet is None else list(subnet.layers)
    return list(enumerate(layers)) + [(len(layers), num_layers)]


def training_space(shape: BackboneShape, cfg: TrainConfig) -> SearchSpace:
    """The space a training samples from (`cfg.space`; DataError when it does not fit the backbone)."""
    return cfg.space_spec().build(shape, DataError)


def random_plan(shape: BackboneShape, stage: str, cfg: TrainConfig, step: int) -> Plan:
    """The sampled sub-networks of global step `step` (0-based): (None, None, subnet) x N.
    `space_samples` in the width stage (full depth) and the width+depth stage; the earlier
    `random_subnets` in the width+depth stage only, from the paper's per-layer widths."""
    # A str seed is hashed with SHA-512 by random.seed: the same draw in every process and every run.
    if cfg.space_samples and stage in ("width", "depth"):
        rng = random.Random(f"dynabert-space-samples/{cfg.seed}/{stage}/{step}")
        space = training_space(shape, cfg)
        full = stage == "width"
        if cfg.space_depths == "stratified" and not full:
            # Sample i of step `step` keeps the ((step * N + i) mod C)-th of the C allowed counts: every
            # C / gcd(N, C) steps each count is drawn equally often, whatever step a resumed run starts at.
            counts = space.kept_counts()
            n = cfg.space_samples
            return [
                (None, None, space.sample(rng, cfg.space_bias, kept=counts[(step * n + i) % len(counts)]))
                for i in range(n)
            ]
        return [(None, None, space.sample(rng, cfg.space_bias, full)) for _ in range(cfg.space_samples)]
    if stage != "depth" or not cfg.random_subnets:
        return []
    rng = random.Random(f"dynabert-random-subnets/{cfg.seed}/{stage}/{step}")
    space = SearchSpace.default(shape, cfg.widths)
    return [(None, None, space.sample(rng)) for _ in range(cfg.random_subnets)]


def fixed_plan(shape: BackboneShape, stage: str, cfg: TrainConfig) -> Plan:
    """The sub-networks every step of a stage trains: the paper's (each width at full depth; the 12
    grid points, depth outer / width inner), or under sampling "sandwich" the space's largest and
    smallest (full depth in the width stage)."""
    if stage == "teacher":
        return [(1.0, 1.0, SubnetConfig.full(shape))]
    if cfg.sampling == "sandwich" and stage in ("width", "depth"):
        space = training_space(shape, cfg)
        return [(1.0, 1.0, space.largest()), (None, None, space.smallest(full_depth=stage == "width"))]
    if stage == "width":
        return [(w, 1.0, SubnetConfig.from_grid(shape, w, 1.0)) for w in cfg.widths]
    if stage in ("depth", "final"):
        return [(w, d, SubnetConfig.from_grid(shape, w, d)) for d in cfg.depths for w in cfg.widths]
    raise ValueError(f"stage {stage!r} does not train")


def plan_weights(stage: str, cfg: TrainConfig, plan: Plan) -> list[float]:
    """Each sub-network's loss weight in a step of `plan`: `space_weight` for the sampled ones (random_plan's,
    always the plan's last ones), `largest_weight` for the first (the largest: fixed_plan and rotated_grid
    keep it first) in the width and width+depth stages, 1 for the rest; the sandwich's smallest is fixed,
    not sampled, though its width is None like theirs."""
    if cfg.space_samples and stage in ("width", "depth"):
        sampled = cfg.space_samples
    else:
        sampled = cfg.random_subnets if stage == "depth" else 0
    first = len(plan) - sampled
    weights = [cfg.space_weight if i >= first else 1.0 for i in range(len(plan))]
    if stage in ("width", "depth") and first > 0:
        weights[0] = cfg.largest_weight
    return weights


def rotation_period(cfg: TrainConfig) -> int:
    """Steps within which `subnets_per_step` = K trains every grid point: ceil(others / K), with
    others = the grid's points less its largest and smallest (1: every point every step)."""
    others = len(cfg.widths) * len(cfg.depths) - 2
    return math.ceil(others / cfg.subnets_per_step) if cfg.subnets_per_step and others > 0 else 1


def rotated_grid(plan: Plan, k: int, step: int) -> Plan:
    """The grid plan's first (largest) and last (smallest) point plus K of the others: those at
    positions step*K .. step*K+K-1 (mod the others' number) of the others in the plan's order, kept in
    that order. Any ceil(others / K) consecutive steps cover K * ceil(others / K) >= others
    consecutive positions, so every point."""
    others = plan[1:-1]
    if not k or k >= len(others):
        return plan
    chosen = {(step * k + i) % len(others) for i in range(k)}
    return [plan[0], *(p for i, p in enumerate(others) if i in chosen), plan[-1]]


def step_plan(shape: BackboneShape, stage: str, cfg: TrainConfig, step: int | None = None) -> Plan:
    """The sub-networks one optimizer step trains, in order: (width, depth, subnet); width and depth
    are None for sampled per-layer ones (their teacher is the full-width model). step None: the
    fixed part only (all grid points, whatever `subnets_per_step`)."""
    fixed = fixed_plan(shape, stage, cfg)
    if step is not None and stage == "depth" and cfg.subnets_per_step and cfg.sampling == "grid":
        fixed = rotated_grid(fixed, cfg.subnets_per_step, step)
    return fixed + (random_plan(shape, stage, cfg, step) if step is not None else [])


def teacher_plan(shape: BackboneShape, stage: str, cfg: TrainConfig) -> list[float]:
    """Widths at which the frozen teacher runs (full depth) once per step (1.0 always included when
    sampled sub-networks are trained: it is their teacher)."""
    if stage == "width" or (stage == "depth" and (cfg.depth_teacher == "full-width" or cfg.sampling == "sandwich")):
        return [1.0]
    if stage == "depth":
        sampled = cfg.random_subnets or cfg.space_samples
        return list(cfg.widths) if 1.0 in cfg.widths or not sampled else [1.0, *cfg.widths]
    return []


def step_teacher_widths(shape: BackboneShape, stage: str, cfg: TrainConfig, plan: Plan) -> list[float]:
    """The teacher widths a step of `plan` needs: those of `teacher_plan` that one of its sub-networks is
    taught by (its own width under the same-width teacher; 1.0 for sampled ones). Every width today
    (all grid points every step); fewer under `subnets_per_step`."""
    widths = teacher_plan(shape, stage, cfg)
    if len(widths) <= 1:
        return widths
    used = {1.0 if w is None else w for w, _, _ in plan}
    return [w for w in widths if w in used]


def _flops_by_length(shape: BackboneShape, sub: SubnetConfig, lengths: Sequence[int]) -> int:
    """sum over examples of count_flops(sub, 1, length): count_flops is A*t + B*t^2, so two calls give it."""
    f1, f2 = count_flops(shape, sub, 1, 1), count_flops(shape, sub, 1, 2)
    b = (f2 - 2 * f1) // 2
    a = f1 - b
    return a * sum(lengths) + b * sum(t * t for t in lengths)


def step_flops(shape: BackboneShape, stage: str, cfg: TrainConfig, step: int, lengths: Sequence[int]) -> dict:
    """The training compute of global step `step` on a batch of examples with these real (unpadded) token
    counts: {"student": 3 x the forward FLOPs of every sub-network trained (forward + backward = 3
    forwards), "teacher": the forward FLOPs of the teacher at each width the step runs it}. FLOPs are
    `count_flops`'s: the encoder's matrix products (Q/K/V/output projections, the two attention
    matmuls, the FFN) per kept layer with its heads and FFN; embeddings, LayerNorm, softmax, GELU, the
    pooler and the classifier and the losses are left out. Padding is not counted, so the count does
    not depend on batching or on the number of processes."""
    if stage == "rewire":
        return {"student": 0, "teacher": 0}
    plan = step_plan(shape, stage, cfg, step)
    student = 3 * sum(_flops_by_length(shape, sub, lengths) for _, _, sub in plan)
    teacher = 0
    if stage in ("width", "depth"):
        for w in step_teacher_widths(shape, stage, cfg, plan):
            teacher += _flops_by_length(shape, SubnetConfig.from_grid(shape, w, 1.0), lengths)
    return {"student": student, "teacher": teacher}


def mean_step_flops(
    shape: BackboneShape, stage: str, cfg: TrainConfig, lengths: Sequence[int], steps: int = 240
) -> float:
    """`step_flops` (student + teacher) averaged over global steps 0..steps-1 on a batch of these lengths:
    a recipe's cost per step, over whole rotation and stratification periods (240 is a multiple of every
    period up to 6 and of 8, 10 and 12) and many draws of the samples' widths."""
    return sum(sum(step_flops(shape, stage, cfg, i, lengths).values()) for i in range(steps)) / steps


def equal_compute_epochs(
    shape: BackboneShape, stage: str, reference: TrainConfig, cfg: TrainConfig, lengths: Sequence[int]
) -> float:
    """The epochs of `stage` at which `cfg` costs what `reference` costs in its own epochs of that stage
    (`mean_step_flops` on the same lengths): e.g. `--stage-epochs depth=X` for a rotation recipe
    matching today's width+depth stage. Within 2% of the counted compute once a stage runs a few
    hundred steps (the samples' widths are drawn, the data's lengths vary)."""
    return (
        reference.epochs_for(stage)
        * mean_step_flops(shape, stage, reference, lengths)
        / mean_step_flops(shape, stage, cfg, lengths)
    )


def eval_plan(shape: BackboneShape, stage: str, cfg: TrainConfig) -> Plan:
    """Sub-networks scored on dev in a stage: the paper's fixed ones (widths at full depth; the 12
    grid points), whatever the sampling, so checkpoints of every training are selected and compared
    on the same sub-networks. The teacher stage scores the model as built (None), which also covers
    a model that is already an extracted sub-network."""
    if stage == "teacher":
        return [(1.0, 1.0, None)]
    return fixed_plan(
        shape,
        stage,
        dataclasses.replace(cfg, sampling="grid", space_samples=0, space_depths="sampled", space_weight=1.0),
    )
