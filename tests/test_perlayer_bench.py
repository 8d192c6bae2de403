"""bench/perlayer.py: adopting a finished run trained elsewhere (e.g. by the training sweep) only when its recipe is
the variant's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from benchload import load_bench

from dynabert.train_config import TrainConfig

DEFAULT_SPACE = {"head_choices": None, "ffn_choices": None, "ffn_step": None, "min_layers": 1, "drop_rule": "any"}


@pytest.fixture(scope="module")
def pl():
    return load_bench("perlayer", "perlayer_bench")


def _run(tmp: Path, config: dict) -> Path:
    run = tmp / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": config}))
    scores = {"history": [{"step": 62, "scores": {"1x1": 70.0}}], "best": 70.0}
    state = {
        "completed": ["width", "depth"],
        "scores": {"width": scores, "depth": scores},
        "throughput": {"width": {"seconds": 100.0}, "depth": {"seconds": 200.0}},
    }
    (run / "state.json").write_text(json.dumps(state))
    return run


def _sweep_config(cfg: TrainConfig, **changes) -> dict:
    """What the sweep records: epochs rounded to its planner's (n - 0.5) / per_epoch, the resolved space, no
    teacher learning rate."""
    d = json.loads(json.dumps(dataclasses.asdict(cfg)))
    d.update(stage_epochs=[["width", 0.252], ["depth", 0.492]], epochs=3.0, space=DEFAULT_SPACE)
    d["stage_learning_rates"] = [p for p in d["stage_learning_rates"] if p[0] != "teacher"]
    d.update(changes)
    return d


def test_adopts_the_same_recipe_and_refuses_another(pl, tmp_path):
    cfg = TrainConfig(stages=("width", "depth"), **pl.TRAIN, **pl.VARIANTS["grid+4-mid"])
    for d in "abc":
        (tmp_path / d).mkdir()
    rec = pl.adopt(_run(tmp_path / "a", _sweep_config(cfg)), cfg, "v")
    assert rec["wall_s"] == 300.0 and rec["adopted"].endswith("run")
    other = _run(tmp_path / "b", _sweep_config(cfg, subnets_per_step=0))
    with pytest.raises(
        SystemExit, match=r"trained with another recipe than variant 'v': \{'subnets_per_step': \(0, 2\)"
    ):
        pl.adopt(other, cfg, "v")
    older = dict(_sweep_config(cfg))
    del older["largest_weight"]  # a run.json written before the field existed: it had the default
    (tmp_path / "d").mkdir()
    assert pl.adopt(_run(tmp_path / "d", older), cfg, "v")["adopted"]
    fewer = _run(tmp_path / "c", _sweep_config(cfg, stage_epochs=[["width", 0.252], ["depth", 0.25]]))
    with pytest.raises(SystemExit, match="stage_epochs"):
        pl.adopt(fewer, cfg, "v")
