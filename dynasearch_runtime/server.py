"""The dynamic server: one deployed DynaBERT whose sub-network is chosen per batch by the serving
policy (`policy`), over the Open Inference Protocol (KServe v2) REST API, with Prometheus metrics.

Part of the device runtime, but it needs the `serve` extra (starlette, uvicorn, prometheus_client;
Python 3.9+): imported only by `dynasearch serve` and `dynasearch_bundle.py --serve`, never by the
rest of the runtime. No torch: an engine runs onnxruntime sessions (or anything with `run`).

    Engine    what the server runs: configs with their accuracy, `run(key, texts, pairs)`,
              `length(texts, pairs)` (longest tokenisation, for the length bucket), labels
    Server    the queue, the worker that asks the policy for each batch and runs it in a thread,
              the metrics; `submit()` from the HTTP layer; `drain()` on shutdown
    build_app the Starlette app: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/NAME,
              /v2/models/NAME/ready, POST /v2/models/NAME/infer, GET /metrics

Limits (the bounds table's kinds): texts per request (MAX_TEXTS), body bytes (MAX_BODY), queued
texts (the queue bound). Errors are HTTP 400/404/413 with {"error": ...}; a request the policy sheds
(overload "shed": its deadline is out of reach) gets 503 with Retry-After; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from contextlib import asynccontextmanager
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import bounds
from .policy import Decision, Policy, PolicyError, Request

MAX_TEXTS = 64  # texts one request may carry (its SLO covers them all)
MAX_BODY = 1 << 20  # bytes of one request body
PROTOCOL_VERSION = "2"


class Rejected(Exception):
    """A request the server answers with an HTTP error: (status, message[, headers])."""

    def __init__(self, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class Engine:
    """What the server runs (a base to subclass; `BundleEngine` in `serve_bundle` runs a bundle's front).
    `configs`: key -> accuracy; `labels`: class names; `pair_task`: two texts per example."""

    configs: Dict[str, float] = {}
    labels: Sequence[str] = ()
    pair_task: bool = False
    max_length: int = 64

    def length(self, texts: Sequence[str], pairs: Optional[Sequence[str]]) -> Tuple[int, bool]:
        """(tokens of the longest example after truncation, whether any example was truncated)."""
        raise NotImplementedError

    def run(
        self, key: str, texts: Sequence[str], pairs: Optional[Sequence[str]], bucket: Optional[int] = None
    ) -> List[Tuple[str, List[float]]]:
        """(label, scores) per text: the batch run by config `key`, padded to `bucket` tokens (the policy's
        length bucket: the latency table's cell) when its longest text is shorter."""
        raise NotImplementedError


class _Pending:
    __slots__ = ("request", "texts", "pairs", "future", "truncated")

    def __init__(self, request: Request, texts, pairs, future, truncated: bool) -> None:
        self.request = request
        self.texts = texts
        self.pairs = pairs
        self.future = future
        self.truncated = truncated


class Server:
    """The queue and its worker (see the module docstring). `queue_bound`: texts waiting at most (a
    request that would pass it is shed at once with 503)."""

    def __init__(
        self,
        engine: Engine,
        policy: Optional[Policy] = None,
        queue_bound: int = 4096,
        max_texts: int = MAX_TEXTS,
        max_body: int = MAX_BODY,
        registry: Any = None,
        prepare: Optional[Callable[[], Policy]] = None,
    ) -> None:
        bounds.check("queue", queue_bound, "queue bound", PolicyError)
        bounds.check("texts", max_texts, "texts per request", PolicyError)
        bounds.check("body_bytes", max_body, "body size limit", PolicyError)
        if (policy is None) == (prepare is None):
            raise PolicyError("give the server a policy, or a prepare() that calibrates and returns one")
        self.prepare = prepare
        self.failed: Optional[str] = None  # why prepare() failed (the server stays live, never ready)
        self.max_texts = max_texts
        self.max_body = max_body
        self.engine = engine
        self.policy = policy
        self.queue_bound = queue_bound
        self.queue: List[_Pending] = []
        self.queued_texts = 0
        self.ready = False
        self.stopping = False
        self._next_id = 0
        self._wake: Optional[asyncio.Event] = None
        self._worker: Optional[asyncio.Task] = None
        self.decisions: List[Dict[str, Any]] = []  # a sample of the decision log (every 16th, last 1,000)
        self._n_decisions = 0
        self.metrics = Metrics(registry)

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the worker; with prepare() (the calibration), ready only once it returned the policy:
        live at once, ready when calibrated (the OIP's two health checks)."""
        self._wake = asyncio.Event()
        if self.prepare is None:
            self._begin()
        else:
            self._worker = asyncio.get_running_loop().create_task(self._calibrate())

    def _begin(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())
        self.ready = True

    async def _calibrate(self) -> None:
        try:
            self.policy = await asyncio.get_running_loop().run_in_executor(None, self.prepare)
        except Exception as e:  # the server stays live and says why it is not ready
            self.failed = f"{type(e).__name__}: {e}"
            return
        if not self.stopping:
            self._begin()
            await self._worker

    async def drain(self) -> None:
        """Stop taking requests, answer every queued one, stop the worker."""
        self.stopping = True
        self.ready = False
        if self._wake is not None:
            self._wake.set()
        if self._worker is not None:
            await self._worker

    # ------------------------------------------------------------------------------ requests
    async def submit(self, texts: Sequence[str], pairs: Optional[Sequence[str]], arrival: float) -> Dict[str, Any]:
        """Queue one request (its texts answered in one batch); the answer, or Rejected."""
        if self.stopping or self._wake is None:
            raise Rejected(503, "the server is shutting down", {"Retry-After": "1"})
        if not self.ready:
            why = f"calibration failed ({self.failed})" if self.failed else "calibrating the latency table"
            raise Rejected(503, f"not ready: {why}", {"Retry-After": "5"})
        n = len(texts)
        if n > self.policy.table.max_batch:
            # one request's texts run in one batch: more than the table measured would stop the worker (the
            # policy cannot time that batch), and every later request would wait forever
            raise Rejected(
                413,
                f"{n} texts in one request is over this server's limit of {self.policy.table.max_batch} "
                "(its largest measured batch); split the request",
            )
        if self.queued_texts + n > self.queue_bound:
            self.metrics.shed.inc()
            raise Rejected(
                503, f"queue full ({self.queued_texts} texts waiting, bound {self.queue_bound})", self._retry()
            )
        length, truncated = self.engine.length(texts, pairs)
        request = Request(self._next_id, arrival, n, min(length, self.engine.max_length))
        self._next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.queue.append(_Pending(request, list(texts), None if pairs is None else list(pairs), future, truncated))
        self.queued_texts += n
        self.metrics.queue.set(self.queued_texts)
        self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            future.cancel()  # the caller left: the worker drops it before its next decision
            raise

    def _retry(self) -> Dict[str, str]:
        # about the time the queue ahead takes with the fastest config
        t = self.policy.table
        ms = t.latency(t.fastest, t.max_batch, t.buckets[-1]) * self.policy.correction
        return {"Retry-After": str(max(1, math.ceil(ms * self.queued_texts / t.max_batch / 1000.0)))}

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.queue = [p for p in self.queue if not p.future.done()]  # clients that left cost nothing
            if not self.queue:
                self.queued_texts = 0
                self.metrics.queue.set(0)
                if self.stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            now = time.monotonic()
            try:
                d = self.policy.decide(now, [p.request for p in self.queue])
            except Exception as e:  # never a dead worker (every later request would wait forever): the queue
                for p in self.queue:  # gets the reason, the server goes on
                    if not p.future.done():
                        p.future.set_exception(Rejected(500, f"the policy failed: {type(e).__name__}: {e}"))
                self.queue = []
                continue
            self._log(now, d)
            taken = {r.id for r in d.requests}
            shed = {r.id for r in d.shed}
            batch = [p for p in self.queue if p.request.id in taken]
            for p in self.queue:
                if p.request.id in shed and not p.future.done():
                    self.metrics.shed.inc()
                    p.future.set_exception(
                        Rejected(503, "overloaded: the SLO cannot be met for this request", self._retry())
                    )
            self.queue = [p for p in self.queue if p.request.id not in taken and p.request.id not in shed]
            self.queued_texts = sum(p.request.texts for p in self.queue)
            self.metrics.queue.set(self.queued_texts)
            if not batch:
                continue
            texts = [t for p in batch for t in p.texts]
            pairs = [t for p in batch for t in p.pairs] if batch[0].pairs is not None else None
            t0 = time.monotonic()
            try:
                out = await loop.run_in_executor(None, self.engine.run, d.config, texts, pairs, d.bucket)
            except Exception as e:  # the model failed: every request of the batch gets the reason, the server goes on
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(Rejected(500, f"the model failed: {type(e).__name__}: {e}"))
                continue
            ms = (time.monotonic() - t0) * 1000.0
            self.policy.observe(d.expected_ms, ms)
            self.metrics.batch.observe(len(texts))
            end = time.monotonic()
            i = 0
            for p in batch:
                rows = out[i : i + len(p.texts)]
                i += len(p.texts)
                latency = end - p.request.arrival_s
                self.metrics.latency.observe(latency)
                self.metrics.requests.labels(d.config).inc()
                if latency * 1000.0 > self.policy.slo_ms:
                    self.metrics.misses.inc()
                if not p.future.done():
                    p.future.set_result(
                        {
                            "config": d.config,
                            "rows": rows,
                            "batch": len(texts),
                            "truncated": p.truncated,
                            "late": d.late,
                            "model_ms": ms,
                        }
                    )

    def _log(self, now: float, d: Decision) -> None:
        self._n_decisions += 1
        if self._n_decisions % 16 == 1:
            self.decisions.append(
                {
                    "t": round(now, 4),
                    "queue": len(self.queue),
                    "slack_ms": round(d.slack_ms, 3),
                    "config": d.config,
                    "batch": sum(r.texts for r in d.requests),
                    "shed": len(d.shed),
                    "expected_ms": round(d.expected_ms, 3),
                    "correction": round(self.policy.correction, 4),
                }
            )
            del self.decisions[:-1000]


class Metrics:
    """The Prometheus metrics of one server (its own registry: two servers in one process never mix)."""

    def __init__(self, registry: Any = None) -> None:
        import prometheus_client as pc  # the serve extra: only a server needs it

        self.registry = registry or pc.CollectorRegistry()
        r = self.registry
        self.latency = pc.Histogram(
            "dynasearch_request_latency_seconds", "request latency from arrival to answer", registry=r,
            buckets=(0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
        )  # fmt: skip
        self.queue = pc.Gauge("dynasearch_queue_texts", "texts waiting in the queue", registry=r)
        self.batch = pc.Histogram(
            "dynasearch_batch_texts", "texts per batch run", registry=r, buckets=(1, 2, 4, 8, 16, 32, 64)
        )
        self.requests = pc.Counter(
            "dynasearch_requests", "requests answered, by sub-network", ["subnetwork"], registry=r
        )
        self.misses = pc.Counter("dynasearch_slo_misses", "requests answered after their SLO", registry=r)
        self.shed = pc.Counter("dynasearch_shed", "requests refused with 503 (overload or a full queue)", registry=r)

    def text(self) -> bytes:
        import prometheus_client as pc

        return pc.generate_latest(self.registry)


# ---------------------------------------------------------------------------------- the OIP app
def parse_infer(
    body: bytes, pair_task: bool, max_texts: int = MAX_TEXTS, max_body: int = MAX_BODY
) -> Tuple[List[str], Optional[List[str]], Optional[str]]:
    """(texts, pairs or None, the request's id or None) of an OIP infer request with JSON tensors;
    Rejected(400/413) naming what is wrong."""
    if len(body) > max_body:
        raise Rejected(413, f"request body of {len(body)} bytes is over the limit of {max_body}")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Rejected(400, f"the body is not JSON: {e}") from None
    except RecursionError:  # '[[[[...' nested beyond the parser's depth (under the body limit)
        raise Rejected(400, "the body is not JSON this server reads: nested too deeply") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise Rejected(400, "the body must be an object with a non-empty 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise Rejected(400, "'parameters' must be an object")
    outs = doc.get("outputs") or []
    if not isinstance(outs, list):
        raise Rejected(400, f"'outputs' must be a list; got {type(outs).__name__}")
    if params.get("binary_data_output") or any(
        isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data") for o in outs if isinstance(o, dict)
    ):
        raise Rejected(400, "Triton's binary-data extension is not supported: request JSON tensors (binary_data=False)")
    want = 2 if pair_task else 1
    if len(doc["inputs"]) != want:
        raise Rejected(
            400,
            f"this model takes {want} BYTES input(s) ({'text and text_pair' if pair_task else 'text'}); "
            f"got {len(doc['inputs'])}",
        )
    columns = []
    for i, inp in enumerate(doc["inputs"]):
        if not isinstance(inp, dict):
            raise Rejected(400, f"inputs[{i}] must be an object")
        name = inp.get("name", f"inputs[{i}]")
        if not isinstance(inp.get("parameters") or {}, dict):
            raise Rejected(400, f"input {name}'s 'parameters' must be an object")
        if (inp.get("parameters") or {}).get("binary_data_size") is not None:
            raise Rejected(
                400, f"input {name} uses Triton's binary-data extension: send JSON tensors (binary_data=False)"
            )
        if inp.get("datatype") != "BYTES":
            raise Rejected(400, f"input {name} has datatype {inp.get('datatype')!r}; texts are a BYTES tensor")
        data = inp.get("data")
        if isinstance(data, list) and data and all(isinstance(x, list) and len(x) == 1 for x in data):
            data = [x[0] for x in data]  # shape [n, 1]
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise Rejected(400, f"input {name}'s data must be a list of strings")
        for j, x in enumerate(data):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\\ud800"): JSON admits it, no tokenizer does
                raise Rejected(400, f"input {name}'s string {j} is not valid Unicode (a lone surrogate)") from None
        shape = inp.get("shape")
        if not isinstance(shape, list) or not shape or shape[0] != len(data):
            raise Rejected(400, f"input {name}'s shape {shape!r} does not match its {len(data)} strings")
        columns.append(data)
    texts = columns[0]
    if not texts:
        raise Rejected(400, "the request holds no texts")
    if len(texts) > max_texts:
        raise Rejected(413, f"{len(texts)} texts in one request is over the limit of {max_texts}")
    if pair_task and len(columns[1]) != len(texts):
        raise Rejected(400, f"{len(texts)} texts but {len(columns[1])} second texts: a pair task needs one each")
    rid = doc.get("id")
    return texts, (columns[1] if pair_task else None), (None if rid is None else str(rid))


def build_app(
    server: Server,
    name: str = "dynabert",
    version: str = "1",
    ingress: Optional[Callable[[Mapping[str, str], float], float]] = None,
) -> Any:
    """The Starlette app of `server` (see the module docstring for its routes). `ingress(headers,
    received)`: a request's arrival on the monotonic clock from its headers and the time this app received
    it (no later than `received`); the policy's slack counts from it, and the response parameters say
    `ingress_wait_ms`, the time before this app (the Ray deployment's ingress time: `serve_ray`)."""
    from starlette.applications import Starlette  # the serve extra
    from starlette.requests import ClientDisconnect
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def error(status: int, message: str, headers: Optional[Mapping[str, str]] = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))

    def model_or_404(request: HttpRequest) -> Optional[JSONResponse]:
        asked = request.path_params["model"]
        if asked != name:
            return error(404, f"unknown model {asked!r}; this server serves {name!r}")
        return None

    async def server_meta(request: HttpRequest) -> JSONResponse:
        return JSONResponse({"name": "dynasearch", "version": PROTOCOL_VERSION, "extensions": []})

    async def live(request: HttpRequest) -> Response:
        return Response(status_code=200)

    async def ready(request: HttpRequest) -> Response:
        return Response(status_code=200 if server.ready else 503)

    async def model_meta(request: HttpRequest) -> JSONResponse:
        bad = model_or_404(request)
        if bad:
            return bad
        inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        if server.engine.pair_task:
            inputs.append({"name": "text_pair", "datatype": "BYTES", "shape": [-1]})
        n = max(1, len(server.engine.labels))
        return JSONResponse(
            {
                "name": name,
                "versions": [version],
                "platform": "dynasearch_dynabert",
                "inputs": inputs,
                "outputs": [
                    {"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "scores", "datatype": "FP32", "shape": [-1, n]},
                ],
                "parameters": {
                    "subnetworks": sorted(server.engine.configs),
                    "slo_ms": server.policy.slo_ms if server.policy else None,
                },
            }
        )

    async def model_ready(request: HttpRequest) -> Response:
        bad = model_or_404(request)
        return bad or Response(status_code=200 if server.ready else 503)

    async def infer(request: HttpRequest) -> Response:
        received = time.monotonic()
        arrival = received if ingress is None else min(received, ingress(request.headers, received))
        bad = model_or_404(request)
        if bad:
            return bad
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > server.max_body:
            return error(413, f"request body of {size} bytes is over the limit of {server.max_body}")
        if request.headers.get("inference-header-content-length"):
            return error(400, "Triton's binary-data extension is not supported: send JSON tensors (binary_data=False)")
        try:
            try:
                body = await request.body()
            except ClientDisconnect:  # the client left before its body arrived: nothing to answer, nothing to log
                return Response(status_code=499)
            texts, pairs, rid = parse_infer(body, server.engine.pair_task, server.max_texts, server.max_body)
            job = asyncio.ensure_future(server.submit(texts, pairs, arrival))
            # A client that leaves costs the others nothing: its request is cancelled, and the worker drops
            # a cancelled request before deciding (it never takes a place in a batch it has not yet joined).
            while not job.done():
                await asyncio.wait({job}, timeout=0.05)
                if not job.done() and await request.is_disconnected():
                    job.cancel()
                    return Response(status_code=499)
            answer = job.result()
        except Rejected as e:
            return error(e.status, str(e), e.headers)
        rows = answer["rows"]
        labels = [label if label is not None else "" for label, _ in rows]
        scores = [s for _, s in rows]
        width = len(scores[0]) if scores else 0
        doc: Dict[str, Any] = {
            "model_name": name,
            "model_version": version,
            "parameters": {
                "subnetwork": answer["config"],
                "batch_texts": answer["batch"],
                "truncated": answer["truncated"],
                "late": answer["late"],
                # the batch's model time and this request's time in the server (arrival to answer): what a
                # client's latency adds over them is the HTTP path's cost
                "model_ms": round(answer["model_ms"], 3),
                "server_ms": round((time.monotonic() - arrival) * 1000.0, 3),
            },
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [len(labels)], "data": labels},
                {
                    "name": "scores",
                    "datatype": "FP32",
                    "shape": [len(scores), width],
                    "data": [v for s in scores for v in s],
                },
            ],
        }
        if ingress is not None:
            doc["parameters"]["ingress_wait_ms"] = round((received - arrival) * 1000.0, 3)
        if rid is not None:
            doc["id"] = rid
        return JSONResponse(doc)

    async def metrics(request: HttpRequest) -> Response:
        return Response(server.metrics.text(), media_type="text/plain; version=0.0.4")

    async def lifespan(app):
        await server.start()
        try:
            yield
        finally:
            await server.drain()

    return Starlette(
        routes=[
            Route("/v2", server_meta),
            Route("/v2/health/live", live),
            Route("/v2/health/ready", ready),
            Route("/v2/models/{model}", model_meta),
            Route("/v2/models/{model}/ready", model_ready),
            Route("/v2/models/{model}/infer", infer, methods=["POST"]),
            Route("/metrics", metrics),
        ],
        lifespan=asynccontextmanager(lifespan),
    )
