"""Many devices in one search (issue 18 item 1): a study per device in one storage over one
accuracy cache, warm-started in turn; per-device answers and `query --device-name`."""

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit
from fakes import FAKE_MACHINE, additive_ms  # noqa: E402
from searchkit import SEQ, cli, fit_predictor_dir, predictor_records, search_args  # noqa: E402

from search.devices import Device, check_compatible, devices_from_options, parse_predictor_option  # noqa: E402
from search.errors import SearchError  # noqa: E402

pytest_plugins = ["searchkit"]


def slow_ms(s, batch: int = 1, seq: int = 16) -> float:
    """Another device: attention costs 4x (a GPU-ish profile would differ more; enough to move the front)."""
    base = additive_ms(s, batch, seq)
    return base + 3 * sum(0.05 * h for h in s.heads)


@pytest.fixture(scope="module")
def int8_predictor(tmp_path_factory, sk_base):
    """The synthetic predictor fitted on records measured at dtype int8 (as `measure --dtype int8` writes)."""
    from dynasearch_runtime.fingerprint import setting_columns
    from dynasearch_runtime.schema import append_rows
    from predictors import make_predictor, read_records

    rows = predictor_records(sk_base)
    r0 = rows[0]
    cols = setting_columns(
        FAKE_MACHINE, r0["backend"], r0["device"], r0["provider"], 1, False, "int8", 1, SEQ, r0["shape_key"]
    )
    for r in rows:
        r.update(dtype="int8", target_id=cols["target_id"], settings_id=cols["settings_id"])
    folder = tmp_path_factory.mktemp("int8")
    append_rows(str(folder / "records.csv"), rows)
    make_predictor("layer-regression").fit(read_records(folder / "records.csv")).save(folder / "pred")
    return folder / "pred"


@pytest.fixture(scope="module")
def slow_predictor(tmp_path_factory, sk_base):
    return fit_predictor_dir(sk_base, tmp_path_factory.mktemp("slow") / "pred", fn=slow_ms)


def test_two_devices_share_one_cache(sk_run, sk_predictor, slow_predictor, fast_tmp, capsys):
    out = fast_tmp / "r"
    args = ["--trials", 20, "--no-verify", "--target-latency", "fast=4ms,slow=7ms"]
    rc = cli("search", sk_run, "--predictor", f"fast={sk_predictor}", "--predictor", f"slow={slow_predictor}",
             "--out", out, "--quiet", "--heartbeat", 1, *args)  # fmt: skip
    printed = capsys.readouterr().out
    assert rc in (0, 1), printed
    index = json.loads((out / "devices.json").read_text())
    fast, slow = index["devices"]
    assert (fast["name"], slow["name"]) == ("fast", "slow") and fast["target_ms"] == 4.0 and slow["target_ms"] == 7.0
    assert slow["warm_started_with"] >= 12  # the first device's fully ranked configs, the grid at least
    # one accuracy cache: the second study's warm start costs no evaluation
    separate = fast_tmp / "alone"
    assert cli(*search_args(sk_run, slow_predictor, separate, "--trials", 20, "--no-verify")) == 0
    alone = json.loads((separate / "search.json").read_text())["summary"]["distinct_evaluated"]
    assert slow["evaluations_new"] < alone
    assert (
        index["distinct_configs_evaluated"]
        < alone + json.loads((out / "fast" / "search.json").read_text())["summary"]["distinct_evaluated"]
    )
    for d in (fast, slow):  # each device's folder is an ordinary results directory
        trials = pd.read_csv(out / d["results"] / "trials.csv")
        assert len(trials) >= 20 and (out / d["results"] / "front.csv").is_file()
    assert "device fast" in printed and "device slow" in printed and "not verified here" in printed
    capsys.readouterr()
    assert cli("query", out, "--device-name", "slow", "--target-latency", "7ms", "--json") in (0, 1)
    q = capsys.readouterr().out
    if q.strip():
        ans = json.loads(q)
        assert ans["predicted_ms"] <= 7.0 and ans["precision"] == "fp32"
    assert cli("query", out, "--device-name", "tpu", "--target-latency", "7ms") == 2
    err = capsys.readouterr().err
    assert "no device 'tpu' in" in err and "devices: fast, slow" in err
    assert cli("query", out, "--target-latency", "7ms") == 2
    assert "holds several devices; name one with --device-name (fast, slow)" in capsys.readouterr().err
    assert cli("export", "--results", out, "--target-latency", "7ms", "--out", fast_tmp / "e") == 2
    err = capsys.readouterr().err
    assert "is a multi-device search: export one device's results" in err and "--bundle" in err
    assert not (fast_tmp / "e").exists()
    # a damaged index: one device listed twice
    index["devices"][1]["name"] = "fast"
    (out / "devices.json").write_text(json.dumps(index))
    assert cli("query", out, "--device-name", "fast", "--target-latency", "7ms") == 2
    assert "device(s) fast:fp32 listed twice; one entry per device and precision" in capsys.readouterr().err


