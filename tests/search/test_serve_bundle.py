"""`dynasearch serve` on a real front-carrying bundle (issue 24): the server calibrates the front's
latency table on this machine, answers over the Open Inference Protocol with the sub-network the policy
chose, serves one fixed config with --static, and caches the table beside the bundle."""

import contextlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit
from test_bundle import front3, wide_front  # noqa: E402,F401  (the bundle fixtures)

from dynasearch_runtime.errors import BundleError  # noqa: E402
from dynasearch_runtime.serve_bundle import BundleEngine, prepare_policy, serve_app  # noqa: E402

pytest_plugins = ["searchkit"]


def _device(bundle: Path) -> str:
    return json.loads((bundle / "devices.json").read_text())["devices"][0]["name"]


@contextlib.contextmanager
def server_process(cmd_head: list, bundle: Path, slo: str, *extra: str, cwd=None, env=None):
    """A server process on a free port (cmd_head + the bundle, SLO, device, port), ready: yields (process,
    base URL); terminated after (a test that stops it itself finds it gone)."""
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [*cmd_head, str(bundle), "--slo", slo, "--device", _device(bundle), "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # calibration runs before the port opens
            try:
                if urllib.request.urlopen(base + "/v2/health/ready", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.05)
            assert proc.poll() is None, proc.communicate()[1]
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def _infer(c: TestClient, texts):
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    return c.post("/v2/models/dynabert/infer", json=body)


def _wait_ready(c: TestClient, server) -> None:
    import time

    for _ in range(500):
        if server.ready or server.failed:
            break
        time.sleep(0.02)
    assert server.ready, server.failed


def test_serving_a_bundles_front(front3, tmp_path):
    front3 = Path(shutil.copytree(front3, tmp_path / "bundle"))  # the table's cache goes beside this copy
    index = json.loads((front3 / "devices.json").read_text())
    keys = [c["key"] for c in index["devices"][0]["front"]]
    app, server = serve_app(str(front3), 200.0, device=_device(front3), budget_s=2.0)
    with TestClient(app) as c:
        _wait_ready(c, server)
        assert sorted(c.get("/v2/models/dynabert").json()["parameters"]["subnetworks"]) == sorted(keys)
        r = _infer(c, ["the movie was good", "w1 " * 200])  # the second is longer than the model's length
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["parameters"]["subnetwork"] in keys and doc["parameters"]["truncated"] is True
        assert doc["outputs"][1]["shape"][0] == 2
        # alone and in time: the most accurate front config
        best = max(index["devices"][0]["front"], key=lambda c: c["metric_value"])["key"]
        assert doc["parameters"]["subnetwork"] == best
    table = server.policy.table
    assert set(table.accuracy) == set(keys) and table.buckets[-1] == server.engine.max_length
    cached = list((front3 / ".serving").glob("latency-*.json"))
    assert len(cached) == 1
    # the next start reads the cache instead of measuring again
    app2, server2 = serve_app(str(front3), 200.0, device=_device(front3))
    with TestClient(app2) as c:
        _wait_ready(c, server2)
        assert server2.policy.table.ms == table.ms


def test_static_mode_and_bad_serve_arguments(front3, tmp_path):
    front3 = Path(shutil.copytree(front3, tmp_path / "bundle"))  # the table's cache goes beside this copy
    keys = [c["key"] for c in json.loads((front3 / "devices.json").read_text())["devices"][0]["front"]]
    app, server = serve_app(str(front3), 200.0, device=_device(front3), static=keys[0], budget_s=1.0)
    with TestClient(app) as c:
        _wait_ready(c, server)
        assert _infer(c, ["good"]).json()["parameters"]["subnetwork"] == keys[0]
    # One cache per bundle and machine: the dynamic start measures only the configs the static one did not,
    # and a static start after it measures nothing (its config's cells are read from the front's table).
    said = []
    dynamic = prepare_policy(BundleEngine(str(front3), _device(front3)), 200.0, budget_s=1.0, progress=said.append)
    assert said == [f"calibrating {len(keys) - 1} configs x 5 batch sizes x {len(dynamic.table.buckets)} lengths"]
    assert set(dynamic.table.accuracy) == set(keys)
    static = prepare_policy(BundleEngine(str(front3), _device(front3), static=keys[1]), 200.0, progress=said.append)
    assert len(said) == 1 and list(static.table.accuracy) == [keys[1]]
    assert static.table.ms == {c: v for c, v in dynamic.table.ms.items() if c[0] == keys[1]}
    with pytest.raises(BundleError, match=r"--static 'nope' is no front config of .*; allowed: full, "):
        serve_app(str(front3), 200.0, device=_device(front3), static="nope")
    with pytest.raises(BundleError, match=r"--slo must be a number in \(0, 3\.6e\+06\] ms; got 0"):
        serve_app(str(front3), 0, device=_device(front3))
    with pytest.raises(BundleError, match=r"no device 'gpu9'"):
        serve_app(str(front3), 200.0, device="gpu9")


def test_the_bundle_serves_itself_without_torch_and_drains_on_sigterm(front3, tmp_path):
    """`python BUNDLE/dynasearch_bundle.py BUNDLE --serve --slo ...` in a Python that cannot import torch,
    transformers or this repository (the bundle's own runtime copy serves); requests in flight when
    SIGTERM arrives are answered, then the process exits 0."""
    import signal
    import threading
    import time
    import urllib.request

    from test_bundle import PYTHON, no_torch

    bundle = Path(shutil.copytree(front3, tmp_path / "bundle"))
    head = [PYTHON, str(bundle / "dynasearch_bundle.py")]
    with server_process(head, bundle, "500ms", "--serve", cwd=tmp_path, env=no_torch(tmp_path)) as (proc, base):
        body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["good"]}]}).encode()

        def post():
            req = urllib.request.Request(base + "/v2/models/dynabert/infer", body, {"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())

        assert post()[0] == 200
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(post())) for _ in range(20)]
        for t in threads:
            t.start()
        time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # every request that reached the server before SIGTERM got its answer (late ones: connection refused)
    assert answers and all(code == 200 for code, _ in answers)
    assert "Traceback" not in err


