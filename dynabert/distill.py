"""What one optimizer step of a stage trains (its plan) and the distillation losses.

Plans (docs/training.md says how and why): teacher = the full model; width = each width at
full depth (largest first); depth and final = depth outer / width inner, the 12 grid sub-networks.
Training for the searched space: `space_samples = N` adds N configs drawn from the training's
`SearchSpace` (cfg.space: choices, drop rule, min layers) to every step of the width stage (at
full depth) and the width+depth stage, AFTER the fixed ones: the paper's widths / 12 grid points
(sampling "grid": the paper's training is kept and the samples add coverage of the space), or the
space's largest and smallest (sampling "sandwich", as once-for-all and HAT train). The earlier
`random_subnets = N` is the width+depth stage only, from the paper's per-layer widths. Samples
come from an RNG seeded by (seed, stage, global step), so a resumed run and every torchrun rank
draw the same ones with no extra state; their teacher is the full-width model of the stage's
teacher (as `depth_teacher="full-width"`).
"""

from __future__ import annotations

import dataclasses
import random

import torch
import torch.nn.functional as F

from .errors import DataError
from .space import SearchSpace
from .subnet import BackboneShape, SubnetConfig
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


def step_plan(shape: BackboneShape, stage: str, cfg: TrainConfig, step: int | None = None) -> Plan:
    """The sub-networks one optimizer step trains, in order: (width, depth, subnet); width and depth
    are None for sampled per-layer ones (their teacher is the full-width model). step None: the
    fixed part only."""
    fixed = fixed_plan(shape, stage, cfg)
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


def eval_plan(shape: BackboneShape, stage: str, cfg: TrainConfig) -> Plan:
    """Sub-networks scored on dev in a stage: the paper's fixed ones (widths at full depth; the 12
    grid points), whatever the sampling, so checkpoints of every training are selected and compared
    on the same sub-networks. The teacher stage scores the model as built (None), which also covers
    a model that is already an extracted sub-network."""
    if stage == "teacher":
        return [(1.0, 1.0, None)]
    return fixed_plan(shape, stage, dataclasses.replace(cfg, sampling="grid", space_samples=0))
