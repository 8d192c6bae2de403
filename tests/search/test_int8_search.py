"""int8 as a search dimension (issue 18 item 2), end to end on a tiny model: an int8 entry of a
device is scored with the quantised ONNX model on the configs near the fp32 front, its answer
compared with fp32's, and exported as the int8 model."""

import json
import sqlite3
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit
from searchkit import cli  # noqa: E402

from search.devices import neighbourhood  # noqa: E402

pytest_plugins = ["searchkit"]


def test_int8_entry_scores_the_quantised_model_near_the_fp32_front(
    sk_run, sk_predictor, sk_int8_predictor, fast_tmp, capsys
):
    out = fast_tmp / "r"
    rc = cli("search", sk_run, "--predictor", f"cpu={sk_predictor}", "--predictor", f"cpu:int8={sk_int8_predictor}",
             "--out", out, "--quiet", "--heartbeat", 1, "--trials", 16, "--no-verify", "--target-latency", "cpu=50ms")  # fmt: skip
    assert rc in (0, 1), capsys.readouterr()
    index = json.loads((out / "devices.json").read_text())
    fp32, int8 = index["devices"]
    assert (fp32["label"], int8["label"]) == ("cpu", "cpu-int8") and int8["int8_on_fp32_fronts"]
    # the int8 study ran exactly the queued configs: the grid and the fp32 front's neighbourhood
    ranked = pd.read_csv(out / "cpu" / "trials.csv").drop_duplicates("key")
    near = set(neighbourhood(ranked.assign(stopped=False)))
    int8_trials = pd.read_csv(out / "cpu-int8" / "trials.csv")
    assert set(int8_trials["subnet"]) <= near | set(ranked.loc[ranked["grid"].fillna("") != "", "subnet"])
    assert int8_trials["key"].nunique() == len(int8_trials)  # no proposal of the sampler, no repeat
    meta = json.loads((out / "cpu-int8" / "search.json").read_text())
    assert meta["study"]["precision"] == "int8"
    # its scores are cached apart from fp32's (the selection key ends in -int8) and are real evaluations
    with sqlite3.connect(out / "study.db") as c:
        sels = {r[0] for r in c.execute("SELECT DISTINCT selection FROM dynasearch_accuracy")}
    assert any(s.endswith("-int8") for s in sels) and any(s.endswith("-fp32") for s in sels)
    assert int8["evaluations_new"] >= int8_trials["key"].nunique()
    assert "cpu" in index["precision"] and index["precision"]["cpu"].split(":")[0] in ("fp32", "int8")
    # the int8 answer (every config meets 50 ms) exports its int8 ONNX model
    assert int8["answer"] is not None and rc == 0
    exp = fast_tmp / "exp"
    assert cli("export", "--results", out / "cpu-int8", "--key", int8["answer"]["key"], "--out", exp) == 0
    manifest = json.loads((exp / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and (exp / "model.int8.onnx").is_file()
    assert manifest["onnx_file"] == "model.int8.onnx" and "model.int8.onnx" in manifest["files"]
