"""The dynamic server in-process (dynasearch_runtime/server.py): the Open Inference Protocol routes,
the per-batch choice of sub-network, bad requests (400/404/413), overload (503 + Retry-After),
metrics, and a drain that answers what was queued. A fake engine stands in for the models."""

from __future__ import annotations

import json
import threading
import time

import pytest
from starlette.testclient import TestClient  # the serve extra (in dev: a missing install fails here)

from dynasearch_runtime.policy import LatencyTable, Policy
from dynasearch_runtime.server import MAX_BODY, MAX_TEXTS, Engine, Server, build_app


class FakeEngine(Engine):
    """Two 'sub-networks': big is right (label = the text's parity word), small says 'neg' always;
    each sleeps its table time per text."""

    configs = {"big": 0.9, "small": 0.6}
    labels = ("neg", "pos")

    def __init__(self, pair_task: bool = False, ms=None):
        self.pair_task = pair_task
        self.max_length = 64
        self.ms = ms or {"big": 2.0, "small": 0.5}
        self.ran: list[tuple[str, int]] = []
        self.buckets: list = []  # the length bucket each batch was padded to

    def length(self, texts, pairs):
        n = max(len(t.split()) + (len(p.split()) if pairs else 0) for t, p in zip(texts, pairs or texts)) + 2
        return min(n, self.max_length), n > self.max_length

    def run(self, key, texts, pairs, bucket=None):
        self.ran.append((key, len(texts)))
        self.buckets.append(bucket)
        time.sleep(self.ms[key] * len(texts) / 1000.0)
        out = []
        for t in texts:
            label = ("pos" if "good" in t else "neg") if key == "big" else "neg"
            out.append((label, [0.2, 0.8] if label == "pos" else [0.8, 0.2]))
        return out


def table(ms) -> LatencyTable:
    cells = {(k, b, L): v * b for k, v in ms.items() for b in (1, 16) for L in (16, 64)}
    return LatencyTable(FakeEngine.configs, cells)


def client(engine=None, slo=200.0, **kw) -> tuple[TestClient, Server]:
    engine = engine or FakeEngine()
    server = Server(engine, Policy(table(engine.ms), slo, **kw))
    return TestClient(build_app(server, "dynabert")), server


def infer(c: TestClient, texts, name="dynabert", **extra):
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}], **extra}
    return c.post(f"/v2/models/{name}/infer", json=body)


def test_health_metadata_and_an_answer_that_names_its_subnetwork():
    c, server = client()
    with c:
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200 and c.get("/v2/models/dynabert/ready").status_code == 200
        meta = c.get("/v2/models/dynabert").json()
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert meta["parameters"]["subnetworks"] == ["big", "small"]
        assert c.get("/v2").json()["name"] == "dynasearch"
        r = infer(c, ["a good film", "a dull one"], id="r1")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["id"] == "r1" and doc["parameters"]["subnetwork"] == "big"  # alone and in time: the most accurate
        # the big config sleeps 2 ms a text: the model's time is reported, and the server's time covers it
        params = doc["parameters"]
        assert 4.0 <= params["model_ms"] <= params["server_ms"] < 1000.0
        assert server.engine.buckets == [16]  # padded to the table's bucket above its longest text (3 words + 2)
        out = {o["name"]: o for o in doc["outputs"]}
        assert out["label"]["data"] == ["pos", "neg"] and out["scores"]["shape"] == [2, 2]
        metrics = c.get("/metrics").text
        assert 'dynasearch_requests_total{subnetwork="big"} 1.0' in metrics
        assert "dynasearch_request_latency_seconds_count 1.0" in metrics
    assert not server.ready  # drained at shutdown


