"""Short-budget training recipes (issue 25): the compute the trainer counts, the rotation of the grid
points (`subnets_per_step`), the stratified space samples (`space_depths`) and their loss weight
(`space_weight`), on a tiny random backbone."""

import json
import math
import re
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file
from tinymodels import TINY, make_model_dir, make_sst2_dir

from dynabert.distill import (
    equal_compute_epochs,
    plan_weights,
    rotation_period,
    step_flops,
    step_plan,
    step_teacher_widths,
)
from dynabert.errors import DataError, ModelLoadError
from dynabert.space import SpaceSpec
from dynabert.subnet import BackboneShape, SubnetConfig
from dynabert.tasks import get_task
from dynabert.train import RunInputs, train
from dynabert.train_config import TrainConfig
from dynasearch.cli import main

FAST = dict(batch_size=16, max_seq_length=32, learning_rate=1e-3, eval_batch_size=64)
SIX = BackboneShape(num_layers=6, num_heads=4, head_dim=8, hidden_size=32, intermediate_size=64, vocab_size=50)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    return {
        "model": make_model_dir(root / "model"),
        "data": make_sst2_dir(root / "data", n_train=160, n_dev=32),
    }


def _inputs(assets, run):
    return RunInputs(run, get_task("sst2"), assets["model"], assets["data"])


class Killed(Exception):
    pass


def _train_killed_at(assets, run, cfg, at: int) -> None:
    """Train `cfg` into `run` and stop it (as a kill would) after global step `at` of any stage."""

    def kill(stage, step):
        if step == at:
            raise Killed

    with pytest.raises(Killed):
        train(_inputs(assets, run), cfg, progress=False, on_step=kill)


# ---------------------------------------------------------------------------- compute


def _hand_flops(shape: BackboneShape, sub: SubnetConfig, t: int) -> int:
    """Forward FLOPs of one example of t tokens, by hand: per kept layer 2 x (Q, K, V, O: 4 t h (heads d);
    scores and weighted sum: 2 t^2 (heads d); FFN in and out: 2 t h ffn)."""
    h, d = shape.hidden_size, shape.head_dim
    return sum(2 * (4 * t * h * a * d + 2 * t * t * a * d + 2 * t * h * f) for a, f in zip(sub.heads, sub.ffn))


def test_step_flops_equal_a_hand_count():
    lengths = [5, 9, 13]
    cfg = TrainConfig(stages=("depth",))
    plan = step_plan(TINY, "depth", cfg, 0)
    got = step_flops(TINY, "depth", cfg, 0, lengths)
    assert got["student"] == 3 * sum(_hand_flops(TINY, s, t) for _, _, s in plan for t in lengths)
    # same-width teacher: a full-depth forward at each of the 4 widths
    teach = [SubnetConfig.from_grid(TINY, w, 1.0) for w in cfg.widths]
    assert got["teacher"] == sum(_hand_flops(TINY, s, t) for s in teach for t in lengths)
    # the width stage: each width at full depth; one full-width teacher forward
    got = step_flops(TINY, "width", cfg, 0, lengths)
    full = SubnetConfig.full(TINY)
    assert got["teacher"] == sum(_hand_flops(TINY, full, t) for t in lengths)
    assert got["student"] == 3 * sum(
        _hand_flops(TINY, SubnetConfig.from_grid(TINY, w, 1.0), t) for w in cfg.widths for t in lengths
    )
    # the teacher stage: the full model, no teacher
    assert step_flops(TINY, "teacher", cfg, 0, lengths) == {
        "student": 3 * sum(_hand_flops(TINY, full, t) for t in lengths),
        "teacher": 0,
    }


def test_rotation_runs_the_teacher_at_the_widths_its_step_needs():
    cfg = TrainConfig(subnets_per_step=1)
    for step in range(10):
        plan = step_plan(TINY, "depth", cfg, step)
        assert step_teacher_widths(TINY, "depth", cfg, plan) == [w for w in cfg.widths if w in {p[0] for p in plan}]
    # today's recipe: every width every step
    assert step_teacher_widths(TINY, "depth", TrainConfig(), step_plan(TINY, "depth", TrainConfig(), 0)) == [
        1.0,
        0.75,
        0.5,
        0.25,
    ]


