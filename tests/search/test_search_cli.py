"""`dynasearch search` bad input (one line, exit status 2, nothing written) and `dynasearch export
--results` (by target and by key; the HF export reloads and matches the active sub-network)."""

import dataclasses
import json
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit

from searchkit import cli, fit_predictor_dir, make_model_dir, search_args  # noqa: E402

from dynabert.subnet import SubnetConfig
from search.errors import SearchError
from search.study import SearchConfig, run_search

pytest_plugins = [
    "searchkit"
]  # its session fixtures, shared by every module (importing them would copy them per module)


def nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


@pytest.fixture(scope="session")
def other_backbone_predictor(sk_fast):
    from tinymodels import TINY

    model = make_model_dir(sk_fast / "other-model", dataclasses.replace(TINY, num_layers=2, intermediate_size=48))
    return fit_predictor_dir(model, sk_fast / "other-pred")


@pytest.fixture(scope="session")
def not_a_predictor(sk_fast):
    d = sk_fast / "not-a-predictor"
    d.mkdir()
    (d / "predictor.txt").write_text("hello")
    return d


# (name, extra args or replacements, message pieces)
BAD = [
    (
        "target below the fastest",
        ["--target-latency", "1us"],
        ["target 0.001 ms is below the fastest sub-network of the space (", "predicted 1."],
    ),
    ("target without unit", ["--target-latency", "4"], ["latency '4' has no unit"]),
    ("unknown unit", ["--target-latency", "4furlongs"], ["unknown unit 'furlongs'"]),
    ("unknown sampler", ["--sampler", "cmaes"], ["unknown sampler 'cmaes'; allowed: nsga2, tpe, gp, random"]),
    ("other backbone", {"predictor": "OTHER"}, ["fitted for another backbone", "num_layers 2 vs 4"]),
    ("missing predictor", {"predictor": "MISSING"}, ["does not exist"]),
    ("not a predictor", {"predictor": "NOTPRED"}, ["is not a dynasearch latency predictor"]),
    ("missing model", {"run": "MISSING"}, ["MISSING"]),
    ("untrained checkpoint", {"run": "BASE", "task": "sst2"}, ["has no stage.json", "--allow-untrained"]),
    ("unparseable storage", ["--storage", "::not a url::"], ["storage URL '::not a url::' cannot be parsed"]),
    ("unsupported storage", ["--storage", "mysql://u@h/db"], ["database 'mysql' is not supported"]),
    (
        "storage folder missing",
        ["--storage", "sqlite:////nonexistent-dir-xyz/study.db"],
        ["/nonexistent-dir-xyz does not exist"],
    ),
]


@pytest.mark.parametrize("name, change, pieces", BAD, ids=[b[0] for b in BAD])
def test_search_bad_input(
    name,
    change,
    pieces,
    sk_run,
    sk_base,
    sk_data,
    sk_predictor,
    other_backbone_predictor,
    not_a_predictor,
    fast_tmp,
    capsys,
):
    out = fast_tmp / "results"
    subs = {
        "OTHER": other_backbone_predictor,
        "MISSING": fast_tmp / "MISSING",
        "NOTPRED": not_a_predictor,
        "BASE": sk_base,
    }
    run, pred, extra = sk_run, sk_predictor, ["--trials", 12, "--no-verify"]
    if isinstance(change, dict):
        run = subs.get(change.get("run"), run)
        pred = subs.get(change.get("predictor"), pred)
        if "task" in change:
            extra += ["--task", change["task"], "--data-dir", sk_data]
    else:
        extra += change
    rc = cli(*search_args(run, pred, out, *extra))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dynasearch search: error: ")
    for p in pieces:
        assert p in lines[0], lines[0]
    assert nothing_written(out)


def test_target_below_fastest_names_the_fastest_config(sk_run, sk_predictor, fast_tmp):
    with pytest.raises(
        SearchError, match=r"below the fastest sub-network of the space \(layers 0 heads \d+ ffn \d+: predicted \d"
    ):
        run_search(SearchConfig(run=sk_run, predictor=sk_predictor, out=fast_tmp / "r", target_ms=0.5, verify=False))
    assert not (fast_tmp / "r").exists()


def test_trials_zero(sk_run, sk_predictor, fast_tmp, capsys):
    out = fast_tmp / "r"
    with pytest.raises(SystemExit) as e:
        cli(*search_args(sk_run, sk_predictor, out, "--trials", 0))
    assert e.value.code == 2
    assert "--trials: must be an integer in 1..1000000000; got 0" in capsys.readouterr().err
    with pytest.raises(SearchError, match="trials must be a positive integer"):
        run_search(SearchConfig(run=sk_run, predictor=sk_predictor, out=out, trials=0))
    assert not out.exists()


