"""What one optimizer step of a stage trains (its plan) and the distillation losses.

Plans (see ../shared/docs/dynabert-algorithm.md): teacher = the full model; width = each width at
full depth (largest first); depth and final = depth outer / width inner, the 12 grid sub-networks.
`random_subnets = N` (depth stage only) adds N per-layer sub-networks drawn from
`SearchSpace.default(shape, cfg.widths)` to every step, AFTER the 12 grid ones: the paper's grid
training is unchanged and the random ones add coverage of the per-layer space a search explores
(the sandwich rule's largest and smallest are always in the grid). They are drawn from an RNG
seeded by (seed, stage, global step), so a resumed run draws the same ones with no extra state;
their teacher is the width-stage model at full width (as `depth_teacher="full-width"`).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

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


def random_plan(shape: BackboneShape, stage: str, cfg: TrainConfig, step: int) -> Plan:
    """The random per-layer sub-networks of global step `step` (0-based): (None, None, subnet) x N."""
    if stage != "depth" or not cfg.random_subnets:
        return []
    # A str seed is hashed with SHA-512 by random.seed: the same draw in every process and every run.
    rng = random.Random(f"dynabert-random-subnets/{cfg.seed}/{stage}/{step}")
    space = SearchSpace.default(shape, cfg.widths)
    return [(None, None, space.sample(rng)) for _ in range(cfg.random_subnets)]


def step_plan(shape: BackboneShape, stage: str, cfg: TrainConfig, step: int | None = None) -> Plan:
    """The sub-networks one optimizer step trains, in order: (width, depth, subnet); width and depth
    are None for random per-layer ones. step None: the fixed part only (grid / widths)."""
    if stage == "teacher":
        return [(1.0, 1.0, SubnetConfig.full(shape))]
    if stage == "width":
        return [(w, 1.0, SubnetConfig.from_grid(shape, w, 1.0)) for w in cfg.widths]
    if stage in ("depth", "final"):
        grid = [(w, d, SubnetConfig.from_grid(shape, w, d)) for d in cfg.depths for w in cfg.widths]
        return grid + (random_plan(shape, stage, cfg, step) if step is not None else [])
    raise ValueError(f"stage {stage!r} does not train")


def teacher_plan(shape: BackboneShape, stage: str, cfg: TrainConfig) -> list[float]:
    """Widths at which the frozen teacher runs (full depth) once per step (1.0 always included when
    random sub-networks are trained: it is their teacher)."""
    if stage == "width" or (stage == "depth" and cfg.depth_teacher == "full-width"):
        return [1.0]
    if stage == "depth":
        return list(cfg.widths) if 1.0 in cfg.widths or not cfg.random_subnets else [1.0, *cfg.widths]
    return []


def eval_plan(shape: BackboneShape, stage: str, cfg: TrainConfig) -> Plan:
    """Sub-networks scored on dev in a stage: the fixed ones it trains (never the random ones, which
    change every step). The teacher stage scores the model as built (None), which also covers a model
    that is already an extracted sub-network."""
    if stage == "teacher":
        return [(1.0, 1.0, None)]
    return step_plan(shape, stage, cfg)