def test_compute_is_recorded_and_equal_for_recipes_training_the_same_subnets(assets, tmp_path, monkeypatch):
    import dynabert.train as T

    calls = []
    orig = T.step_flops

    def record(shape, stage, cfg, step, lengths):
        calls.append((stage, step, list(lengths)))
        return orig(shape, stage, cfg, step, lengths)

    monkeypatch.setattr(T, "step_flops", record)
    seen = []
    orig_collate = T.collate
    monkeypatch.setattr(
        T, "collate", lambda enc, idx: seen.append([len(enc.input_ids[i]) for i in idx]) or orig_collate(enc, idx)
    )
    a = train(
        _inputs(assets, tmp_path / "a"), TrainConfig(stages=("teacher", "width"), epochs=1.0, **FAST), progress=False
    )
    # the lengths counted are the batch's real token counts
    assert [c[2] for c in calls] == seen
    for stage in ("teacher", "width"):
        want = sum(sum(orig(TINY, s, TrainConfig(**FAST), i, ln).values()) for s, i, ln in calls if s == stage)
        assert a["compute"][stage]["flops"] == want > 0
        assert a["compute"][stage]["steps"] == 9  # 144 examples (16 held out for rewiring), batches of 16
        assert a["compute"][stage]["seconds"] > 0
    assert a["compute"]["total"]["flops"] == a["compute"]["teacher"]["flops"] + a["compute"]["width"]["flops"]
    assert a["compute"]["width"]["teacher_flops"] > 0 and a["compute"]["teacher"]["teacher_flops"] == 0
    on_disk = json.loads((tmp_path / "a" / "state.json").read_text())
    assert on_disk["compute"] == a["compute"]
    # another learning rate, loss weights and batch size, the same sub-networks on the same epoch: the same compute
    other = TrainConfig(
        stages=("teacher", "width"),
        epochs=1.0,
        **{**FAST, "batch_size": 32, "learning_rate": 3e-4},
        width_hidden_weight=1.0,
    )
    b = train(_inputs(assets, tmp_path / "b"), other, progress=False)
    assert b["compute"]["width"]["steps"] == 5
    for stage in ("teacher", "width", "total"):
        for k in ("flops", "student_flops", "teacher_flops"):
            assert a["compute"][stage][k] == b["compute"][stage][k]


def test_equal_compute_epochs_give_equal_counted_compute():
    """The epochs equal_compute_epochs gives a rotation recipe make its counted compute today's (within 2%)."""
    lengths = [7, 11, 15, 20]
    today = TrainConfig(stage_epochs=(("depth", 1.0),), space_samples=2)
    per_epoch = 200
    for k in (1, 2, 3, 5):
        cfg = TrainConfig(stage_epochs=(("depth", 1.0),), space_samples=2, subnets_per_step=k)
        epochs = equal_compute_epochs(TINY, "depth", today, cfg, lengths)
        assert epochs > 1.0  # fewer sub-networks per step: more steps
        count = lambda c, n: sum(sum(step_flops(TINY, "depth", c, i, lengths).values()) for i in range(n))  # noqa: E731
        ratio = count(cfg, math.ceil(epochs * per_epoch)) / count(today, per_epoch)
        assert abs(ratio - 1) < 0.02, (k, ratio)


# ---------------------------------------------------------------------------- (a) rotation


@pytest.mark.parametrize("k", range(1, 11))
def test_rotation_trains_every_grid_point_within_its_period(k):
    cfg = TrainConfig(subnets_per_step=k)
    grid = step_plan(TINY, "depth", cfg)  # step None: the fixed part, all 12
    keys = [s.key for _, _, s in grid]
    period = rotation_period(cfg)
    assert period == math.ceil(10 / k)
    plans = [step_plan(TINY, "depth", cfg, step) for step in range(3 * period + 5)]
    for plan in plans:
        assert len(plan) == 2 + k
        assert plan[0] == grid[0] and plan[-1] == grid[-1]  # largest (1x1) and smallest (0.25x0.5) every step
        assert [s.key for _, _, s in plan] == [x for x in keys if x in {s.key for _, _, s in plan}]  # the grid's order
    for start in range(len(plans) - period + 1):  # ANY window of `period` steps (a resumed run starts anywhere)
        assert {s.key for plan in plans[start : start + period] for _, _, s in plan} == set(keys)
    if period > 1:  # and no shorter one does, from step 0
        assert {s.key for plan in plans[: period - 1] for _, _, s in plan} != set(keys)
    # the width stage and the evaluation are untouched
    assert step_plan(TINY, "width", cfg, 3) == step_plan(TINY, "width", TrainConfig(), 3)


def test_rotation_zero_is_todays_recipe():
    assert step_plan(TINY, "depth", TrainConfig(subnets_per_step=0), 5) == step_plan(TINY, "depth", TrainConfig(), 5)
    assert len(step_plan(TINY, "depth", TrainConfig(), 5)) == 12 and rotation_period(TrainConfig()) == 1


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(subnets_per_step=11), r"^subnets_per_step \(--subnets-per-step\) must be in 0\.\.10 \(the grid's 4 x 3"),
        (dict(subnets_per_step=3, widths=(1.0, 0.5), depths=(1.0, 0.5)), r"must be in 0\.\.2 \(the grid's 2 x 2"),
        (dict(subnets_per_step=-1), r"^subnets_per_step \(--subnets-per-step\) must be an integer in 0\.\.64; got -1$"),
        (dict(subnets_per_step=1.5), r"must be an integer in 0\.\.64; got 1\.5$"),
        (
            dict(subnets_per_step=2, sampling="sandwich", space_samples=2),
            r"rotates the grid points of sampling \(--sampling\) 'grid'; 'sandwich' trains no grid points",
        ),
    ],
)
def test_rotation_bad_values(kw, match):
    with pytest.raises(DataError, match=match):
        TrainConfig(**kw)