def test_loadtest_against_a_served_bundle(front3, tmp_path, capsys):
    """`dynasearch loadtest` on a real server process: open-loop arrivals, the bundle's report examples
    replayed, the summary's counts add up; a URL off this machine and a bad schedule are refused."""
    from test_bundle import PYTHON

    from dynasearch.cli import main
    from dynasearch.loadtest import LoadtestError, parse_schedule

    bundle = Path(shutil.copytree(front3, tmp_path / "bundle"))
    with server_process([PYTHON, "-m", "dynasearch", "serve"], bundle, "300ms") as (_, url):
        out = tmp_path / "summary.json"
        capsys.readouterr()
        argv = [
            "loadtest",
            url,
            "--bundle",
            str(bundle),
            "--schedule",
            "30:1,80:0.5",
            "--texts",
            "2",
            "--out",
            str(out),
        ]
        rc = main(argv)
        printed = capsys.readouterr().out
        assert rc == 0, printed
        s = json.loads(out.read_text())
        assert s["requests"] > 20 and s["slo_ms"] == 300.0 and s["errors"] == 0
        assert 0 <= s["effective_accuracy"] <= s["served_accuracy"] <= 1 and s["attainment"] > 0.5
        assert sum(s["subnetworks"].values()) == s["requests"] - s["shed"]
        assert "attainment" in printed and "effective accuracy" in printed
        # refused before any request leaves: a load test targets this machine only
        assert main(["loadtest", "http://10.0.0.1:8000", "--bundle", str(bundle)]) == 2
        assert "URL host '10.0.0.1' is not this machine" in capsys.readouterr().err
        # more texts a request than the server takes (64): every request refused, an error, not a summary
        out2 = tmp_path / "refused.json"
        assert (
            main(["loadtest", url, "--bundle", str(bundle), "--schedule", "5:1", "--texts", "65", "--out", str(out2)])
            == 2
        )
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "answered none of" in err and "over the limit of 64" in err and not out2.exists()
    with pytest.raises(LoadtestError, match=r"schedule phase 'fast' is not RATE:SECONDS"):
        parse_schedule("fast")


