"""Run directories: resolve_run, model_digest, is_dynabert_trained, and every broken run file."""

import shutil

import pytest
from tinymodels import make_model_dir, make_sst2_dir

from dynabert.errors import DataError, InvalidSubnetError, ModelLoadError
from dynabert.io import read_json
from dynabert.runs import RunInfo, is_dynabert_trained, model_digest, resolve_run, run_model_dir, run_task
from dynabert.subnet import SubnetConfig
from dynabert.tasks import get_task
from dynabert.train import RunInputs, train
from dynabert.train_config import TrainConfig

FAST = dict(batch_size=16, max_seq_length=24, learning_rate=1e-3, eval_batch_size=64, max_steps=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    model, data = make_model_dir(root / "model"), make_sst2_dir(root / "data", n_train=48, n_dev=16)
    out = root / "run"
    train(
        RunInputs(out, get_task("sst2"), model, data),
        TrainConfig(stages=("teacher", "rewire", "width", "depth"), **FAST),
        progress=False,
    )
    return out


def copy_run(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_resolve_a_run_and_its_stages(run):
    info = resolve_run(run)
    assert info == RunInfo(
        run / "width_depth", run, get_task("sst2"), 24, "depth", ("teacher", "rewire", "width", "depth")
    )
    teacher = resolve_run(run, "teacher")
    assert teacher.model_dir == run / "teacher" and teacher.stage == "teacher" and teacher.task.name == "sst2"
    with pytest.raises(ModelLoadError, match=r"has no finished stage 'final'; finished: \['teacher'"):
        resolve_run(run, "final")


def test_resolve_a_plain_model_dir(run, tmp_path):
    info = resolve_run(run / "rewired")  # a stage dir given directly: its stage.json says which stage
    assert info == RunInfo(run / "rewired", None, None, None, "rewire", ())
    plain = make_model_dir(tmp_path / "m")
    assert resolve_run(plain) == RunInfo(plain, None, None, None, None, ())
    with pytest.raises(ModelLoadError, match="is a model directory, not a training run: --stage width"):
        resolve_run(plain, "width")
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_run(tmp_path / "absent")


def test_is_dynabert_trained(run, tmp_path):
    assert is_dynabert_trained(resolve_run(run)) is None
    assert is_dynabert_trained(resolve_run(run, "width")) is None
    assert "width-only (DynaBERT_W)" in is_dynabert_trained(resolve_run(run, "width"), need_depth=True)
    reason = is_dynabert_trained(resolve_run(run, "teacher"))
    assert reason == (
        f"model dir {run / 'teacher'} is a teacher checkpoint, not a width+depth-trained DynaBERT model: "
        "its sub-networks' metrics mean nothing"
    )
    assert "is a rewired checkpoint" in is_dynabert_trained(resolve_run(run, "rewire"))
    assert "has no stage.json" in is_dynabert_trained(resolve_run(make_model_dir(tmp_path / "m")))


def test_model_digest_is_of_the_weights_only(run, tmp_path):
    d = model_digest(run / "width_depth")
    assert len(d) == 16 and int(d, 16) >= 0
    moved = shutil.copytree(run / "width_depth", tmp_path / "elsewhere")
    (moved / "stage.json").write_text("{}")  # not a weight file
    assert model_digest(moved) == d
    assert model_digest(run / "width") != d
    with pytest.raises(ModelLoadError, match="has no weight file"):
        model_digest(tmp_path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("state.json", b'{"completed": ["teacher", "rew', r"run state file .*state.json is not valid JSON \(truncated"),
        (
            "state.json",
            b"\xff\xfe\x00garbage",
            r"run state file .*state.json is not UTF-8 text \(byte 0xff at offset 0\)",
        ),
        (
            "state.json",
            b'{"completed": "teacher", "model": "teacher"}',
            r"state.json is not a valid run state file: 'completed' must be a list",
        ),
        ("state.json", b"[1, 2]", r"run state file .*state.json must hold a JSON object; got array"),
        ("run.json", bytes(range(128, 256)), r"run file .*run.json is not UTF-8 text"),
        ("run.json", b'{"task": "sst2"}', r"run.json is not a valid run file: field 'task' must be a JSON object"),
        (
            "width_depth/stage.json",
            b'{"stage": 3}',
            r"stage.json is not a valid stage info file: 'stage' must be one of",
        ),
    ],
)
def test_broken_run_files_give_one_line(run, tmp_path, name, content, message):
    broken = copy_run(run, tmp_path)
    (broken / name).write_bytes(content)
    with pytest.raises(ModelLoadError, match=message) as e:
        info = resolve_run(broken)
        is_dynabert_trained(info)
    assert "\n" not in str(e.value)


def test_run_task_and_model_dir_of_broken_run(run, tmp_path):
    broken = copy_run(run, tmp_path)
    (broken / "run.json").write_text('{"task": {"name": "sst2"}, "config": {}, "backbone": {}, "model_dir": "x"}')
    with pytest.raises(ModelLoadError, match="bad task description"):
        run_task(broken)
    (broken / "state.json").write_text('{"completed": [], "model": "../etc"}')
    with pytest.raises(ModelLoadError, match="'model' must be a stage directory name"):
        run_model_dir(broken)


def test_read_json_one_helper(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": 1')
    with pytest.raises(DataError, match=r"settings file .*x.json is not valid JSON \(truncated"):
        read_json(p, "settings file")
    p.write_text('{"a": 1} }')
    with pytest.raises(DataError, match=r"not valid JSON \(malformed: Extra data"):
        read_json(p, "settings file")
    with pytest.raises(DataError, match="cannot read settings file .*nope.json"):
        read_json(tmp_path / "nope.json", "settings file")
    p.write_text("[1]")
    assert read_json(p, "settings file", kind=list) == [1]
    with pytest.raises(DataError, match="must hold a JSON object; got array"):
        read_json(p, "settings file")


def test_subnet_file_with_non_utf8_tail(tmp_path):
    p = tmp_path / "sub.json"
    p.write_bytes(b'{"layers":[0],"heads":[1],"ffn":[4]}\n\xff\xfe')
    with pytest.raises(
        InvalidSubnetError, match=r"subnet file .*sub.json is not UTF-8 text \(byte 0xff at offset 37\)"
    ):
        SubnetConfig.load(p)
    p.write_bytes(b'{"layers":[0],"heads":[1],"ffn":[4')
    with pytest.raises(InvalidSubnetError, match=r"subnet file .*sub.json is not valid JSON \(truncated"):
        SubnetConfig.load(p)
    p.write_text('{"layers":[0],"heads":[1],"ffn":[4]}')
    assert SubnetConfig.load(p).layers == (0,)
