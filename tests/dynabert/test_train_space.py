"""Training for the searched space (issue 17): every width and width+depth step trains the fixed
sub-networks (the paper's, or the space's largest and smallest under "sandwich") plus N configs
sampled from the SAME SearchSpace a search uses, seeded by (seed, stage, step)."""

import json

import pytest
import torch
from tinymodels import TINY, make_model_dir, make_sst2_dir

from dynabert.distill import fixed_plan, random_plan, step_plan
from dynabert.errors import DataError
from dynabert.modeling import DynaBertForSequenceClassification
from dynabert.runs import trained_space
from dynabert.space import SearchSpace, SpaceSpec
from dynabert.subnet import SubnetConfig
from dynabert.tasks import get_task
from dynabert.train import RunInputs, train
from dynabert.train_config import TrainConfig

FAST = dict(batch_size=16, max_seq_length=32, learning_rate=1e-3, eval_batch_size=64)
SPACE = SpaceSpec(head_choices=(1, 2, 4), ffn_choices=(16, 48, 64), drop_rule="not-first", min_layers=2)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    return {"model": make_model_dir(root / "model"), "data": make_sst2_dir(root / "sst2")}


def _inputs(assets, run):
    return RunInputs(run, get_task("sst2"), assets["model"], assets["data"])


def _weights(run, sub="checkpoint"):
    from safetensors.torch import load_file

    return load_file(str(run / sub / "model.safetensors"))


class Recorder:
    """Every forward with gradients: the active spec it ran."""

    def __init__(self, monkeypatch):
        self.calls = []
        orig = DynaBertForSequenceClassification.forward

        def forward(model, input_ids, *a, active=None, **kw):
            if torch.is_grad_enabled():
                self.calls.append(None if active is None else tuple(active))
            return orig(model, input_ids, *a, active=active, **kw)

        monkeypatch.setattr(DynaBertForSequenceClassification, "forward", forward)


def test_sandwich_trains_largest_smallest_and_samples_of_the_space(assets, tmp_path, monkeypatch):
    rec = Recorder(monkeypatch)
    cfg = TrainConfig(
        stages=("width", "depth"), max_steps=2, space=SPACE.to_dict(), space_samples=3, sampling="sandwich", **FAST
    )
    train(_inputs(assets, tmp_path / "run"), cfg, progress=False)
    space = SPACE.build(TINY)
    per_step = 2 + 3
    assert len(rec.calls) == 2 * per_step * 2  # two stages x two steps x (largest, smallest, 3 samples)
    for i, stage in enumerate(("width", "depth")):
        for step in (0, 1):
            start = (i * 2 + step) * per_step
            plan = [s for _, _, s in step_plan(TINY, stage, cfg, step)]
            assert rec.calls[start : start + per_step] == [tuple(s.active_spec()) for s in plan]
            assert plan[0] == space.largest() and plan[1] == space.smallest(full_depth=stage == "width")
            assert all(space.contains(s) for s in plan[2:])
            if stage == "width":
                assert all(s.depth == TINY.num_layers for s in plan)
    # smallest of the depth stage: min_layers layers from layer 0, the narrowest choices
    assert space.smallest() == SubnetConfig((0, 1), (1, 1), (16, 16))
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["throughput"]["depth"]["subnets_per_step"] == 5
    assert len(state["scores"]["depth"]["history"][-1]["scores"]) == 12  # checkpoints chosen on the grid, as always


def test_grid_sampling_keeps_the_paper_plan_and_adds_samples_in_both_stages():
    cfg = TrainConfig(space=SPACE.to_dict(), space_samples=2)
    assert [s for _, _, s in fixed_plan(TINY, "width", cfg)] == [
        SubnetConfig.from_grid(TINY, w, 1.0) for w in cfg.widths
    ]
    assert len(fixed_plan(TINY, "depth", cfg)) == 12
    for stage in ("width", "depth"):
        plan = step_plan(TINY, stage, cfg, 5)
        assert len(plan) == len(fixed_plan(TINY, stage, cfg)) + 2
        assert plan[-2:] == random_plan(TINY, stage, cfg, 5)  # seeded by (seed, stage, step): drawn again alike
        assert random_plan(TINY, stage, cfg, 5) != random_plan(TINY, stage, cfg, 6)
    assert random_plan(TINY, "width", cfg, 0) != random_plan(TINY, "depth", cfg, 0)
    other_seed = TrainConfig(space=SPACE.to_dict(), space_samples=2, seed=7)
    assert random_plan(TINY, "depth", cfg, 0) != random_plan(TINY, "depth", other_seed, 0)
    assert random_plan(TINY, "teacher", cfg, 0) == [] and random_plan(TINY, "final", cfg, 0) == []


