"""`dynasearch serve BUNDLE --ray` (issue 24, item 6): the same Open Inference Protocol app through a Ray
Serve deployment on a local Ray instance with one replica (usage stats off, no dashboard, every Ray port and
the HTTP proxy on 127.0.0.1, shut down after): calibrated in the replica's start-up, the policy's own
batching, and the ingress time (the proxy's X-Request-Start stamp, or an earlier one from a load balancer in
front) carried to the policy."""

import asyncio
import contextlib
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit
from test_bundle import PYTHON, front3, wide_front  # noqa: E402,F401  (the bundle fixtures)

from dynasearch_runtime.serve_ray import (  # noqa: E402
    MAX_INGRESS_AGE_S,
    StampIngress,
    ingress_arrival,
    parse_request_start,
)

pytest_plugins = ["searchkit"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need_ray() -> None:
    if importlib.util.find_spec("ray") is None:  # found, not imported: the server process imports it
        if IN_CI:
            pytest.fail("the Ray Serve test must run under CI=true: pip install 'dynasearch[ray]'", pytrace=False)
        pytest.skip("ray is not installed (the ray extra)")


def test_the_ingress_stamp_is_read_checked_and_set_by_the_proxy():
    now = 1_765_000_000.0
    for text in (f"t={int(now * 1e6)}", f"t={now:.3f}", str(int(now * 1e3)), f"t={int(now * 1e9)}"):
        assert parse_request_start(text) == pytest.approx(now, abs=1e-3), text
    for bad in (None, "", "t=", "t=abc", "t=-5", "t=nan", "t=inf", "t=12"):
        assert parse_request_start(bad) is None, bad
    stamp = {"x-request-start": f"t={int((now - 0.25) * 1e6)}"}
    assert ingress_arrival(stamp, 100.0, now=now) == pytest.approx(99.75)  # 250 ms before this replica
    assert ingress_arrival({}, 100.0, now=now) == 100.0
    future = {"x-request-start": f"t={int((now + 5) * 1e6)}"}
    old = {"x-request-start": f"t={int((now - MAX_INGRESS_AGE_S - 1) * 1e6)}"}
    assert ingress_arrival(future, 100.0, now=now) == 100.0 and ingress_arrival(old, 100.0, now=now) == 100.0

    seen = []

    async def inner(scope, receive, send):
        seen.append(dict(scope["headers"]).get(b"x-request-start"))

    mw = StampIngress(inner)
    before = time.time()
    asyncio.run(mw({"type": "http", "headers": [(b"host", b"x")]}, None, None))
    asyncio.run(mw({"type": "http", "headers": [(b"x-request-start", b"t=garbage")]}, None, None))
    earlier = f"t={int((before - 1) * 1e6)}".encode()
    asyncio.run(mw({"type": "http", "headers": [(b"x-request-start", earlier)]}, None, None))
    for got in seen[:2]:  # stamped now (a bad stamp replaced)
        assert before <= parse_request_start(got.decode()) <= time.time()
    assert seen[2] == earlier  # a load balancer's earlier stamp is kept


def test_bad_deployment_arguments_are_one_line_before_ray_starts():
    from dynasearch_runtime.errors import BundleError
    from dynasearch_runtime.serve_ray import app, build

    with pytest.raises(BundleError, match=r"^--replicas must be an integer in 1\.\.10000; got 0$"):
        app("bundle", 40.0, replicas=0)
    with pytest.raises(BundleError, match=r"^--slo must be a number in \(0, 3\.6e\+06\] ms; got -1"):
        app("bundle", -1)
    with pytest.raises(BundleError, match=r"^arguments: bundle and slo, and optionally .*; unknown: replica$"):
        build({"bundle": "b", "slo": "40ms", "replica": "2"})


def test_a_ray_address_with_no_cluster_is_one_line(front3, tmp_path):
    """--ray-address that names no cluster (not an address, or nothing there) is the user's input: one line
    naming it, exit 2 (found as an internal error with a crash log)."""
    _need_ray()
    from dynasearch_runtime.errors import BundleError
    from dynasearch_runtime.serve_ray import serve_ray

    bundle = shutil.copytree(front3, tmp_path / "bundle")
    device = json.loads((bundle / "devices.json").read_text())["devices"][0]["name"]
    with pytest.raises(BundleError, match=r"^--ray-address 'foo': no Ray cluster to join \(.*foo.*\); start one"):
        serve_ray(str(bundle), 200.0, device, address="foo", port=_port_outside_rays())


def test_the_runtime_never_imports_ray():
    code = (
        "import sys, dynasearch_runtime.server, dynasearch_runtime.serve_bundle, dynasearch_runtime.bundle_cli, "
        "dynasearch_runtime.serve_ray; print('ray' in sys.modules)"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def _port_outside_rays() -> int:
    """A free port that Ray's own processes will not take as they start: not from the OS's ephemeral range
    (Ray's agents take ports there, 52365 by default, and a port the OS just gave us is one of them: a
    run here lost its port that way) nor Ray's worker range (10002-19999)."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 20000..32000")


@contextlib.contextmanager
def ray_server(bundle: Path, slo: str, *extra: str):
    """`dynasearch serve BUNDLE --ray` on a free port, ready (calibrated): yields (process, base URL). The
    process stops Ray Serve and Ray on SIGTERM; one that does not is killed with its process group."""
    port = _port_outside_rays()
    device = json.loads((bundle / "devices.json").read_text())["devices"][0]["name"]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    cmd = [PYTHON, "-m", "dynasearch", "serve", str(bundle), "--slo", slo, "--device", device, "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--ray", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if urllib.request.urlopen(base + "/v2/health/ready", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the Ray deployment was not ready in 180 s"
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # our own child's group: Ray's processes share its fate
                proc.wait(10)


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _infer(base: str, texts, headers=None):
    body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]})
    req = urllib.request.Request(
        base + "/v2/models/dynabert/infer", body.encode(), {"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_ray_serve_deployment_with_one_replica(front3, tmp_path):
    _need_ray()
    from dynasearch_runtime.serve_bundle import BundleEngine, prepare_policy

    bundle = Path(shutil.copytree(front3, tmp_path / "bundle"))
    index = json.loads((bundle / "devices.json").read_text())
    keys = [c["key"] for c in index["devices"][0]["front"]]
    # the latency table on a small budget, cached beside the bundle: the server and its replica read it
    prepare_policy(BundleEngine(str(bundle), index["devices"][0]["name"]), 300.0, budget_s=1.0)
    with ray_server(bundle, "300ms") as (proc, base):
        # the OIP routes through Ray's proxy: ready only after the replica calibrated (its constructor)
        assert _get(base + "/v2/health/live")[0] == 200 and _get(base + "/v2/models/dynabert/ready")[0] == 200
        assert json.loads(_get(base + "/v2")[1])["name"] == "dynasearch"
        meta = json.loads(_get(base + "/v2/models/dynabert")[1])
        assert sorted(meta["parameters"]["subnetworks"]) == sorted(keys) and meta["parameters"]["slo_ms"] == 300.0
        assert _get(base + "/v2/models/nope")[0] == 404
        code, doc = _infer(base, ["the movie was good", "a bad and awful plot"])
        assert code == 200, doc
        assert doc["parameters"]["subnetwork"] in keys and len(doc["outputs"][0]["data"]) == 2
        assert doc["outputs"][1]["shape"][0] == 2
        # the proxy stamped the request as it came in: the hop to the replica counts against the slack
        assert 0 < doc["parameters"]["ingress_wait_ms"] < 300
        # a request stamped 150 ms earlier by a load balancer in front: the policy counts from that stamp
        now_us = int(time.time() * 1e6)
        code, doc = _infer(base, ["good"], {"X-Request-Start": f"t={now_us - 150_000}"})
        assert code == 200 and 150 <= doc["parameters"]["ingress_wait_ms"] < 450, doc
        # stamped longer ago than the SLO: no config can meet its deadline, so the policy sheds it (503)
        code, doc = _infer(base, ["good"], {"X-Request-Start": f"t={int(time.time() * 1e6) - 400_000}"})
        assert code == 503 and "overloaded" in doc["error"], doc
        # a stamp in the future is a wrong clock: ignored (the proxy's own stamp counts)
        code, doc = _infer(base, ["good"], {"X-Request-Start": f"t={int(time.time() * 1e6) + 10_000_000}"})
        assert code == 200 and doc["parameters"]["ingress_wait_ms"] < 150, doc
        metrics = _get(base + "/metrics")[1].decode()
        assert "dynasearch_shed_total 1.0" in metrics
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    assert "serving dynabert on Ray Serve (1 replica(s))" in out and "Traceback" not in err
    assert len(list((bundle / ".serving").glob("latency-*.json"))) == 1  # one machine, one table
