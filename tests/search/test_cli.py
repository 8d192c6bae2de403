import subprocess
import sys

from search.cli import main


def test_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "search.cli", "--help"], capture_output=True, text=True)
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