def test_samples_follow_the_space_and_its_drop_rule():
    space = SPACE.build(TINY)
    cfg = TrainConfig(space=SPACE.to_dict(), space_samples=4)
    drawn = [s for step in range(60) for _, _, s in random_plan(TINY, "depth", cfg, step)]
    assert all(space.contains(s) and s.layers[0] == 0 and s.depth >= 2 for s in drawn)
    assert {h for s in drawn for h in s.heads} == {1, 2, 4} and {f for s in drawn for f in s.ffn} == {16, 48, 64}
    assert len({s.layers for s in drawn}) > 1  # layers are dropped too
    grid_rule = SpaceSpec(drop_rule="grid").build(TINY)
    g = TrainConfig(space=SpaceSpec(drop_rule="grid").to_dict(), space_samples=4)
    pats = set(grid_rule.keep_patterns())
    assert {s.layers for step in range(40) for _, _, s in random_plan(TINY, "depth", g, step)} == pats


def test_mid_bias_prefers_the_middle_choices():
    import random

    space = SearchSpace(TINY, (1, 2, 3, 4), (16, 32, 48, 64), False)
    rng = random.Random(0)
    heads = [h for _ in range(400) for h in space.sample(rng, "mid").heads]
    mid, ends = sum(h in (2, 3) for h in heads), sum(h in (1, 4) for h in heads)
    assert mid > 1.5 * ends  # weights 1, 2, 2, 1: about 2x
    rng = random.Random(0)
    heads = [h for _ in range(400) for h in space.sample(rng, "uniform").heads]
    assert 0.8 < sum(h in (2, 3) for h in heads) / sum(h in (1, 4) for h in heads) < 1.25


def test_sandwich_resume_equals_straight_run(assets, tmp_path):
    cfg = TrainConfig(
        stages=("width", "depth"),
        max_steps=4,
        checkpoint_every=2,
        space=SPACE.to_dict(),
        space_samples=2,
        sampling="sandwich",
        **FAST,
    )
    straight = tmp_path / "straight"
    train(_inputs(assets, straight), cfg, progress=False)

    class Killed(Exception):
        pass

    def kill(stage, step):
        if stage == "depth" and step == 3:
            raise Killed

    broken = tmp_path / "broken"
    with pytest.raises(Killed):
        train(_inputs(assets, broken), cfg, progress=False, on_step=kill)
    train(_inputs(assets, broken), TrainConfig(), resume=True, progress=False)
    a, b = _weights(straight, "width_depth"), _weights(broken, "width_depth")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    saved = json.loads((broken / "run.json").read_text())["config"]
    assert trained_space(saved, TINY) == SPACE.build(TINY)


def test_trained_space_of_a_run_config():
    assert trained_space(TrainConfig().to_dict(), TINY) is None  # the paper: the fixed sub-networks only
    assert trained_space(TrainConfig(random_subnets=2).to_dict(), TINY) == SearchSpace.default(TINY)
    assert trained_space(TrainConfig(space_samples=1).to_dict(), TINY) == SearchSpace.default(TINY)


@pytest.mark.parametrize(
    "kw, message",
    [
        (
            dict(space_samples=-1),
            r"^space_samples \(--space-samples\) must be an integer in 0\.\.64; got -1$",
        ),
        (dict(space_samples=True), r"^space_samples \(--space-samples\) must be an integer in 0\.\.64; got True$"),
        (dict(space_samples=1, sampling="ofa"), r"^unknown sampling \(--sampling\) 'ofa'; allowed: grid, sandwich$"),
        (
            dict(space_samples=1, space_bias="edge"),
            r"^unknown space_bias \(--space-bias\) 'edge'; allowed: uniform, mid$",
        ),
        (
            dict(sampling="sandwich"),
            r"^sampling \(--sampling\) 'sandwich' needs space_samples \(--space-samples\) >= 1 .*; got 0$",
        ),
        (
            dict(space_samples=1, random_subnets=1),
            r"^give space_samples \(--space-samples\) .* or random_subnets \(--random-subnets\) .*, not both; got space_samples=1, random_subnets=1$",
        ),
        (
            dict(space_samples=1, space={"drop_rule": "last"}),
            r"^unknown space drop_rule \(--drop-rule\) 'last'; allowed: any, not-first, grid, none$",
        ),
        (dict(space_samples=1, space={"head_choices": ["x"]}), r"space .* is malformed"),
        (dict(space_samples=1, space=[1, 2]), r"space must be a space description \(a dict\); got \[1, 2\]"),
    ],
)
def test_bad_training_space_options(kw, message):
    with pytest.raises(DataError, match=message):
        TrainConfig(**kw)


def test_space_outside_the_backbone_is_refused_before_anything_is_written(assets, tmp_path):
    cfg = TrainConfig(stages=("width",), max_steps=1, space={"head_choices": [2, 9]}, space_samples=1, **FAST)
    with pytest.raises(DataError, match=r"a head choice must be an integer in 0\.\.4; got 9"):
        train(_inputs(assets, tmp_path / "run"), cfg, progress=False)
    assert not (tmp_path / "run").exists()