def _weights(run):
    return load_file(str(run / "checkpoint" / "model.safetensors"))


def test_recipe_resume_equals_straight_run(assets, tmp_path):
    """Rotation, stratified samples and their weight: killed at step 3 and resumed == 6 steps straight,
    and the compute counted is the same."""
    cfg = TrainConfig(
        stages=("depth",),
        max_steps=6,
        checkpoint_every=3,
        subnets_per_step=3,
        space_samples=2,
        space_depths="stratified",
        space_weight=0.5,
        **FAST,
    )
    straight = tmp_path / "straight"
    s_state = train(_inputs(assets, straight), cfg, progress=False)

    broken = tmp_path / "broken"
    _train_killed_at(assets, broken, cfg, 3)
    b_state = train(_inputs(assets, broken), TrainConfig(), resume=True, progress=False)
    a, b = _weights(straight), _weights(broken)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    for k in ("flops", "student_flops", "teacher_flops", "steps", "subnets_per_step"):
        assert s_state["compute"]["depth"][k] == b_state["compute"]["depth"][k]
    assert s_state["compute"]["depth"]["subnets_per_step"] == 2 + 3 + 2
    # the loss parts are the stage's means over all 6 steps, not over the 3 run after resuming (attack pass)
    assert b_state["loss_parts"]["depth"] == pytest.approx(s_state["loss_parts"]["depth"], rel=1e-5)
    # a changed recipe on --resume is refused naming run.json
    with pytest.raises(DataError, match=r"^--subnets-per-step 4 differs from the run's 3 \(.*straight/run\.json\)"):
        train(_inputs(assets, straight), TrainConfig(subnets_per_step=4), resume=True, progress=False)
    # the weight does change the training
    heavy = tmp_path / "heavy"
    train(_inputs(assets, heavy), TrainConfig(**{**cfg.to_dict(), "space_weight": 1.0}), progress=False)
    assert any(not torch.allclose(a[k], _weights(heavy)[k]) for k in a)


@pytest.mark.parametrize(
    "bad",
    [
        {"sum": {"logit_kl": 1.0}, "steps": 1},
        {"sum": {"logit_kl": 1.0, "teacher_entropy": 1.0, "hidden_mse": None}},
        {"sum": {"logit_kl": 1.0, "teacher_entropy": 1.0, "hidden_mse": 1.0}, "steps": 99},
        "1.0",
    ],
)
def test_checkpoint_loss_parts_are_validated_on_resume(assets, tmp_path, bad):
    cfg = TrainConfig(stages=("depth",), max_steps=4, checkpoint_every=2, subnets_per_step=3, **FAST)

    run = tmp_path / "run"
    _train_killed_at(assets, run, cfg, 2)
    meta_p = run / "checkpoint" / "checkpoint.json"
    meta = json.loads(meta_p.read_text())
    assert meta["loss_parts"]["steps"] == 2
    meta_p.write_text(json.dumps({**meta, "loss_parts": bad}))
    with pytest.raises(ModelLoadError, match=r"checkpoint\.json is not a valid checkpoint file: 'loss_parts' must be"):
        train(_inputs(assets, run), TrainConfig(), resume=True, progress=False)


def test_resume_with_the_runs_own_subnets_per_step_is_accepted(assets, tmp_path, capsys):
    """`--resume --subnets-per-step K` with the run's own K resumes (it was refused as '0 differs from the
    run's K': the attack pass)."""
    run = tmp_path / "run"
    common = ["--model", str(assets["model"]), "--task", "sst2", "--data-dir", str(assets["data"])]
    fast = ["--batch-size", "16", "--max-seq-length", "32", "--max-steps", "2", "--no-progress"]
    assert main(["train", *common, "--out", str(run), "--stages", "depth", "--subnets-per-step", "3", *fast]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--subnets-per-step", "3"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--subnets-per-step", "4"]) == 2
    assert re.search(r"--subnets-per-step 4 differs from the run's 3 \(.*run\.json\)", capsys.readouterr().err)


