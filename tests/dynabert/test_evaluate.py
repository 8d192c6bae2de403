"""The evaluation core a search calls: load_dev_set (once) and score_subnet (per candidate)."""

import pytest
from tinymodels import TINY, make_model_dir, make_sst2_dir

from dynabert.backbone import load_model
from dynabert.errors import DataError
from dynabert.evaluate import evaluate_subnets, load_dev_set, score_subnet, seeded_subset
from dynabert.subnet import SubnetConfig
from dynabert.tasks import get_task


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {"model": make_model_dir(root / "model"), "data": make_sst2_dir(root / "data", n_train=8, n_dev=40)}


def test_load_dev_set_all_and_subset(assets):
    task = get_task("sst2")
    full = load_dev_set(task, assets["model"], data_dir=assets["data"], max_seq_length=24)
    assert (full.n, full.selection, full.max_seq_length) == (40, "all", 24)
    sub = load_dev_set(task, assets["model"], data_dir=assets["data"], subset=10, seed=3)
    assert (sub.n, sub.selection) == (10, "subset-10-seed3")
    assert list(sub.labels) == [full.labels[i] for i in seeded_subset(40, 10, 3)]  # seeded, reproducible
    again = load_dev_set(task, assets["model"], data_dir=assets["data"], subset=10, seed=3)
    assert list(again.labels) == list(sub.labels)
    assert seeded_subset(40, 10, 4) != seeded_subset(40, 10, 3)
    everything = load_dev_set(task, assets["model"], data_dir=assets["data"], subset=40)
    assert (everything.n, everything.selection) == (40, "all")  # N >= size: all, same cache key as no subset


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(subset=0), "subset must be an integer >= 1; got 0"),
        (dict(subset=2.5), "subset must be an integer >= 1; got 2.5"),
        (dict(batch_size=0), "batch_size must be an integer >= 1; got 0"),
    ],
)
def test_load_dev_set_refuses_bad_arguments(assets, kw, message):
    with pytest.raises(DataError, match=message):
        load_dev_set(get_task("sst2"), assets["model"], data_dir=assets["data"], **kw)


def test_load_dev_set_empty(assets, tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(DataError, match="the dev set of task sst2 is empty"):
        load_dev_set(get_task("sst2"), assets["model"], dev_file=tmp_path / "dev.tsv")


def test_score_subnet_is_what_evaluate_subnets_reports(assets):
    model = load_model(assets["model"])
    dev = load_dev_set(get_task("sst2"), assets["model"], data_dir=assets["data"], batch_size=7)
    sub = SubnetConfig((0, 3), (2, 1), (32, 16)).validate(TINY)
    scores = score_subnet(model, dev, sub, ("accuracy", "f1"))
    assert set(scores) == {"accuracy", "f1"} and all(isinstance(v, float) for v in scores.values())
    assert (
        0 <= scores["accuracy"] <= 100
        and abs(scores["accuracy"] * 40 / 100 - round(scores["accuracy"] * 40 / 100)) < 1e-6
    )
    row = evaluate_subnets(model, dev, [(None, None, sub)], ("accuracy", "f1")).iloc[0]
    assert row["accuracy"] == scores["accuracy"] and row["f1"] == scores["f1"] and row["examples"] == 40
    assert score_subnet(model, dev, None, ("accuracy",)) == score_subnet(
        model, dev, SubnetConfig.full(TINY), ("accuracy",)
    )
