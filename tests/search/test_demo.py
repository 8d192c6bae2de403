"""The demo pipeline end to end on a tiny backbone and a synthetic SST-2-layout task."""

import json

import pandas as pd
import pytest

from search.cli import main
from search.demo import DemoConfig, run_demo
from search.pareto import pareto_mask
from tinymodels import write_sst2_like


def test_pareto_mask_by_hand():
    score = [90, 85, 85, 80, 91]
    latency = [10, 5, 6, 5, 20]
    # (85,6) is dominated by (85,5); (80,5) by (85,5); the others trade off.
    assert pareto_mask(score, latency).tolist() == [True, True, False, False, True]


def test_demo_end_to_end_and_resume(tmp_path, tiny_bert_dir, capsys):
    data = write_sst2_like(tmp_path / "sst2")
    cfg = DemoConfig(out_dir=tmp_path / "demo", model_dir=tiny_bert_dir, task="sst2", data_dir=data,
                     train_subset=None, max_steps=2, batch_size=16, max_seq_length=32, latency_seq_len=16, tolerance=100)
    summary = run_demo(cfg, progress=False)
    out = tmp_path / "demo"
    table = pd.read_csv(out / "pareto.csv")
    assert len(table) == 12 and table["median_ms"].gt(0).all() and table["pareto"].any()
    # tolerance 100 points: every sub-network qualifies, so the chosen one is the fastest measured.
    assert summary["chosen"]["key"] == table.sort_values("median_ms").iloc[0]["key"]
    assert (out / "pareto.png").stat().st_size > 0 and (out / "export" / "model.onnx").is_file()
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["subnet_key"] == summary["chosen"]["key"]
    # A second run finds everything done: no retraining, no re-timing (records keep 12 rows).
    run_demo(cfg, progress=False)
    assert len(pd.read_csv(out / "latency.csv")) == 12
    assert "training: already done" in capsys.readouterr().out


def test_demo_refuses_foreign_output(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "x")]) == 2
    assert "holds something other than a dynasearch demo" in capsys.readouterr().err


def test_demo_refuses_other_settings(tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"task": "sst2"}))
    with pytest.raises(Exception, match="other settings"):
        run_demo(DemoConfig(out_dir=out, model_dir=tiny_bert_dir), progress=False)
