"""Deployment export through the library and the CLI, including every bad input of the issue."""

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from dynabert.backbone import load_model
from dynabert.export import export_subnet
from dynabert.extract import extract_subnet
from dynabert.subnet import SubnetConfig
from dynasearch.cli import main


@pytest.mark.parametrize("flavor", ["bert", "roberta"])
def test_export_reloads_with_plain_transformers(flavor, tmp_path, tiny_bert_dir, tiny_roberta_dir):
    src = tiny_bert_dir if flavor == "bert" else tiny_roberta_dir
    sub = SubnetConfig((0, 2), (3, 1), (40, 0))
    manifest = export_subnet(src, sub, tmp_path / "out")
    out = tmp_path / "out"
    assert {
        "model.onnx",
        "config.json",
        "model.safetensors",
        "modeling_dynabert.py",
        "subnet.json",
        "manifest.json",
        "tokenizer.json",
    } <= {p.name for p in out.iterdir()}
    assert SubnetConfig.load(out / "subnet.json") == sub
    assert manifest["subnet_key"] == sub.key and manifest["checks"]["onnx_max_abs_diff"] <= 1e-4
    assert json.loads((out / "manifest.json").read_text())["parameters"]["total"] == manifest["parameters"]["total"]
    hf = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    batch = tok(["w1 w2 w3", "w4"], return_tensors="pt", padding=True)
    assert batch["input_ids"][0, 1:4].tolist() == [6, 7, 8]  # real word ids, not [UNK]
    ref = extract_subnet(load_model(src), sub).eval()
    with torch.no_grad():
        assert torch.allclose(hf(**batch).logits, ref(**batch).logits, atol=1e-5)


def run_cli(*args):
    return main([str(a) for a in args])


def test_cli_export_grid_point(tmp_path, tiny_bert_dir, capsys):
    assert (
        run_cli(
            "export", tiny_bert_dir, "--width", "0.5", "--depth", "0.5", "--format", "onnx", "--out", tmp_path / "o"
        )
        == 0
    )
    names = {p.name for p in (tmp_path / "o").iterdir()}
    assert "model.onnx" in names and "model.safetensors" not in names
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["grid_point"] == {"width": 0.5, "depth": 0.5} and m["subnet"]["layers"] == [0, 2]
    assert "exported subnet" in capsys.readouterr().out


