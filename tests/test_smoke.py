"""End-to-end smoke test (issue 10 item 7): a tiny random backbone and synthetic data through the
whole tool, as a user runs it: train -> measure (real, tiny) -> fit-predictor -> search with a
target (verified by measurement) -> export --results -> reload the export and compare logits."""

import json
import time

import torch
from tinymodels import make_model_dir, make_sst2_dir

from dynasearch.cli import main

FAST_PROTOCOL = ["--max-seconds", "0.3", "--min-runs", "3", "--min-visits", "1", "--max-runs", "10"]


def run(*args) -> int:
    return main([str(a) for a in args])


def test_train_measure_fit_search_export(tmp_path, capsys):
    t0 = time.monotonic()
    base = make_model_dir(tmp_path / "base")
    data = make_sst2_dir(tmp_path / "data", n_train=64, n_dev=32)
    assert (
        run(
            "train",
            "--model",
            base,
            "--task",
            "sst2",
            "--data-dir",
            data,
            "--out",
            tmp_path / "run",
            "--max-steps",
            2,
            "--max-seq-length",
            32,
            "--batch-size",
            16,
            "--no-progress",
        )
        == 0
    )
    records = tmp_path / "records.csv"
    assert (
        run(
            "measure",
            tmp_path / "run" / "width_depth",
            "--sampler",
            "layer-table,uniform",
            "--n",
            8,
            "--seq-len",
            16,
            "--out",
            records,
            "--no-progress",
            *FAST_PROTOCOL,
        )
        == 0
    )
    assert run("fit-predictor", records, "--out", tmp_path / "pred", "--kind", "layer-regression", "--no-plots") == 0
    results = tmp_path / "results"
    rc = run(
        "search",
        tmp_path / "run",
        "--predictor",
        tmp_path / "pred",
        "--out",
        results,
        "--trials",
        16,
        "--target-latency",
        "1s",
        "--max-candidates",
        2,
        "--quiet",
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    meta = json.loads((results / "search.json").read_text())
    assert meta["met"] and meta["answer"]["verified"] and meta["answer"]["measured_ms"] <= 1000
    for name in ("trials.csv", "front.csv", "space.json", "measured.csv", "front.png", "hypervolume.png", "shapes.png"):
        assert (results / name).is_file(), name

    assert run("query", results, "--target-latency", "1s", "--json") == 0
    ans = json.loads(capsys.readouterr().out)
    assert ans["key"] == meta["answer"]["key"] and ans["verified"]

    deploy = tmp_path / "deploy"
    assert run("export", "--results", results, "--target-latency", "1s", "--format", "onnx,hf", "--out", deploy) == 0
    manifest = json.loads((deploy / "manifest.json").read_text())
    assert manifest["subnet_key"] == ans["key"] and manifest["search"]["verified"]

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from dynabert.backbone import load_model
    from dynabert.subnet import SubnetConfig

    hf = AutoModelForSequenceClassification.from_pretrained(str(deploy), trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(str(deploy))
    batch = dict(tok(["a very good film", "the plot is awful"], return_tensors="pt", padding=True))
    batch.pop("token_type_ids", None)
    trained = load_model(meta["study"]["model_dir"]).eval()
    with torch.no_grad():
        want = trained(**batch, active=SubnetConfig.from_dict(ans["subnet"]).active_spec()).logits
        assert torch.allclose(hf(**batch).logits, want, atol=1e-5)
    assert time.monotonic() - t0 < 120
