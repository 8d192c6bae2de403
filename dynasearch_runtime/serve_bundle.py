"""Serving a bundle: its device's front as one dynamic server (`dynasearch serve BUNDLE --slo 40ms`).

Part of the device runtime (standard library, numpy, onnxruntime, and the serve extra; never torch):
`BundleEngine` runs the front's ONNX models (one onnxruntime session each: the configs share the
tokenizer, not their weights), `serve_app` builds the server whose start-up calibrates the latency
table on this machine (cached per machine fingerprint, see `calibrate`), `serve` runs it under
uvicorn (SIGTERM: stop accepting, answer what is queued, exit 0).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import bounds
from .bundle import BundleModel, choose, front, front_entry, read_index, this_machine, verify_files
from .calibrate import BATCHES, BUCKETS, cache_path, calibrate, load_table, restrict, save_table, table_identity
from .errors import BundleError
from .policy import MARGIN_SHARE, OVERLOADS, LatencyTable, Policy
from .server import Engine, Server, build_app


class BundleEngine(Engine):
    """The front configs of one device of a bundle, loaded (`configs`: key -> metric on the report examples)."""

    def __init__(self, bundle: str, device: Optional[str] = None, static: Optional[str] = None) -> None:
        # The tokenizer's own thread pool off (unless the user set it): a batch of at most 16 short texts gains
        # nothing from it, and its threads wake on other cores: the timing protocol saw the model thread wait
        # for them and discarded most calibration runs as preempted (87 s for a 30 s budget, 6 configs).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.bundle = str(bundle)
        index = read_index(self.bundle)
        verify_files(self.bundle, index)
        entry, _note = choose(index, device, bundle=self.bundle)
        self.device = entry["name"]
        configs = [c for c in front(index, self.device, entry["precision"], self.bundle) if c.get("file")]
        if not configs:
            raise BundleError(f"device {self.device!r} of {self.bundle} has no front config to serve")
        if static is not None:
            keys = [c["key"] for c in configs]
            pick = max(configs, key=lambda c: c["metric_value"]) if static == "full" else None
            pick = pick or next((c for c in configs if c["key"] == static), None)
            if pick is None:
                raise BundleError(
                    f"--static {static!r} is no front config of {self.device}; allowed: full, {', '.join(keys)}"
                )
            configs = [pick]
        self.entry = entry
        self.models: Dict[str, BundleModel] = {
            c["key"]: BundleModel(
                self.bundle, index, front_entry(index, self.device, c["key"], entry["precision"], self.bundle)
            )
            for c in configs
        }
        self.configs = {c["key"]: float(c["metric_value"]) for c in configs}
        first = next(iter(self.models.values()))
        self.tokenizer = first.tokenizer
        self.max_length = first.length
        self.labels = [first.labels[i] for i in sorted(first.labels)] if first.labels else []
        self.pair_task = index.get("text_inputs") == 2  # null (a csv task's bundle): one text
        self.digest = hashlib.sha256(open(os.path.join(self.bundle, "devices.json"), "rb").read()).hexdigest()

    def length(self, texts: Sequence[str], pairs: Optional[Sequence[str]]) -> Tuple[int, bool]:
        items = list(zip(texts, pairs)) if pairs is not None else list(texts)
        enc = self.tokenizer.encode_batch(items)
        return max(len(e.ids) for e in enc), any(len(e.overflowing) > 0 for e in enc)

    def run(
        self, key: str, texts: Sequence[str], pairs: Optional[Sequence[str]], bucket: Optional[int] = None
    ) -> List[Tuple[str, List[float]]]:
        """The batch as ONE onnxruntime run of config `key`, padded to `bucket` tokens (the table's cell)."""
        items = list(zip(texts, pairs)) if pairs is not None else list(texts)
        return [(label or "", scores) for label, scores in self.models[key].predict_batch(items, bucket)]

    def runner(self, key: str):
        """calibrate's runner: `run` of `key` on `batch` texts padded to `bucket` tokens, the server's whole
        path (tokenising, the model, the scores), so that the table holds what a batch costs the server."""

        def make(batch: int, bucket: int):
            # `bucket` tokens at most with the special tokens (one text: [CLS] x [SEP]; a pair: [CLS] a [SEP] b
            # [SEP]), padded up to `bucket`
            words = max(1, (bucket - 3) // 2 if self.pair_task else bucket - 2)
            texts = [" ".join(["the"] * words)] * batch
            return lambda: self.run(key, texts, texts if self.pair_task else None, bucket)

        return make


def check_serve_args(slo_ms: float, margin_ms: Optional[float], overload: str, name: str) -> None:
    """The server's arguments, before anything loads (one BundleError line): `serve`, `serve_app`, `serve_ray`."""
    bounds.check("latency_ms", slo_ms, "--slo", BundleError)
    check_margin(slo_ms, margin_ms)
    if overload not in OVERLOADS:
        raise BundleError(f"unknown --overload {overload!r}; allowed: {', '.join(OVERLOADS)}")
    if not name or "/" in name:
        raise BundleError(f"--name {name!r} must be a non-empty model name without '/'")


def check_margin(slo_ms: float, margin_ms: Optional[float]) -> None:
    """--slo-margin before anything loads: a number in [0, the SLO) ms (None: the default share)."""
    if margin_ms is None:
        return
    ok = isinstance(margin_ms, (int, float)) and not isinstance(margin_ms, bool) and 0 <= margin_ms < slo_ms
    if not ok:
        raise BundleError(f"--slo-margin must be in [0, the SLO {slo_ms:g}) ms; got {margin_ms!r}")


def prepare_policy(
    engine: BundleEngine,
    slo_ms: float,
    overload: str = "shed",
    budget_s: float = 30.0,
    progress=None,
    margin_ms: Optional[float] = None,
) -> Policy:
    """The latency table of `engine` on this machine (from the cache, or measured and cached), and the policy.
    One cache per bundle and machine holds every config measured so far: a static server reads the cells
    a dynamic one measured (and the reverse); only configs missing from it are measured, then merged in."""
    buckets = tuple(b for b in BUCKETS if b < engine.max_length) + (engine.max_length,)
    fp = hashlib.sha256(repr(sorted(this_machine().items())).encode()).hexdigest()[:16]
    ident = table_identity(engine.digest, fp, BATCHES, buckets)
    path = cache_path(engine.bundle, engine.digest, fp)
    cached: Optional[LatencyTable] = load_table(path, ident)
    if cached is not None and (cached.batches != tuple(sorted(set(BATCHES))) or cached.buckets != buckets):
        cached = None  # a damaged cache (cells missing at some batch or bucket): measured again, not served from
    missing = [k for k in engine.configs if cached is None or k not in cached.accuracy]
    if missing:
        runners = {k: engine.runner(k) for k in missing}
        part, info = calibrate(
            runners, {k: engine.configs[k] for k in missing}, BATCHES, buckets, budget_s=budget_s, progress=progress
        )
        accuracy = {**(cached.accuracy if cached else {}), **part.accuracy}
        cached = LatencyTable(accuracy, {**(cached.ms if cached else {}), **part.ms})
        try:
            save_table(path, cached, ident, info)
        except OSError:
            pass  # a cache that cannot be written costs the next start a calibration, nothing else
    table = restrict(cached, engine.configs)
    for key in engine.configs:
        if key not in missing:
            # Read from the cache, never run in this process: one run per bucket at the smallest and the largest
            # batch first (onnxruntime's first run of a shape allocates), so that "ready" means warm.
            make = engine.runner(key)
            for batch in (table.batches[0], table.max_batch):
                for bucket in table.buckets:
                    make(batch, bucket)()
    margin = MARGIN_SHARE * slo_ms if margin_ms is None else margin_ms
    return Policy(table, slo_ms, overload=overload, margin_ms=margin)


def serve_app(
    bundle: str,
    slo_ms: float,
    device: Optional[str] = None,
    name: str = "dynabert",
    static: Optional[str] = None,
    overload: str = "shed",
    budget_s: float = 30.0,
    margin_ms: Optional[float] = None,
) -> Tuple[Any, Server]:
    """(the ASGI app, its server) for a bundle; checks its arguments before loading anything."""
    check_serve_args(slo_ms, margin_ms, overload, name)
    engine = BundleEngine(bundle, device, static)
    server = Server(engine, prepare=lambda: prepare_policy(engine, slo_ms, overload, budget_s, margin_ms=margin_ms))
    return build_app(server, name), server


def serve(
    bundle: str,
    slo_ms: float,
    device: Optional[str] = None,
    name: str = "dynabert",
    host: str = "127.0.0.1",
    port: int = 8000,
    static: Optional[str] = None,
    overload: str = "shed",
    margin_ms: Optional[float] = None,
) -> None:
    """Run the server until SIGTERM or Ctrl-C (uvicorn: stop accepting, drain, exit). `margin_ms`: each batch
    is planned to end this long before its requests' deadline (default: a tenth of the SLO, see policy)."""
    import uvicorn  # the serve extra

    bounds.check("port", port, "--port", BundleError)
    check_serve_args(slo_ms, margin_ms, overload, name)
    engine = BundleEngine(bundle, device, static)
    # Calibrated before the port opens: an SLO the fastest config cannot hold is one line and exit 2,
    # not a server that never becomes ready.
    policy = prepare_policy(engine, slo_ms, overload, progress=lambda m: print(m, flush=True), margin_ms=margin_ms)
    server = Server(engine, policy)
    print(
        f"serving {name} ({len(engine.configs)} sub-network(s) of device {engine.device}) on http://{host}:{port} "
        f"with SLO {slo_ms:g} ms",
        flush=True,
    )
    config = uvicorn.Config(
        build_app(server, name), host=host, port=port, log_level="warning", timeout_graceful_shutdown=30
    )
    _draining_server(config).run()


def _draining_server(config):
    """A uvicorn server that exits 0 after SIGTERM: uvicorn re-raises SIGTERM/SIGINT once it has shut down
    (the process would die of the signal), but a server that drained its queue did what SIGTERM asks."""
    import uvicorn  # the serve extra

    class DrainingServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                getattr(self, "_captured_signals", []).clear()

    return DrainingServer(config)