def test_cli_overwrite(tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "o"
    assert run_cli("export", tiny_bert_dir, "--width", "1", "--depth", "1", "--format", "hf", "--out", out) == 0
    assert run_cli("export", tiny_bert_dir, "--width", "0.25", "--depth", "1", "--format", "hf", "--out", out) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert json.loads((out / "subnet.json").read_text())["heads"][0] == 4  # untouched
    assert (
        run_cli(
            "export", tiny_bert_dir, "--width", "0.25", "--depth", "1", "--format", "hf", "--out", out, "--overwrite"
        )
        == 0
    )
    assert json.loads((out / "subnet.json").read_text())["heads"][0] == 1


def assert_cli_error(capsys, args, message, out=None, code=2):
    with pytest.raises(SystemExit) if code == "argparse" else _noop():
        rc = run_cli(*args)
        assert rc == code
    err = capsys.readouterr().err
    assert message in err, err
    if out is not None:
        assert not out.exists(), "no partial output may be left"
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


class _noop:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_cli_missing_model_dir(tmp_path, capsys):
    out = tmp_path / "o"
    assert_cli_error(
        capsys, ["export", tmp_path / "nope", "--width", "1", "--depth", "1", "--out", out], "model directory", out
    )


def test_cli_other_architecture(tmp_path, capsys):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2"}')
    out = tmp_path / "o"
    assert_cli_error(
        capsys,
        ["export", tmp_path / "gpt2", "--width", "1", "--depth", "1", "--out", out],
        "'gpt2' model; supported: bert, roberta",
        out,
    )


@pytest.mark.parametrize("flag, value", [("--width", "0"), ("--width", "1.5"), ("--depth", "-1"), ("--depth", "abc")])
def test_cli_multiplier_out_of_range(flag, value, tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "o"
    args = ["export", tiny_bert_dir, "--width", "1", "--depth", "1", "--out", out]
    args[args.index(flag) + 1] = value
    with pytest.raises(SystemExit) as e:
        run_cli(*args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "(0, 1]" in err and value in err
    assert not out.exists()


@pytest.mark.parametrize(
    "subnet, message",
    [
        ({"layers": [0], "heads": [5], "ffn": [8]}, "'heads' asks 5 for layer 0; allowed 0..4"),
        ({"layers": [0], "heads": [1], "ffn": [65]}, "'ffn' asks 65 for layer 0; allowed 0..64"),
        ({"layers": [1, 0], "heads": [1, 1], "ffn": [8, 8]}, "ascending"),
        ({"layers": [0, 0], "heads": [1, 1], "ffn": [8, 8]}, "duplicated"),
        ({"layers": [0, 3], "heads": [1, 1], "ffn": [8, 8]}, "'layers' holds 3"),
        ('{"layers": [0], "heads": [1], "ff', "is not valid JSON (truncated"),
        ("", "is not valid JSON (truncated"),
    ],
)
def test_cli_bad_subnet_file(subnet, message, tmp_path, tiny_bert_dir, capsys):
    f = tmp_path / "s.json"
    f.write_text(subnet if isinstance(subnet, str) else json.dumps(subnet))
    out = tmp_path / "o"
    assert_cli_error(capsys, ["export", tiny_bert_dir, "--subnet", f, "--out", out], message, out)


def test_cli_needs_a_subnet(tmp_path, tiny_bert_dir, capsys):
    with pytest.raises(SystemExit):
        run_cli("export", tiny_bert_dir, "--out", tmp_path / "o")
    assert "--width W --depth D, or --subnet" in capsys.readouterr().err


def test_cli_unknown_format(tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "o"
    assert_cli_error(
        capsys,
        ["export", tiny_bert_dir, "--width", "1", "--depth", "1", "--format", "onnx,tflite", "--out", out],
        "unknown export format(s) ['tflite']; allowed: onnx, hf",
        out,
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_cli_unwritable_output(tmp_path, tiny_bert_dir, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert_cli_error(
            capsys, ["export", tiny_bert_dir, "--width", "1", "--depth", "1", "--out", locked / "o"], "not writable"
        )
    finally:
        locked.chmod(stat.S_IRWXU)


def test_unwritable_output_check(tmp_path, monkeypatch, tiny_bert_dir, capsys):
    # Root ignores permission bits, so the access check itself is exercised through os.access.
    import dynabert.io as dio

    monkeypatch.setattr(dio.os, "access", lambda path, mode: False)
    out = tmp_path / "o"
    assert_cli_error(
        capsys, ["export", tiny_bert_dir, "--width", "1", "--depth", "1", "--out", out], "not writable", out
    )


def test_cli_output_is_a_file(tmp_path, tiny_bert_dir, capsys):
    (tmp_path / "o").write_text("x")
    assert_cli_error(
        capsys,
        ["export", tiny_bert_dir, "--width", "1", "--depth", "1", "--out", tmp_path / "o"],
        "exists and is not a directory",
    )


def test_hf_export_reloads_and_matches_property(tmp_path_factory):
    from hypothesis import HealthCheck, given, settings
    from tinymodels import random_ids, subnets, tiny_random_model

    from dynabert.export import save_hf, verify_hf
    from dynabert.extract import model_shape

    for flavor in ("bert", "roberta"):
        model = tiny_random_model(flavor)

        @settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(subnets(model_shape(model)))
        def check(subnet):
            small = extract_subnet(model, subnet).eval()  # noqa: B023 - check() runs within this iteration
            out = tmp_path_factory.mktemp("hf")
            save_hf(small, out)
            assert verify_hf(small, out) <= 1e-5
            again = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True).eval()
            feeds = random_ids(small, batch=2, seq_len=9, seed=4)
            with torch.no_grad():
                assert torch.allclose(again(**feeds).logits, small(**feeds).logits, atol=1e-5)
            assert again.config.layer_heads == list(subnet.heads)

        check()


# ------------------------------------------------------------ a killed export's temporary folder
def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # reaped: its id names no process now
    return p.pid


def test_later_export_removes_only_stale_temporaries_of_dead_runs(tmp_path, tiny_bert_dir, capsys):
    import subprocess
    import sys

    from dynabert.io import _HOST, stale_temporaries

    out = tmp_path / "o"
    dead = _dead_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:

        def leftover(name: str) -> Path:
            d = tmp_path / name
            d.mkdir()
            (d / "model.onnx").write_bytes(b"\0" * 1000)
            return d

        stale = leftover(f".o.ds{_HOST}-{dead}-abcdefgh.tmp")
        stale_file = tmp_path / f".o.ds{_HOST}-{dead}-k2j4_x9q.tmp"
        stale_file.write_text("half a file")
        other = leftover(f".other.ds{_HOST}-{dead}-abcdefgh.tmp")  # another output's: any write beside it cleans it
        keep = [
            leftover(f".o.ds{_HOST}-{alive.pid}-abcdefgh.tmp"),  # a run still working on it
            leftover(f".o.ds{'0' * 6 if _HOST != '000000' else '111111'}-{dead}-abcdefgh.tmp"),  # made on another host
            leftover(f".o.ds{_HOST}-{dead}-old.tmp"),  # the only copy of a replaced output while `o` is missing
            leftover(".o.backup"),  # not our name pattern
            leftover(f".o.ds{_HOST}-{dead}-abcdefgh.tmp.mine"),
        ]
        assert stale_temporaries(out) == sorted([stale, stale_file, other])
        assert run_cli("export", tiny_bert_dir, "--width", "0.5", "--depth", "1", "--format", "hf", "--out", out) == 0
        assert not stale.exists() and not stale_file.exists() and not other.exists()
        assert all(p.exists() for p in keep), [p.name for p in keep if not p.exists()]
        assert (out / "manifest.json").is_file()
        # Once `o` exists again, a dead run's moved-aside old output is garbage too.
        assert stale_temporaries(out) == [tmp_path / f".o.ds{_HOST}-{dead}-old.tmp"]
    finally:
        alive.kill()
        alive.wait()


def test_killed_export_leftover_is_removed_by_the_next_export(tmp_path, tiny_bert_dir):
    """SIGKILL an export while its temporary folder exists; the same export again removes it."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path as P

    repo = P(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH", "")) if p)
    out = tmp_path / "o"
    args = ["export", str(tiny_bert_dir), "--width", "1", "--depth", "1", "--format", "onnx,hf", "--out", str(out)]
    for _attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "dynasearch", *args],
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        try:
            while not list(tmp_path.glob(f".o.*-{proc.pid}-*.tmp")) and proc.poll() is None:
                assert time.monotonic() < deadline, "the export never started writing"
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        if proc.returncode == -signal.SIGKILL:
            break
        assert proc.returncode == 0
        import shutil

        shutil.rmtree(out)  # it finished before the kill: try again
    else:
        pytest.fail("the export always finished before it could be killed")
    left = list(tmp_path.glob(".o.*.tmp"))
    assert left and not out.exists(), "the killed export should leave its temporary folder (and no output)"
    assert run_cli(*args) == 0
    assert not list(tmp_path.glob(".o.*.tmp")), "the next export must remove the killed run's temporary folder"
    assert {"model.onnx", "model.safetensors", "manifest.json"} <= {p.name for p in out.iterdir()}


# ------------------------------------------------------------ exporting a random classifier head
@pytest.fixture(scope="module")
def headless_dir(tmp_path_factory):
    """A BERT backbone without a classification head (as the packaged MiniLM-L6 is)."""
    from tinymodels import tiny_bert_config, write_tiny_tokenizer
    from transformers import BertModel

    d = tmp_path_factory.mktemp("headless")
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(str(d))
    write_tiny_tokenizer(d)
    return d


def test_export_without_model_dir_warns_of_the_random_head(headless_dir, tmp_path, monkeypatch, capsys):
    import dynabert.backbone

    monkeypatch.setattr(dynabert.backbone, "default_backbone_dir", lambda: headless_dir)  # the packaged one, made tiny
    out = tmp_path / "o"
    assert run_cli("export", "--width", "0.5", "--depth", "0.5", "--format", "hf", "--out", out) == 0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(
        "warning: the packaged MiniLM-L6 backbone (no MODEL_DIR given) has no trained classifier head"
    )
    assert "the classifier head is randomly initialised" in lines[0] and "; pass a trained MODEL_DIR" in lines[0]
    assert json.loads((out / "manifest.json").read_text())["head_initialized"] is True


def test_export_of_a_headless_model_dir_warns_and_a_trained_one_does_not(headless_dir, tiny_bert_dir, tmp_path, capsys):
    from dynabert.export import random_head_warning

    assert (
        run_cli("export", headless_dir, "--width", "1", "--depth", "1", "--format", "hf", "--out", tmp_path / "a") == 0
    )
    err = capsys.readouterr().err.strip()
    assert err == f"warning: {random_head_warning(headless_dir, 2)}"
    assert f"model directory '{headless_dir}' has no trained classifier head for 2 labels" in err
    assert (
        run_cli("export", tiny_bert_dir, "--width", "1", "--depth", "1", "--format", "hf", "--out", tmp_path / "b") == 0
    )
    assert capsys.readouterr().err == ""
    with pytest.warns(UserWarning, match=r"classifier head is randomly initialised"):
        export_subnet(headless_dir, SubnetConfig((0,), (1,), (8,)), tmp_path / "c", "hf")
