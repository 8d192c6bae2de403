"""A killed run's temporary ONNX folder is removed by the next run; a live worker's is kept."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from dynabert.io import process_tag
from predictors.backends import ONNX_TMP_PREFIX, BackendSettings, OrtBackend, remove_dead_onnx_folders


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_killed_runs_onnx_folders_go_live_ones_stay(tmp_path):
    host = process_tag().split("-")[0]
    dead = tmp_path / f"{ONNX_TMP_PREFIX}{host}-{dead_pid()}-abcd1234"
    live = tmp_path / f"{ONNX_TMP_PREFIX}{process_tag()}-efgh5678"
    other_host = tmp_path / f"{ONNX_TMP_PREFIX}000000-{dead_pid()}-ijkl9012"
    old_style = tmp_path / f"{ONNX_TMP_PREFIX}x1y2z3w4"
    for d in (dead, live, other_host, old_style):
        d.mkdir()
        (d / "m.onnx").write_bytes(b"0" * 10)
    assert remove_dead_onnx_folders(tmp_path) == [dead]
    assert not dead.exists() and live.is_dir() and other_host.is_dir() and old_style.is_dir()


def test_backend_folder_is_tagged_and_cleans_up_before_it_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    host = process_tag().split("-")[0]
    dead = tmp_path / f"{ONNX_TMP_PREFIX}{host}-{dead_pid()}-abcd1234"
    dead.mkdir()
    b = OrtBackend(BackendSettings(backend="onnxruntime"))
    try:
        assert not dead.exists()
        assert Path(b.cache_dir).name.startswith(f"{ONNX_TMP_PREFIX}{process_tag()}-")
    finally:
        b.close()
    assert not Path(b.cache_dir).exists()