@pytest.mark.parametrize(
    "body, status, match",
    [
        (b"{not json", 400, r"the body is not JSON"),
        (json.dumps({"inputs": []}).encode(), 400, r"non-empty 'inputs' list"),
        (
            json.dumps({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode(),
            400,
            r"datatype 'FP32'; texts are a BYTES tensor",
        ),
        (
            json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [0], "data": []}]}).encode(),
            400,
            r"holds no texts",
        ),
        (
            json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}).encode(),
            400,
            r"shape \[2\] does not match its 1 strings",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "text", "datatype": "BYTES", "shape": [MAX_TEXTS + 1], "data": ["a"] * (MAX_TEXTS + 1)}
                    ]
                }
            ).encode(),
            413,
            rf"{MAX_TEXTS + 1} texts in one request is over the limit of {MAX_TEXTS}",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "text",
                            "datatype": "BYTES",
                            "shape": [1],
                            "data": ["a"],
                            "parameters": {"binary_data_size": 5},
                        }
                    ]
                }
            ).encode(),
            400,
            r"binary_data=False",
        ),
        (
            json.dumps(
                {
                    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
                    "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
                }
            ).encode(),
            400,
            r"binary_data=False",
        ),
        (b"x" * (MAX_BODY + 1), 413, r"over the limit of 1048576"),
        # found by the bad-input pass: more texts than the table's largest batch (16) stopped the worker (every
        # later request hung); the others were a 500 with a traceback in the server's log
        (
            json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [17], "data": ["a"] * 17}]}).encode(),
            413,
            r"17 texts in one request is over this server's limit of 16 \(its largest measured batch\)",
        ),
        (b"[" * 200_000 + b"]" * 200_000, 400, r"nested too deeply"),
        (
            json.dumps(
                {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}], "outputs": 5}
            ).encode(),
            400,
            r"'outputs' must be a list; got int",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"], "parameters": [1]}]}
            ).encode(),
            400,
            r"input text's 'parameters' must be an object",
        ),
        (
            b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["\\ud800 x"]}]}',
            400,
            r"string 0 is not valid Unicode \(a lone surrogate\)",
        ),
    ],
)
def test_bad_requests_get_an_error_and_the_server_keeps_serving(body, status, match):
    import re

    c, _ = client()
    with c:
        r = c.post("/v2/models/dynabert/infer", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status and re.search(match, r.json()["error"]), r.text
        assert infer(c, ["good"]).status_code == 200  # still serving


def test_unknown_model_and_a_missing_second_text_of_a_pair_task():
    c, _ = client()
    with c:
        r = infer(c, ["a"], name="bert")
        assert r.status_code == 404 and "unknown model 'bert'; this server serves 'dynabert'" in r.json()["error"]
        assert c.get("/v2/models/bert").status_code == 404
    c, _ = client(FakeEngine(pair_task=True))
    with c:
        r = infer(c, ["a"])
        assert r.status_code == 400 and "takes 2 BYTES input(s) (text and text_pair); got 1" in r.json()["error"]


def test_under_load_the_server_switches_to_the_fast_subnetwork_and_sheds_what_it_cannot_serve():
    """60 concurrent one-text requests against a 20 ms SLO: big (2 ms a text) cannot serve a batch of 16 in
    time, small (0.5 ms) can; what cannot meet its deadline is shed with 503 and Retry-After."""
    engine = FakeEngine()
    c, server = client(engine, slo=20.0, overload="shed")
    codes, configs = [], []
    with c:

        def one(i):
            r = infer(c, ["good" if i % 2 else "bad"])
            codes.append(r.status_code)
            if r.status_code == 200:
                configs.append(r.json()["parameters"]["subnetwork"])
            else:
                assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1

        threads = [threading.Thread(target=one, args=(i,)) for i in range(60)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = c.get("/metrics").text
    assert len(codes) == 60 and set(codes) <= {200, 503}
    assert "small" in configs  # the policy switched under the queue
    assert max(n for _, n in engine.ran) > 1  # and batched
    shed = codes.count(503)
    assert f"dynasearch_shed_total {float(shed)}" in metrics


def test_drain_answers_every_queued_request_then_stops():
    """What shutdown (SIGTERM under uvicorn) runs: new requests are refused with 503, every queued one
    is answered, then the worker stops."""
    import asyncio

    from dynasearch_runtime.server import Rejected

    engine = FakeEngine(ms={"big": 20.0, "small": 5.0})
    server = Server(engine, Policy(table(engine.ms), 5000.0))

    async def scenario():
        await server.start()
        queued = [asyncio.ensure_future(server.submit(["good"], None, time.monotonic())) for _ in range(8)]
        await asyncio.sleep(0)  # every request is in the queue
        drained = asyncio.ensure_future(server.drain())
        await asyncio.sleep(0)
        with pytest.raises(Rejected, match="shutting down"):
            await server.submit(["late"], None, time.monotonic())
        await drained
        return [q.result() for q in queued]

    answers = asyncio.run(scenario())
    assert len(answers) == 8 and all(a["rows"][0][0] == "pos" for a in answers)
    assert not server.queue and sum(n for _, n in engine.ran) == 8


def test_live_at_once_ready_only_when_calibrated_and_a_failed_calibration_says_why():
    engine = FakeEngine()
    gate = threading.Event()

    def prepare():
        gate.wait(10)
        return Policy(table(engine.ms), 200.0)

    server = Server(engine, prepare=prepare)
    with TestClient(build_app(server)) as c:
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 503
        r = infer(c, ["good"])
        assert r.status_code == 503 and r.json()["error"] == "not ready: calibrating the latency table"
        gate.set()
        for _ in range(100):
            if c.get("/v2/health/ready").status_code == 200:
                break
            time.sleep(0.02)
        assert infer(c, ["good"]).status_code == 200

    def broken():
        raise RuntimeError("no model file")

    server = Server(engine, prepare=broken)
    with TestClient(build_app(server)) as c:
        for _ in range(100):
            if server.failed:
                break
            time.sleep(0.02)
        assert c.get("/v2/health/ready").status_code == 503
        r = infer(c, ["good"])
        assert "calibration failed (RuntimeError: no model file)" in r.json()["error"]


def test_a_client_that_leaves_costs_the_others_nothing():
    """Requests whose callers left while they waited are dropped before the next decision: the model
    never runs them, and the requests behind them are answered."""
    import asyncio

    engine = FakeEngine(ms={"big": 30.0, "small": 10.0})
    server = Server(engine, Policy(table(engine.ms), 5000.0, max_batch=1))

    async def scenario():
        await server.start()
        first = asyncio.ensure_future(server.submit(["good"], None, time.monotonic()))
        await asyncio.sleep(0.005)  # the worker runs the first request (30 ms)
        gone = [asyncio.ensure_future(server.submit(["bad"], None, time.monotonic())) for _ in range(5)]
        stay = asyncio.ensure_future(server.submit(["good"], None, time.monotonic()))
        await asyncio.sleep(0)
        for g in gone:
            g.cancel()  # what the app does when is_disconnected() says the client left
        answers = await asyncio.gather(first, stay)
        await server.drain()
        return answers

    answers = asyncio.run(scenario())
    assert [a["rows"][0][0] for a in answers] == ["pos", "pos"]
    assert sum(n for _, n in engine.ran) == 2  # the five that left never ran


def test_a_policy_that_fails_answers_the_queue_500_and_the_worker_goes_on():
    """Found: a decision that raised (a request over the table's largest batch) ended the worker, and every
    later request waited forever. Now the queued requests get the reason and the next ones are served."""
    c, server = client()
    with c:
        real = server.policy.decide
        calls = []

        def fail_once(now, queue):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")
            return real(now, queue)

        server.policy.decide = fail_once
        r = infer(c, ["good"])
        assert r.status_code == 500 and r.json()["error"] == "the policy failed: RuntimeError: boom"
        assert infer(c, ["good"]).status_code == 200