def test_a_loadtest_whose_server_died_or_refused_everything_is_an_error():
    """check_rows: connection failures with the server gone is an error (no summary, no --out file); so is a
    run that the server answered none of (found: both were exit 0 with a summary of nan and errors)."""
    import socket

    from dynasearch.loadtest import LoadtestError, check_rows

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    ok = {"i": 0, "status": 200}
    with pytest.raises(LoadtestError, match=r"stopped answering mid-run: 1 of 2 requests failed \(ClientOSError first"):
        check_rows([ok, {"i": 1, "status": "ClientOSError", "gone": True}], base)
    refused = [{"i": i, "status": 413, "error": '{"error": "too many"}'} for i in range(3)]
    with pytest.raises(LoadtestError, match=r"answered none of 3 requests: 413: .*too many"):
        check_rows(refused, base)
    check_rows([ok, {"i": 1, "status": 503}, {"i": 2, "status": "TimeoutError"}], base)  # counted, not fatal


def test_a_damaged_latency_cache_is_measured_again(front3, tmp_path):
    """A cache cut short (a crash of an older writer, a hand edit) or missing cells at some batch size is
    measured again, never an error and never served from."""
    bundle = Path(shutil.copytree(front3, tmp_path / "bundle"))
    engine = BundleEngine(str(bundle), _device(bundle))
    first = prepare_policy(engine, 200.0, budget_s=1.0)
    (cache,) = (bundle / ".serving").glob("latency-*.json")
    doc = json.loads(cache.read_text())
    for damaged in (
        cache.read_text()[:500],
        json.dumps({**doc, "cells": [c for c in doc["cells"] if c[1] != 16]}),  # batch 16 gone
    ):
        cache.write_text(damaged)
        said = []
        again = prepare_policy(engine, 200.0, budget_s=1.0, progress=said.append)
        assert len(said) == 1 and said[0].startswith("calibrating") and again.table.batches == first.table.batches
        assert json.loads(cache.read_text())["cells"] and len(json.loads(cache.read_text())["cells"]) == len(
            doc["cells"]
        )


def test_a_triton_client_speaks_to_the_server_with_json_tensors(front3, tmp_path):
    """tritonclient.http (a real Open Inference Protocol client) with binary_data=False in and out; its
    default binary-data request is refused with 400 naming binary_data=False."""
    import numpy as np
    import tritonclient.http as triton
    from test_bundle import PYTHON
    from tritonclient.utils import InferenceServerException

    bundle = Path(shutil.copytree(front3, tmp_path / "bundle"))
    with server_process([PYTHON, "-m", "dynasearch", "serve"], bundle, "300ms") as (_, base):
        client = triton.InferenceServerClient(base.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("dynabert")
        meta = client.get_model_metadata("dynabert")
        assert meta["inputs"][0]["datatype"] == "BYTES"
        texts = np.array([b"the movie was good", b"a bad and awful plot"], dtype=object)
        inp = triton.InferInput("text", [2], "BYTES")
        inp.set_data_from_numpy(texts, binary_data=False)
        outs = [
            triton.InferRequestedOutput("label", binary_data=False),
            triton.InferRequestedOutput("scores", binary_data=False),
        ]
        res = client.infer("dynabert", [inp], outputs=outs)
        assert res.as_numpy("scores").shape[0] == 2 and len(res.as_numpy("label")) == 2
        assert res.get_response()["parameters"]["subnetwork"]
        binary = triton.InferInput("text", [2], "BYTES")
        binary.set_data_from_numpy(texts)  # the client's default: the binary-data extension
        with pytest.raises(InferenceServerException, match="binary_data=False"):
            client.infer("dynabert", [binary])


def test_a_batch_is_one_run_padded_to_its_bucket_with_the_same_answers(front3):
    engine = BundleEngine(str(front3), _device(front3))
    key = next(iter(engine.configs))
    model = engine.models[key]
    shapes = []
    run = model._run
    model._run = lambda feeds: shapes.append(feeds["input_ids"].shape) or run(feeds)
    texts = ["the movie was good", "dull", "w1 " * 200]  # the last is truncated at the model's length
    alone = [model.predict(t)[0] for t in texts]
    shapes.clear()
    together = engine.run(key, texts, None, engine.max_length)
    assert shapes == [(3, engine.max_length)]  # one run of the whole batch (the entry's batch is 1)
    for (label, scores), (label1, scores1) in zip(together, alone):
        assert label == label1 and max(abs(a - b) for a, b in zip(scores, scores1)) < 1e-5
    shapes.clear()
    engine.run(key, texts[:2], None, 16)
    assert shapes == [(2, 16)]  # padded up to the bucket, not to the longest text
