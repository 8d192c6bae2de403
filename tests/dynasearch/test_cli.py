import re
import subprocess
import sys
from pathlib import Path

from dynasearch.cli import main


def test_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "dynasearch", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("info", "export"):
        assert cmd in r.stdout


def test_info_on_tiny_model(tiny_bert_dir, capsys):
    assert main(["info", str(tiny_bert_dir)]) == 0
    out = capsys.readouterr().out
    assert "bert: 3 layers, hidden 32, 4 heads x 8, FFN 64" in out
    assert out.count("\n") >= 14  # header + 12 grid rows


def test_info_on_packaged_default(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "6 layers, hidden 384, 12 heads x 32, FFN 1536" in out
    assert "2.869" in out  # full model: 2.869 encoder GFLOPs at length 128


def test_info_missing_dir(tmp_path, capsys):
    assert main(["info", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_internal_error_is_one_line_naming_its_log(tmp_path, capsys, monkeypatch):
    """A bug (not bad input): one line naming a log file that holds the traceback, exit status 3."""
    import importlib

    from dynasearch.cli import EXIT_INTERNAL, RAISE_ENV

    monkeypatch.delenv(RAISE_ENV, raising=False)
    monkeypatch.setenv("DYNASEARCH_LOG_DIR", str(tmp_path / "logs"))
    info = importlib.import_module("dynasearch.commands.info")

    def boom(args):
        raise RuntimeError("an internal bug\nsecond line")

    monkeypatch.setattr(info, "run", boom)
    monkeypatch.setattr(info, "register", _register_with(info.register, boom))
    assert main(["info"]) == EXIT_INTERNAL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    m = re.match(
        r"dynasearch info: internal error \(RuntimeError: an internal bug\); the traceback is in (\S+); please report it$",
        err[0],
    )
    assert m, err[0]
    log = Path(m.group(1).rstrip(";"))
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text() and "an internal bug" in log.read_text()


def _register_with(register, func):
    def wrapped(sub):
        register(sub)
        sub.choices["info"].set_defaults(func=func)

    return wrapped


def test_closed_output_pipe_is_quiet(tiny_bert_dir):
    """`dynasearch info | head`: the reader left before the output; no traceback, status 141."""
    from dynasearch.cli import EXIT_PIPE

    p = subprocess.Popen(
        [sys.executable, "-m", "dynasearch", "info", str(tiny_bert_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    p.stdout.close()  # before the child has printed anything (its start-up takes far longer)
    err = p.stderr.read()
    assert p.wait(60) == EXIT_PIPE, err
    assert "Traceback" not in err and "Error" not in err, err


def test_export_takes_a_training_run(tiny_bert_dir, tmp_path):
    """`dynasearch export RUN` exports the run's latest finished stage (as evaluate and search read it)."""
    import json

    from tinymodels import write_sst2_like

    data = write_sst2_like(tmp_path / "data", n_train=16, n_dev=8)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                str(tiny_bert_dir),
                "--task",
                "sst2",
                "--data-dir",
                str(data),
                "--out",
                str(run),
                "--stages",
                "teacher",
                "--max-steps",
                "1",
                "--batch-size",
                "8",
                "--max-seq-length",
                "16",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(["export", str(run), "--width", "1", "--depth", "1", "--format", "hf", "--out", str(tmp_path / "x")]) == 0
    )
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert "teacher" in json.dumps(manifest)  # exported from the run's teacher stage, not refused as "no config.json"


def test_warnings_are_one_line_each_and_collector_noise_is_dropped(capsys):
    """CI once failed here: psycopg connections leaked by earlier code were collected during a command,
    and their ResourceWarnings came out as extra 'warning:' lines before the one-line error."""
    import warnings

    from dynasearch.commands.common import print_warnings

    with print_warnings():
        warnings.warn("the target was judged on raw latency", UserWarning, stacklevel=1)
        warnings.warn("connection <x> was deleted while still open", ResourceWarning, stacklevel=1)
    assert capsys.readouterr().err == "warning: the target was judged on raw latency\n"
