"""CLI: dynasearch measure, kit, fit-predictor; bad inputs give a clear message and exit status 2."""

from __future__ import annotations

import json

import pytest
from latency_helpers import MACHINE, SHAPE, additive_ms, records, rows

from dynabert.space import SearchSpace
from dynasearch.cli import main
from dynasearch_runtime.fingerprint import has_gpu
from predictors import read_records
from predictors.samplers import layer_table_configs, uniform_configs

FAST = ["--max-runs", "4", "--min-runs", "3", "--max-seconds", "0.1", "--seq-len", "8", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForSequenceClassification(cfg).save_pretrained(str(d))
    return d


@pytest.fixture
def synthetic(tmp_path):
    space = SearchSpace.default(SHAPE)
    path = tmp_path / "records.csv"
    records(
        path,
        rows(layer_table_configs(space), additive_ms, sampler="layer-table")
        + rows(uniform_configs(space, 40, seed=1), additive_ms),
    )
    return path


def test_measure_cli_and_resume(tiny_dir, tmp_path, capsys):
    out = tmp_path / "r.csv"
    args = [
        "measure",
        str(tiny_dir),
        "--out",
        str(out),
        "--sampler",
        "uniform",
        "--n",
        "3",
        "--backend",
        "torch",
        *FAST,
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "measured 3 config" in text and "speed index 1.000" in text  # the first run is the reference
    assert main(args) == 0
    assert "3 config x setting rows already measured" in capsys.readouterr().out
    assert len(read_records(out)) == 3
    raw = list((tmp_path / "r.raw").glob("*.csv"))
    assert len(raw) == 1 and raw[0].read_text().startswith("key,round,run,ms,disturbed")


def test_measure_cli_several_samplers_in_one_run(tiny_dir, tmp_path, capsys):
    out = tmp_path / "r.csv"
    args = [
        "measure",
        str(tiny_dir),
        "--out",
        str(out),
        "--sampler",
        "layer-table,uniform",
        "--n",
        "3",
        "--backend",
        "torch",
        *FAST,
    ]
    assert main(args) == 0
    df = read_records(out)
    from predictors.measure import load_shape

    n_layer = len(layer_table_configs(SearchSpace.default(load_shape(tiny_dir))))
    assert df["run_id"].nunique() == 1  # one run: all of them interleaved together
    assert (df["sampler"] == "uniform").sum() == 3 and (df["sampler"] == "layer-table").sum() == n_layer


def test_measure_cli_subnets_file(tiny_dir, tmp_path):
    sub = tmp_path / "s.json"
    sub.write_text(json.dumps([{"layers": [0, 2], "heads": [4, 2], "ffn": [64, 32]}]))
    out = tmp_path / "r.csv"
    assert main(["measure", str(tiny_dir), "--out", str(out), "--subnets", str(sub), *FAST]) == 0
    df = read_records(out)
    assert df["sampler"].tolist() == ["file"] and df["backend"].tolist() == ["onnxruntime"]


def test_fit_predictor_cli(synthetic, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit-predictor", str(synthetic), "--out", str(out), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "layer-regression" in text and "best:" in text and "fitting on corrected_median_ms (speed-corrected" in text
    meta = json.loads((out / "predictors" / "layer-regression" / "predictor.json").read_text())["meta"]
    assert meta["latency_column"] == "corrected_median_ms"
    assert meta["widths_seen"] == {"heads": [0, 1, 2, 3, 4], "ffn": [0, 16, 32, 48, 64]}
    assert (out / "metrics.csv").is_file() and (out / "learning_curve.csv").is_file()
    assert all(
        (out / "predictors" / k / "predictor.json").is_file() for k in ("lut", "layer-regression", "gbdt", "hybrid")
    )
    metrics = json.loads((out / "metrics.json").read_text())
    best = min((m for m in metrics["metrics"] if not m["error"]), key=lambda m: m["mape"])
    assert best["mape"] < 1e-4  # the synthetic function is additive
    # Existing output without --overwrite.
    assert main(["fit-predictor", str(synthetic), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_fit_predictor_prints_no_warning(tmp_path, capsys):
    """Issue 23: a kind that cannot be fitted (the lookup table, without layer-table records) left a NaN
    count in the printed table, and pandas warned ("'str' is not supported as a fill value for float64
    dtype"), printed as a dynasearch warning. With plots and every kind: not one warning line."""
    path = tmp_path / "records.csv"
    records(path, rows(uniform_configs(SearchSpace.default(SHAPE), 40, seed=1), additive_ms))
    assert main(["fit-predictor", str(path), "--out", str(tmp_path / "fit")]) == 0
    out, err = capsys.readouterr()
    assert "single-layer records of the layer-table sampler" in out  # the lut row's error, in the table
    assert "warning" not in err.lower(), err


def test_kit_cli(tiny_dir, tmp_path, capsys):
    out = tmp_path / "kit"
    assert main(["kit", str(tiny_dir), "--out", str(out), "--n", "2", "--seq-len", "8", "--no-progress"]) == 0
    assert (out / "runner.py").is_file() and len(
        list((out / "models").glob("*.onnx"))
    ) == 3  # 2 + the anchor (full model)
    assert json.loads((out / "kit.json").read_text())["anchor"]["sampler"] == "anchor"


def err_of(capsys, args):
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--backend", "tensorflow"], "unknown backend 'tensorflow'; allowed: torch, onnxruntime"),
        (["--provider", "FooExecutionProvider"], "unknown onnxruntime execution provider 'FooExecutionProvider'"),
        (["--sampler", "random"], "unknown sampler 'random'"),
        (["--sampler", "uniform,,grid"], "unknown sampler ''"),
        (["--backend", "torch", "--dtype", "int3"], "unknown dtype 'int3'"),
    ],
)
def test_measure_bad_inputs(tiny_dir, tmp_path, capsys, extra, match):
    code, err = err_of(capsys, ["measure", str(tiny_dir), "--out", str(tmp_path / "r.csv"), *extra, *FAST])
    assert code == 2 and match in err
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("flag,value", [("--min-visits", "0"), ("--runs-per-visit", "-1")])
def test_measure_bad_protocol_counts(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        main(["measure", "--out", str(tmp_path / "r.csv"), flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be an integer in 1.." in err and value in err
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.skipif(has_gpu(), reason="this machine has a GPU")
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_measure_cuda_without_gpu(tiny_dir, tmp_path, capsys, backend):
    code, err = err_of(
        capsys,
        ["measure", str(tiny_dir), "--out", str(tmp_path / "r.csv"), "--backend", backend, "--device", "cuda", *FAST],
    )
    assert code == 2 and "CUDA asked for on a machine without a GPU" in err


def test_measure_records_of_another_schema(tiny_dir, tmp_path, capsys):
    bad = tmp_path / "r.csv"
    bad.write_text("key,ms\na,1\n")
    code, err = err_of(capsys, ["measure", str(tiny_dir), "--out", str(bad), *FAST])
    assert code == 2 and "another schema" in err and bad.read_text() == "key,ms\na,1\n"


def test_fit_predictor_another_schema(tmp_path, capsys):
    bad = tmp_path / "r.csv"
    bad.write_text("key,ms\na,1\n")
    code, err = err_of(capsys, ["fit-predictor", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2 and "another schema" in err and not (tmp_path / "o").exists()


def test_fit_predictor_mixed_fingerprints(synthetic, tmp_path, capsys):
    records(
        synthetic,
        rows(
            uniform_configs(SearchSpace.default(SHAPE), 5, seed=9),
            additive_ms,
            machine=dict(MACHINE, cpu_model="Other"),
        ),
    )
    code, err = err_of(capsys, ["fit-predictor", str(synthetic), "--out", str(tmp_path / "o")])
    assert code == 2 and "mixed fingerprints or settings" in err and not (tmp_path / "o").exists()


def test_fit_predictor_too_few_records(tmp_path, capsys):
    path = tmp_path / "r.csv"
    records(path, rows(uniform_configs(SearchSpace.default(SHAPE), 4, seed=1), additive_ms))
    code, err = err_of(
        capsys, ["fit-predictor", str(path), "--out", str(tmp_path / "o"), "--kind", "layer-regression,gbdt"]
    )
    assert code == 2 and "too few records" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad", ["nan", "0", "-2"])
def test_fit_predictor_bad_latencies(synthetic, tmp_path, capsys, bad):
    lines = synthetic.read_text().splitlines()
    header = lines[0].split(",")
    i = header.index("median_ms")
    import csv
    import io

    rows_ = list(csv.reader(io.StringIO(synthetic.read_text())))
    rows_[3][i] = bad
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows_)
    synthetic.write_text(buf.getvalue())
    code, err = err_of(capsys, ["fit-predictor", str(synthetic), "--out", str(tmp_path / "o")])
    assert code == 2 and "NaN, zero or negative latency" in err


def test_fit_predictor_unknown_kind(synthetic, tmp_path, capsys):
    code, err = err_of(capsys, ["fit-predictor", str(synthetic), "--out", str(tmp_path / "o"), "--kind", "mlp"])
    assert code == 2 and "unknown predictor kind(s) ['mlp']" in err


def test_fit_predictor_unknown_target(synthetic, tmp_path, capsys):
    code, err = err_of(capsys, ["fit-predictor", str(synthetic), "--out", str(tmp_path / "o"), "--target", "nope"])
    assert code == 2 and "no records with target_id 'nope'" in err


def test_fit_predictor_across_shapes(tmp_path, capsys):
    path = tmp_path / "r.csv"
    subs = uniform_configs(SearchSpace.default(SHAPE), 30, seed=2)
    r = []
    for b, t in [(1, 8), (2, 8), (1, 16), (4, 16), (2, 32), (1, 32), (8, 8), (4, 32)]:
        r += rows(subs, additive_ms, batch=b, seq=t)
    records(path, r)
    assert main(["fit-predictor", str(path), "--out", str(tmp_path / "o"), "--no-plots"]) == 2
    assert "--across-shapes" in capsys.readouterr().err
    assert (
        main(
            ["fit-predictor", str(path), "--out", str(tmp_path / "o"), "--no-plots", "--across-shapes", "--kind", "all"]
        )
        == 0
    )
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert not set(map(tuple, m["shapes_train"])) & set(map(tuple, m["shapes_test"]))
    assert {x["kind"] for x in m["metrics"]} == {"layer-regression", "gbdt", "hybrid"}  # lut serves one shape only
    lr = next(x for x in m["metrics"] if x["kind"] == "layer-regression")
    assert lr["mape"] < 1e-4


# ------------------------------------------------------------------ robustness: bad inputs, exit 2
@pytest.mark.parametrize(
    "out,match",
    [
        ("/proc/x.csv", "cannot write records file '/proc/x.csv'"),
        ("{tmp}", "is a directory"),
    ],
)
def test_measure_unwritable_output_refused_before_timing(tiny_dir, tmp_path, capsys, monkeypatch, out, match):
    import importlib

    pm = importlib.import_module("predictors.measure")  # the module (the package re-exports a function of that name)
    monkeypatch.setattr(pm, "measure_items", lambda *a, **k: pytest.fail("timed before refusing the output"))
    code, err = err_of(capsys, ["measure", str(tiny_dir), "--out", out.format(tmp=tmp_path), *FAST])
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1


def test_measure_seq_len_beyond_positions(tiny_dir, tmp_path, capsys):
    code, err = err_of(capsys, ["measure", str(tiny_dir), "--out", str(tmp_path / "r.csv"), *FAST, "--seq-len", "65"])
    assert code == 2 and "--seq-len 65 is longer than the backbone's 64 positions" in err
    assert not (tmp_path / "r.csv").exists()


def test_measure_exits_nonzero_when_nothing_succeeded(tiny_dir, tmp_path, capsys, monkeypatch):
    from predictors.backends import TorchBackend

    def broken(self, model, key):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(TorchBackend, "prepare", broken)
    code = main(["measure", str(tiny_dir), "--out", str(tmp_path / "r.csv"), "--n", "2", "--backend", "torch", *FAST])
    cap = capsys.readouterr()
    assert code == 1 and "none of the 2 configs could be measured" in cap.err and "out of memory" in cap.out


def test_measure_too_many_threads_warns(tiny_dir, tmp_path, capsys):
    import torch

    from predictors.backends import available_threads

    before = torch.get_num_threads()
    code = main(
        [
            "measure",
            str(tiny_dir),
            "--out",
            str(tmp_path / "r.csv"),
            "--n",
            "1",
            "--backend",
            "torch",
            *FAST,
            "--threads",
            str(available_threads() + 1),  # one more than this machine has (999 cost seconds of thread start-up)
        ]
    )
    err = capsys.readouterr().err
    more = available_threads() + 1
    assert code == 0 and f"this machine has {available_threads()} core(s)" in err and f"--threads {more}" in err
    # torch's thread count is process-wide: measure gives back the one it found (999 threads stalled
    # every later test of the process for minutes)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "content,match", [("", "holds no records"), ("HEADER", "holds no records"), ("DIR", "is a directory")]
)
def test_fit_predictor_empty_or_directory_records(tmp_path, capsys, content, match):
    from predictors import RECORD_COLUMNS

    path = tmp_path / "r.csv"
    if content == "DIR":
        path.mkdir()
    else:
        path.write_text(",".join(RECORD_COLUMNS) + "\n" if content == "HEADER" else "")
    code, err = err_of(capsys, ["fit-predictor", str(path), "--out", str(tmp_path / "o")])
    assert code == 2 and match in err and "np.float64" not in err and not (tmp_path / "o").exists()


def test_fit_predictor_nan_message_is_plain(synthetic, tmp_path, capsys):
    import csv
    import io

    rows_ = list(csv.reader(io.StringIO(synthetic.read_text())))
    i = rows_[0].index("median_ms")
    rows_[3][i] = "nan"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows_)
    synthetic.write_text(buf.getvalue())
    code, err = err_of(capsys, ["fit-predictor", str(synthetic), "--out", str(tmp_path / "o")])
    assert code == 2 and "median_ms=nan;" in err and "np.float64" not in err


def test_kit_unwritable_output_refused(tiny_dir, capsys):
    code, err = err_of(
        capsys, ["kit", str(tiny_dir), "--out", "/proc/x", "--n", "1", "--seq-len", "8", "--no-progress"]
    )
    assert code == 2 and "/proc/x" in err and len(err.strip().splitlines()) == 1


def test_kit_seq_len_beyond_positions(tiny_dir, tmp_path, capsys):
    code, err = err_of(
        capsys, ["kit", str(tiny_dir), "--out", str(tmp_path / "k"), "--n", "1", "--seq-len", "65", "--no-progress"]
    )
    assert (
        code == 2 and "--seq-len 65 is longer than the backbone's 64 positions" in err and not (tmp_path / "k").exists()
    )