@pytest.mark.parametrize(
    "predictors, targets, message",
    [
        (["cpu=A", "cpu=B"], None, r"device 'cpu' at precision fp32 is given twice"),
        (
            ["cpu=A", "gpu=B"],
            "cpu=8ms,tpu=3ms",
            r"target for device 'tpu', which has no --predictor tpu=DIR; devices: cpu, gpu",
        ),
        (["cpu=A", "gpu=B"], "8ms", r"names no device; with several devices give NAME=LAT for each"),
        (["cpu:fp16=A"], None, r"device 'cpu': unknown precision 'fp16'; allowed: fp32, int8"),
        (["9cpu=A"], None, r"device name '9cpu' must start with a letter"),
        (["cpu=A", "cpu:int8=B"], "cpu=5ms,cpu=6ms", r"names device 'cpu' twice"),
        # issue 23: int8 enters at the fp32 fronts of the SAME device; another device's fp32 does not count
        (
            ["cpu:int8=B"],
            None,
            r"^--predictor cpu:int8=B: an int8 entry is searched on the fp32 fronts of the same device, and device "
            r"'cpu' has no fp32 predictor: add --predictor cpu=DIR \(a predictor fitted on float32 records of that "
            r"device: dynasearch measure --dtype float32 \.\.\.\)$",
        ),
        (["gpu=A", "cpu:int8=B"], "gpu=5ms", r"^--predictor cpu:int8=B: .*device 'cpu' has no fp32 predictor"),
    ],
)
def test_bad_device_options(predictors, targets, message):
    with pytest.raises(SearchError, match=message):
        devices_from_options(predictors, targets)


def test_one_device_two_precisions_is_allowed():
    devs = devices_from_options(["cpu=A", "cpu:int8=B"], "cpu=5ms")
    assert [(d.label, d.target_ms) for d in devs] == [("cpu", 5.0), ("cpu-int8", 5.0)]
    assert parse_predictor_option("gpu:int8=/x/y") == ("gpu", "int8", Path("/x/y"))


def test_bad_device_cli_is_one_line_and_writes_nothing(sk_run, sk_predictor, fast_tmp, capsys, tmp_path):
    out = fast_tmp / "bad"
    assert (
        cli("search", sk_run, "--predictor", f"a={sk_predictor}", "--predictor", f"a={sk_predictor}", "--out", out) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device 'a' at precision fp32 is given twice" in err[0]
    assert (
        cli("search", sk_run, "--predictor", f"a={sk_predictor}", "--predictor", str(sk_predictor), "--out", out) == 2
    )
    assert "give every --predictor as NAME=DIR" in capsys.readouterr().err
    # predictors of another backbone mixed in
    from tinymodels import make_model_dir

    from dynabert.subnet import BackboneShape

    other = make_model_dir(tmp_path / "m3", BackboneShape(3, 4, 8, 32, 64))
    other_pred = fit_predictor_dir(other, tmp_path / "p3")
    assert (
        cli("search", sk_run, "--predictor", f"a={sk_predictor}", "--predictor", f"b={other_pred}", "--out", out) == 2
    )
    assert "predictors of different backbones mixed" in capsys.readouterr().err
    assert not out.exists()


def test_predictor_precision_must_match_the_entry(sk_predictor, int8_predictor):
    from predictors import find_predictor

    fp32, int8 = find_predictor(sk_predictor)[0], find_predictor(int8_predictor)[0]
    assert (fp32.fitted_on.dtype, int8.fitted_on.dtype) == ("float32", "int8")
    ok = [Device("cpu", "fp32", sk_predictor), Device("cpu", "int8", int8_predictor)]
    check_compatible(ok, {"cpu": fp32, "cpu-int8": int8})
    bad = Device("cpu", "int8", sk_predictor)
    p = re.escape(str(sk_predictor))
    with pytest.raises(SearchError, match=rf"^--predictor cpu:int8={p}: predictor {p} was fitted on float32 records; "
                       r"a NAME:int8 entry needs a predictor fitted on int8 records "
                       r"\(dynasearch measure --dtype int8 \.\.\.\)$"):  # fmt: skip
        check_compatible([ok[0], bad], {"cpu": fp32, "cpu-int8": fp32})
    bad = Device("gpu", "fp32", int8_predictor)
    p = re.escape(str(int8_predictor))
    with pytest.raises(SearchError, match=rf"^--predictor gpu={p}: predictor {p} was fitted on int8 records; "
                       r"a plain NAME \(fp32\) entry needs a predictor fitted on float32 records "
                       rf"\(dynasearch measure --dtype float32 \.\.\.; or give it as --predictor gpu:int8={p} beside "
                       r"a float32 one\)$"):  # fmt: skip
        check_compatible([bad], {"gpu": int8})


def test_wrong_precision_predictor_cli_exits_2_and_writes_nothing(
    sk_run, sk_predictor, int8_predictor, fast_tmp, capsys
):
    out = fast_tmp / "bad-precision"
    rc = cli("search", sk_run, "--predictor", f"cpu={sk_predictor}", "--predictor", f"cpu:int8={sk_predictor}",
             "--out", out, "--no-verify")  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and f"--predictor cpu:int8={sk_predictor}: predictor {sk_predictor} was fitted on float32" in err[0]
    )
    rc = cli("search", sk_run, "--predictor", f"cpu={int8_predictor}", "--out", out, "--no-verify")
    assert rc == 2
    assert "a plain NAME (fp32) entry needs a predictor fitted on float32 records" in capsys.readouterr().err
    assert not out.exists()