def test_untrained_checkpoint_allowed_with_a_warning(sk_base, sk_data, sk_predictor, fast_tmp, capsys):
    out = fast_tmp / "r"
    rc = cli(
        *search_args(
            sk_base,
            sk_predictor,
            out,
            "--task",
            "sst2",
            "--data-dir",
            sk_data,
            "--trials",
            12,
            "--no-verify",
            "--allow-untrained",
            "--max-seq-length",
            32,
        )
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "warning:" in cap.err and "has no stage.json" in cap.err and "--allow-untrained" in cap.err
    assert "has no stage.json" in " ".join(json.loads((out / "search.json").read_text())["warnings"])


def test_unreachable_storage_fails_fast_without_the_password(sk_run, sk_predictor, fast_tmp, capsys):
    pytest.importorskip("psycopg")
    out = fast_tmp / "r"
    t0 = time.monotonic()
    rc = cli(
        *search_args(
            sk_run,
            sk_predictor,
            out,
            "--trials",
            12,
            "--no-verify",
            "--storage",
            "postgresql+psycopg://u:secret@127.0.0.1:1/x",
        )
    )
    secs = time.monotonic() - t0
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "secret" not in err and "127.0.0.1" in err
    assert secs < 10 + 5  # 10 s for the connection, a little for loading the checks
    assert nothing_written(out)


# ------------------------------------------------------------------------------------ export --results
def logits_match(export_dir: Path, model_dir: Path, subnet: SubnetConfig) -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from dynabert.backbone import load_model

    hf = AutoModelForSequenceClassification.from_pretrained(str(export_dir), trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(str(export_dir))
    batch = dict(tok(["a good movie", "the plot was very bad and awful"], return_tensors="pt", padding=True))
    batch.pop("token_type_ids", None)
    full = load_model(model_dir).eval()
    with torch.no_grad():
        got = hf(**batch).logits
        want = full(**batch, active=subnet.active_spec()).logits
    return float((got - want).abs().max())


def test_export_by_target(sk_results, fast_tmp, capsys):
    from search.results import query

    out = fast_tmp / "deploy"
    assert cli("export", "--results", sk_results, "--target-latency", "4ms", "--format", "hf", "--out", out) == 0
    assert "(not verified)" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    ans = query(sk_results, 4.0)
    assert m["subnet_key"] == ans["key"]
    s = m["search"]
    assert s["target_ms"] == 4.0 and s["predicted_ms"] == pytest.approx(ans["predicted_ms"]) and s["verified"] is False
    assert (
        s["metric"] == "accuracy" and s["task"] == "sst2" and s["metric_full_dev"] == pytest.approx(ans["metric_full"])
    )
    assert {"measured_ms", "latency_setting", "fingerprint", "results_dir"} <= set(s)
    meta = json.loads((sk_results / "search.json").read_text())
    subnet = SubnetConfig.from_dict(ans["subnet"])
    assert SubnetConfig.load(out / "subnet.json") == subnet
    assert logits_match(out, Path(meta["study"]["model_dir"]), subnet) <= 1e-5


def test_export_by_key(sk_results, fast_tmp):
    import pandas as pd

    trials = pd.read_csv(sk_results / "trials.csv", dtype={"key": str, "grid": str})
    row = trials[~trials["on_front"]].iloc[-1]  # any searched config, not only the front's
    out = fast_tmp / "deploy"
    assert cli("export", "--results", sk_results, "--key", row["key"], "--format", "hf", "--out", out) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["subnet_key"] == row["key"] and m["search"]["target_ms"] is None
    assert m["search"]["predicted_ms"] == pytest.approx(row["predicted_ms"])
    meta = json.loads((sk_results / "search.json").read_text())
    assert logits_match(out, Path(meta["study"]["model_dir"]), SubnetConfig.from_json(row["subnet"])) <= 1e-5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target-latency", "4ms", "--key", "abc"], "exactly one of --target-latency LAT or --key KEY"),
        ([], "exactly one of --target-latency LAT or --key KEY"),
        (["--key", "abc", "--width", "0.5"], "give no MODEL_DIR, --width, --depth or --subnet"),
    ],
)
def test_export_results_bad_arguments(args, message, sk_results, fast_tmp, capsys):
    out = fast_tmp / "deploy"
    with pytest.raises(SystemExit) as e:
        cli("export", "--results", sk_results, *args, "--out", out)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_export_results_unknown_key(sk_results, fast_tmp, capsys):
    out = fast_tmp / "deploy"
    assert cli("export", "--results", sk_results, "--key", "nosuchkey", "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "key 'nosuchkey' is not a config of" in err
    assert not out.exists()


def test_export_results_damaged(sk_results, fast_tmp, capsys):
    import shutil

    d = fast_tmp / "r"
    shutil.copytree(sk_results, d)
    (d / "search.json").write_text("{")
    out = fast_tmp / "deploy"
    assert cli("export", "--results", d, "--target-latency", "4ms", "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "search.json" in err
    assert not out.exists()
