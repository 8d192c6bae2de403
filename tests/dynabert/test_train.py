"""The training pipeline on a tiny random backbone and a synthetic SST-2-layout task."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tinymodels import TINY, make_model_dir, make_sst2_dir

from dynabert.errors import DataError, ModelLoadError, OutputExistsError
from dynabert.modeling import DynaBertForSequenceClassification
from dynabert.subnet import SubnetConfig
from dynabert.tasks import get_task
from dynabert.train import RunInputs, hidden_pairs, train
from dynabert.train_config import TrainConfig

FAST = dict(batch_size=16, max_seq_length=32, epochs=1.0, learning_rate=1e-3, eval_batch_size=64)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    return {
        "model": make_model_dir(root / "model"),
        "model_nodrop": make_model_dir(root / "model0", dropout=0.0),
        "data": make_sst2_dir(root / "data", n_train=160, n_dev=48),
    }


def weights(run: Path, sub: str) -> dict:
    return load_file(str(run / sub / "model.safetensors"))


def test_whole_pipeline_learns_and_writes_a_run(assets, tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(
        stages=("teacher", "rewire", "width", "depth", "final"),
        epochs=5.0,
        learning_rate=4e-3,
        **{k: v for k, v in FAST.items() if k not in ("epochs", "learning_rate")},
    )
    state = train(RunInputs(run, get_task("sst2"), assets["model"], assets["data"]), cfg, progress=False)
    assert state["completed"] == ["teacher", "rewire", "width", "depth", "final"]
    for d in ("teacher", "rewired", "width", "width_depth", "final", "checkpoint"):
        assert (run / d).is_dir()
    rec = json.loads((run / "run.json").read_text())
    assert rec["config"]["stages"] == list(cfg.stages) and rec["task"]["name"] == "sst2"
    assert rec["rewire_holdout_examples"] == 16 and rec["train_examples"] == 144
    assert "stage depth" in (run / "train.log").read_text()
    saved = json.loads((run / "width_depth" / "stage.json").read_text())  # configuration beside the weights
    assert saved["config"]["depth_teacher"] == "same-width" and saved["task"]["name"] == "sst2"
    # the synthetic task is easy: the teacher must learn it, the width+depth model at every grid point
    assert state["scores"]["teacher"]["best"] >= 90
    last = state["scores"]["depth"]["history"][-1]["scores"]
    assert len(last) == 12 and min(last.values()) >= 80, last
    assert state["scores"]["rewire"]["max_logit_change"] < 1e-5
    assert set(state["throughput"]) == {"teacher", "width", "depth", "final"}
    assert not list(run.glob(".*tmp"))  # no temporary leftovers


class Recorder:
    """Records every model forward: (grad enabled, active spec, inference mode)."""

    def __init__(self, monkeypatch):
        self.calls = []
        orig = DynaBertForSequenceClassification.forward
        rec = self

        def forward(model, input_ids, *a, active=None, **kw):
            rec.calls.append(
                (torch.is_grad_enabled(), None if active is None else tuple(active), torch.is_inference_mode_enabled())
            )
            return orig(model, input_ids, *a, active=active, **kw)

        monkeypatch.setattr(DynaBertForSequenceClassification, "forward", forward)


@pytest.mark.parametrize("teacher_mode", ["same-width", "full-width"])
def test_subnetworks_per_step_order_and_count(assets, tmp_path, monkeypatch, teacher_mode):
    rec = Recorder(monkeypatch)
    cfg = TrainConfig(
        stages=("width", "depth"),
        max_steps=2,
        depth_teacher=teacher_mode,
        **{k: v for k, v in FAST.items() if k != "epochs"},
    )
    train(RunInputs(tmp_path / "run", get_task("sst2"), assets["model"], assets["data"]), cfg, progress=False)
    train_calls = [(g, a) for g, a, inf in rec.calls if not inf]
    grid = lambda w, d: tuple(SubnetConfig.from_grid(TINY, w, d).active_spec())  # noqa: E731
    width_step = [(False, None)] + [(True, grid(w, 1.0)) for w in (1.0, 0.75, 0.5, 0.25)]
    if teacher_mode == "same-width":
        teacher = [(False, None)] + [(False, grid(w, 1.0)) for w in (0.75, 0.5, 0.25)]
    else:
        teacher = [(False, None)]
    depth_step = teacher + [(True, grid(w, d)) for d in (1.0, 0.75, 0.5) for w in (1.0, 0.75, 0.5, 0.25)]
    assert train_calls == width_step * 2 + depth_step * 2
    # 4-layer backbone: depth 0.75 keeps layers 0,1,2; depth 0.5 keeps 0,2
    assert SubnetConfig.from_grid(TINY, 1.0, 0.5).layers == (0, 2)


def test_hidden_state_mapping():
    sub = SubnetConfig.from_grid(TINY, 0.5, 0.5)  # layers 0, 2
    assert hidden_pairs(sub, 4) == [(0, 0), (1, 2), (2, 4)]
    assert hidden_pairs(None, 4) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]


def _cfg(**kw):
    base = dict(
        stages=("teacher", "width"), max_steps=6, checkpoint_every=3, **{k: v for k, v in FAST.items() if k != "epochs"}
    )
    base.update(kw)
    return TrainConfig(**base)


class Killed(Exception):
    pass


def test_resume_equals_straight_run(assets, tmp_path):
    """N steps, kill, resume for N more == 2N steps straight (dropout on: RNG state is restored too)."""
    inputs = lambda run: RunInputs(run, get_task("sst2"), assets["model"], assets["data"])  # noqa: E731
    straight = tmp_path / "straight"
    train(inputs(straight), _cfg(), progress=False)

    def kill(stage, step):
        if stage == "width" and step == 3:
            raise Killed

    broken = tmp_path / "broken"
    with pytest.raises(Killed):
        train(inputs(broken), _cfg(), progress=False, on_step=kill)
    assert json.loads((broken / "checkpoint" / "checkpoint.json").read_text())["step"] == 3
    state = train(inputs(broken), TrainConfig(), resume=True, progress=False)  # config comes from run.json
    assert state["completed"] == ["teacher", "width"]
    a, b = (
        load_file(str(straight / "checkpoint" / "model.safetensors")),
        load_file(str(broken / "checkpoint" / "model.safetensors")),
    )
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    oa, ob = (
        load_file(str(straight / "checkpoint" / "optimizer.safetensors")),
        load_file(str(broken / "checkpoint" / "optimizer.safetensors")),
    )
    for k in oa:
        torch.testing.assert_close(oa[k], ob[k], rtol=1e-5, atol=1e-7, msg=k)
    sa = json.loads((straight / "state.json").read_text())["scores"]
    sb = json.loads((broken / "state.json").read_text())["scores"]
    assert sa["width"]["history"] == sb["width"]["history"]


def test_best_checkpoint_is_kept(assets, tmp_path):
    run = tmp_path / "run"
    state = train(
        RunInputs(run, get_task("sst2"), assets["model"], assets["data"]),
        _cfg(stages=("teacher",), max_steps=9, eval_every=3),
        progress=False,
    )
    hist = state["scores"]["teacher"]["history"]
    best = max(hist, key=lambda h: h["score"])
    assert json.loads((run / "teacher" / "stage.json").read_text())["step"] == best["step"]


# ---------------------------------------------------------------- bad input
def test_max_length_above_positions(assets, tmp_path):
    with pytest.raises(DataError, match=r"max sequence length 100 is outside 2..64"):
        train(
            RunInputs(tmp_path / "r", get_task("sst2"), assets["model"], assets["data"]),
            _cfg(max_seq_length=100),
            progress=False,
        )
    assert not (tmp_path / "r").exists()


def test_output_holding_another_run(assets, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="exists and is not empty; pass --overwrite"):
        train(RunInputs(run, get_task("sst2"), assets["model"], assets["data"]), _cfg(), progress=False)
    assert (run / "run.json").read_text() == "{}"


def test_resume_other_task_or_backbone(assets, tmp_path):
    run = tmp_path / "run"
    train(
        RunInputs(run, get_task("sst2"), assets["model"], assets["data"]),
        _cfg(stages=("teacher",), max_steps=1),
        progress=False,
    )
    before = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoint").iterdir()}
    mrpc_dir = tmp_path / "mrpc"
    mrpc_dir.mkdir()
    for f in ("train.tsv", "dev.tsv"):
        (mrpc_dir / f).write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tgood movie\tgreat film\n")
    with pytest.raises(DataError, match="cannot resume: run .* trains task 'sst2', not 'mrpc'"):
        train(RunInputs(run, get_task("mrpc"), assets["model"], mrpc_dir), resume=True, progress=False)
    with pytest.raises(ModelLoadError, match="cannot resume: run .* was started from backbone"):
        train(RunInputs(run, get_task("sst2"), assets["model_nodrop"], assets["data"]), resume=True, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoint").iterdir()} == before


def test_empty_training_set(assets, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.tsv").write_text("sentence\tlabel\n")
    (d / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match="training set of task sst2 is empty"):
        train(RunInputs(tmp_path / "r", get_task("sst2"), assets["model"], d), _cfg(), progress=False)
    assert not (tmp_path / "r").exists()


def test_bad_config_values():
    with pytest.raises(DataError, match=r"unknown or no stage\(s\) \['distil'\]"):
        TrainConfig(stages=("teacher", "distil"))
    with pytest.raises(DataError, match=r"widths must be unique and in descending order"):
        TrainConfig(widths=(0.5, 1.0))
    with pytest.raises(DataError, match="depth_teacher must be 'same-width' or 'full-width'; got 'x'"):
        TrainConfig(depth_teacher="x")


def test_dev_subset_scores_on_that_many_examples(assets, tmp_path):
    state = train(
        RunInputs(tmp_path / "r", get_task("sst2"), assets["model"], assets["data"]),
        _cfg(stages=("teacher",), max_steps=1, dev_subset=7),
        progress=False,
    )
    acc = state["scores"]["teacher"]["best"]
    assert abs(acc * 7 / 100 - round(acc * 7 / 100)) < 1e-6  # a multiple of 1/7
    with pytest.raises(DataError, match=r"dev_subset \(when given\) must be an integer in 1\.\.1000000000; got 0"):
        TrainConfig(dev_subset=0)


# ---------------------------------------------------------------- random per-layer sub-networks (issue 8 item 9)
def test_random_subnets_add_to_the_grid_each_step(assets, tmp_path, monkeypatch):
    """N=2: each width+depth step trains the 12 grid sub-networks, then 2 random per-layer ones,
    drawn afresh every step from the per-layer space; the teacher runs as without them."""
    from dynabert.distill import random_plan
    from dynabert.space import SearchSpace

    rec = Recorder(monkeypatch)
    cfg = TrainConfig(
        stages=("depth",), max_steps=2, random_subnets=2, **{k: v for k, v in FAST.items() if k != "epochs"}
    )
    train(RunInputs(tmp_path / "run", get_task("sst2"), assets["model"], assets["data"]), cfg, progress=False)
    calls = [(g, a) for g, a, inf in rec.calls if not inf]
    grid = [
        tuple(SubnetConfig.from_grid(TINY, w, d).active_spec())
        for d in (1.0, 0.75, 0.5)
        for w in (1.0, 0.75, 0.5, 0.25)
    ]
    per_step = len(calls) // 2
    assert per_step == 4 + 12 + 2  # teacher at each width (no grad), then 12 + 2 forward+backward
    space = SearchSpace.default(TINY)
    for step in (0, 1):
        part = calls[step * per_step : (step + 1) * per_step]
        assert [g for g, _ in part] == [False] * 4 + [True] * 14
        assert [a for _, a in part[4:16]] == grid
        randoms = [s for _, _, s in random_plan(TINY, "depth", cfg, step)]
        assert [a for _, a in part[16:]] == [tuple(s.active_spec()) for s in randoms]
        assert all(space.contains(s) for s in randoms)
    assert random_plan(TINY, "depth", cfg, 0) != random_plan(TINY, "depth", cfg, 1)
    assert random_plan(TINY, "final", cfg, 0) == [] and random_plan(TINY, "depth", _cfg(), 0) == []
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["throughput"]["depth"]["subnets_per_step"] == 14
    assert len(state["scores"]["depth"]["history"][-1]["scores"]) == 12  # dev scores the grid only


def test_random_subnets_resume_equals_straight_run(assets, tmp_path):
    cfg = _cfg(stages=("depth",), random_subnets=2)
    inputs = lambda run: RunInputs(run, get_task("sst2"), assets["model"], assets["data"])  # noqa: E731
    straight = tmp_path / "straight"
    train(inputs(straight), cfg, progress=False)

    def kill(stage, step):
        if step == 3:
            raise Killed

    broken = tmp_path / "broken"
    with pytest.raises(Killed):
        train(inputs(broken), cfg, progress=False, on_step=kill)
    train(inputs(broken), TrainConfig(), resume=True, progress=False)
    a, b = weights(straight, "checkpoint"), weights(broken, "checkpoint")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    plain = tmp_path / "plain"  # and the random sub-networks did change the training
    train(inputs(plain), _cfg(stages=("depth",)), progress=False)
    assert any(not torch.allclose(a[k], weights(plain, "checkpoint")[k]) for k in a)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_random_subnets_must_be_a_count(bad):
    with pytest.raises(
        DataError,
        match=rf"^random_subnets \(--random-subnets\) must be an integer in 0\.\.1000000000; got {re.escape(repr(bad))}$",
    ):
        TrainConfig(random_subnets=bad)


def test_stage_budgets_override_the_global_ones():
    cfg = TrainConfig(
        learning_rate=2e-5, stage_learning_rates={"depth": 1e-4}, epochs=3.0, stage_epochs=[["width", 0.25]]
    )
    assert (cfg.lr_for("depth"), cfg.lr_for("width"), cfg.epochs_for("width"), cfg.epochs_for("teacher")) == (
        1e-4,
        2e-5,
        0.25,
        3.0,
    )
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # run.json round trip
    with pytest.raises(DataError, match=r"stage_learning_rates: unknown stage\(s\) \['distil'\]"):
        TrainConfig(stage_learning_rates={"distil": 1e-4})
    with pytest.raises(DataError, match=r"stage_epochs: the value of depth must be a number in \(0, 1000\]; got 0\.0"):
        TrainConfig(stage_epochs={"depth": 0})


def test_stage_epochs_set_the_steps_and_loss_parts_are_kept(assets, tmp_path):
    base = {k: v for k, v in FAST.items()}
    state = train(
        RunInputs(tmp_path / "r", get_task("sst2"), assets["model"], assets["data"]),
        TrainConfig(stages=("teacher", "width"), stage_epochs={"width": 0.5}, width_hidden_weight=0.0, **base),
        progress=False,
    )
    t_steps = state["scores"]["teacher"]["history"][-1]["step"]
    assert state["scores"]["width"]["history"][-1]["step"] == -(-t_steps // 2)  # ceil(0.5 * steps per epoch)
    parts = state["loss_parts"]["width"]
    # The soft cross-entropy's floor is the teacher's entropy (> 0); no hidden term with weight 0.
    assert parts["teacher_entropy"] > 0 and parts["logit_kl"] >= 0 and parts["hidden_mse"] == 0
