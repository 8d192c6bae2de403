"""`dynasearch train --bf16` (issue 25): bfloat16 autocast of the training forwards, only where bf16 is native."""

import json
import math

import pytest
import torch
from tinymodels import make_model_dir, make_sst2_dir

from dynabert import checks
from dynabert.errors import DataError
from dynabert.tasks import get_task
from dynabert.train import RunInputs, train
from dynabert.train_config import TrainConfig
from dynasearch.cli import main

FAST = dict(batch_size=16, max_seq_length=32, max_steps=3, learning_rate=1e-3, eval_batch_size=64)
CLI_FAST = ["--batch-size", "16", "--max-seq-length", "32", "--max-steps", "1", "--no-progress"]
NATIVE = checks.bf16_unsupported("cpu")  # None where this CPU has native bf16


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    return {
        "model": make_model_dir(root / "model", dropout=0.0),
        "data": make_sst2_dir(root / "data", n_train=96, n_dev=32),
    }


@pytest.fixture
def on_cpu(monkeypatch):
    """Training on the CPU, whatever else the machine has (the refusal tested is the CPU's)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _cli_train(assets, out, *extra) -> list[str]:
    return [
        "train",
        "--model",
        str(assets["model"]),
        "--task",
        "sst2",
        "--data-dir",
        str(assets["data"]),
        "--out",
        str(out),
        "--stages",
        "teacher",
        *CLI_FAST,
        *extra,
    ]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert len(err) == 1, err
    return err[0]


@pytest.mark.skipif(NATIVE is not None, reason=f"no native bf16 here: {NATIVE}")
def test_bf16_training_is_close_to_float32(assets, tmp_path, on_cpu):
    """Every forwarding stage under bf16: finite losses near float32's (loose: bf16 keeps 8 bits of mantissa),
    but not equal to them (autocast was on), and run.json records it."""
    stages = ("teacher", "rewire", "width", "depth", "final")
    state = {}
    for bf16 in (False, True):
        run = tmp_path / ("bf16" if bf16 else "fp32")
        cfg = TrainConfig(stages=stages, bf16=bf16, **FAST)
        state[bf16] = train(RunInputs(run, get_task("sst2"), assets["model"], assets["data"]), cfg, progress=False)
        assert json.loads((run / "run.json").read_text())["config"]["bf16"] is bf16
        assert state[bf16]["completed"] == list(stages)
    for stage in ("width", "depth"):
        a, b = state[False]["loss_parts"][stage], state[True]["loss_parts"][stage]
        for part in ("logit_kl", "teacher_entropy", "hidden_mse"):
            assert math.isfinite(b[part]), (stage, part, b)
            assert b[part] == pytest.approx(a[part], rel=0.1, abs=1e-3), (stage, part, a, b)
        assert a != b, "the bf16 losses equal float32's to the last bit: autocast was not on"
    for stage in ("teacher", "width", "depth", "final"):
        assert math.isfinite(state[True]["scores"][stage]["best"])


def test_bf16_refused_without_native_bf16(assets, tmp_path, capsys, monkeypatch, on_cpu):
    """One line naming the CPU and what is needed, exit 2, no run directory."""
    monkeypatch.setattr(checks, "cpu_bf16_flags", lambda: ())
    out = tmp_path / "run"
    assert main(_cli_train(assets, out, "--bf16")) == 2
    line = _one_error_line(capsys)
    assert line.startswith("dynasearch train: error: --bf16 needs native bfloat16: the CPU '"), line
    assert line.endswith(
        "' has neither AVX512-BF16 nor AMX, so bf16 would be emulated (slower than float32); train without --bf16"
    ), line
    assert not out.exists()
    with pytest.raises(DataError, match="needs native bfloat16"):  # the API refuses too
        train(RunInputs(out, get_task("sst2"), assets["model"], assets["data"]), TrainConfig(bf16=True, **FAST))
    assert not out.exists()


def test_resume_keeps_the_runs_bf16(assets, tmp_path, capsys, monkeypatch, on_cpu):
    """--bf16 on resuming a float32 run is refused naming run.json; a bf16 run resumed where bf16 is not
    native is refused too (the run's configuration applies), and nothing is changed."""
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    assert main(_cli_train(assets, fp32)) == 0
    capsys.readouterr()
    before = (fp32 / "run.json").read_bytes()
    assert main(["train", "--out", str(fp32), "--resume", "--no-progress", "--bf16"]) == 2
    line = _one_error_line(capsys)
    assert f"--bf16 was not used to train the run ({fp32}/run.json): a resumed run keeps" in line, line
    assert (fp32 / "run.json").read_bytes() == before

    monkeypatch.setattr(checks, "cpu_bf16_flags", lambda: ("avx512_bf16",))  # emulated where not native: tiny
    assert main(_cli_train(assets, bf16, "--bf16")) == 0
    assert json.loads((bf16 / "run.json").read_text())["config"]["bf16"] is True
    capsys.readouterr()
    monkeypatch.setattr(checks, "cpu_bf16_flags", lambda: ())
    files = {p: p.read_bytes() for p in bf16.rglob("*") if p.is_file()}
    assert main(["train", "--out", str(bf16), "--resume", "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert f"the run's bf16 ({bf16}/run.json) needs native bfloat16: the CPU '" in line, line
    assert line.endswith("resume it on such a machine, or train a new run without --bf16"), line
    assert {p: p.read_bytes() for p in bf16.rglob("*") if p.is_file()} == files


def test_bf16_must_be_a_boolean():
    with pytest.raises(DataError, match="bf16 must be true or false; got 'yes'"):
        TrainConfig(bf16="yes")
    assert TrainConfig.from_dict({"stages": ["teacher"]}).bf16 is False  # run.json written before the field