@pytest.mark.parametrize(
    "stage, cfg, weights",
    [
        # the sandwich's smallest is fixed (weight 1) though its width is None like the samples'
        ("depth", TrainConfig(space_samples=1, sampling="sandwich", space_weight=0.5), [1.0, 1.0, 0.5]),
        ("width", TrainConfig(space_samples=2, sampling="sandwich", space_weight=0.25), [1.0, 1.0, 0.25, 0.25]),
        ("depth", TrainConfig(space_samples=4, space_weight=0.5), [1.0] * 12 + [0.5] * 4),
        ("depth", TrainConfig(space_samples=2, subnets_per_step=3, space_weight=0.5), [1.0] * 5 + [0.5] * 2),
        ("final", TrainConfig(space_samples=2, space_weight=0.5), [1.0] * 12),
        # --largest-weight: the largest (first) only, in the distillation stages, rotation or not
        ("depth", TrainConfig(space_samples=2, subnets_per_step=2, largest_weight=3.0), [3.0] + [1.0] * 5),
        ("width", TrainConfig(space_samples=1, space_weight=0.5, largest_weight=2.0), [2.0, 1.0, 1.0, 1.0, 0.5]),
        ("depth", TrainConfig(space_samples=1, sampling="sandwich", largest_weight=2.0), [2.0, 1.0, 1.0]),
        ("final", TrainConfig(largest_weight=2.0), [1.0] * 12),
    ],
)
def test_space_weight_scales_the_sampled_subnetworks_only(stage, cfg, weights):
    assert plan_weights(stage, cfg, step_plan(SIX, stage, cfg, 0)) == weights


# ---------------------------------------------------------------------------- (b) stratified samples


@pytest.mark.parametrize(
    "shape, rule, n, counts",
    [
        (SIX, "any", 4, (1, 2, 3, 4, 5, 6)),  # the demo's rule on a 6-layer backbone: 1..6 kept
        (SIX, "not-first", 3, (1, 2, 3, 4, 5, 6)),
        (SIX, "grid", 2, (3, 4, 6)),
        (TINY, "any", 3, (1, 2, 3, 4)),
    ],
)
def test_stratified_samples_spread_evenly_over_kept_layer_counts(shape, rule, n, counts):
    spec = SpaceSpec(drop_rule=rule)
    cfg = TrainConfig(space=spec.to_dict(), space_samples=n, space_depths="stratified")
    space = spec.build(shape)
    assert space.kept_counts() == counts
    period = len(counts) // math.gcd(n, len(counts))
    for start in (0, 7):  # any period of steps, a resumed run's included
        got = Counter()
        for step in range(start, start + period):
            plan = step_plan(shape, "depth", cfg, step)[12:]
            assert len(plan) == n and all(w is None for w, _, _ in plan)
            for _, _, s in plan:
                assert space.contains(s)
                got[s.depth] += 1
        assert set(got) == set(counts) and len(set(got.values())) == 1, got
    # the width stage samples at full depth, as before
    assert all(s.depth == shape.num_layers for _, _, s in step_plan(shape, "width", cfg, 0)[len(cfg.widths) :])
    # the sampled draw (today's) piles up around half the layers
    plain = TrainConfig(space=spec.to_dict(), space_samples=n)
    assert step_plan(shape, "depth", plain, 0) != step_plan(shape, "depth", cfg, 0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -0.5, 1.5, "0.5", True])
def test_space_weight_must_be_finite_positive_at_most_one(bad):
    with pytest.raises(
        DataError, match=rf"^space_weight \(--space-weight\) must be a number in \(0, 1\]; got {re.escape(repr(bad))}$"
    ):
        TrainConfig(space_samples=2, space_weight=bad)


def test_sample_options_need_samples():
    with pytest.raises(DataError, match=r"^space_weight \(--space-weight\) applies to the space samples: give"):
        TrainConfig(space_weight=0.5)
    with pytest.raises(DataError, match=r"^space_depths \(--space-depths\) applies to the space samples"):
        TrainConfig(space_depths="stratified")
    with pytest.raises(
        DataError, match=r"^unknown space_depths \(--space-depths\) 'even'; allowed: sampled, stratified$"
    ):
        TrainConfig(space_samples=1, space_depths="even")


def test_resume_message_shows_values_that_differ_past_six_digits():
    from dynabert.errors import DataError
    from dynabert.train_config import check_resumed

    with pytest.raises(
        DataError, match=r"^--largest-weight 1\.0000002 differs from the run's 1\.0000001 \(x/run\.json\)"
    ):
        check_resumed(TrainConfig(largest_weight=1.0000002), TrainConfig(largest_weight=1.0000001), "x/run.json")
    with pytest.raises(DataError, match=r"^--largest-weight 2 differs from the run's 1 \(x/run\.json\)"):
        check_resumed(TrainConfig(largest_weight=2.0), TrainConfig(), "x/run.json")
