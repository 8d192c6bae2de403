"""The dynamic server as a Ray Serve deployment: the same Starlette app (`server.build_app` over a
`Server` running a `BundleEngine`), one per replica, for users who run replicas on a cluster.

Part of the device runtime, but it needs the `ray` extra (ray[serve] >= 2.60, Python 3.9+): imported only
by `dynasearch serve --ray`, `serve.run(app(...))` and Ray's own `serve run`/`serve deploy`, never by the
rest of the runtime (ray is imported inside the functions that need it).

    app(bundle, slo_ms, ...)   the Ray Serve application: `serve.run(app(...), route_prefix="/")`
    build(args)                the same from Ray's config-file arguments (`serve run/deploy` import path
                               dynasearch_runtime.serve_ray:build)
    serve_ray(...)             `dynasearch serve BUNDLE --ray`: start a local Ray (or join a cluster),
                               run the app on host:port until SIGTERM or Ctrl-C, then shut down, exit 0

How it keeps the policy's view of the queue true:
- Each replica batches with the policy (`Server._work`), not `@serve.batch`: a fixed batch size and wait
  would decide the batch before the policy sees the slack of what waits.
- `max_ongoing_requests` is the server's queue bound (texts; a request holds at least one), so Ray's proxy
  hands every request to the replica at once instead of holding it back where the policy cannot see it.
- The ingress time: Ray's request context carries no receive time of the proxy, so the proxy stamps one.
  `proxy_middlewares` is Ray's HTTP proxy callback (env RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH, read
  by each proxy at start; `serve_ray` sets it for a local Ray): it adds `X-Request-Start: t=<unix
  microseconds>` as the proxy receives a request, keeping an earlier valid stamp that a load balancer in
  front already set. The replica counts the request's slack from that stamp (`ingress_arrival`): only a
  stamp in the past and at most `max_ingress_age_s` old (default 60 s; an older or future one is a wrong
  clock, not a wait), else from its own receive time. Wall clocks of the proxy's and the replica's
  machines must agree (NTP) for the time between them to count; the response parameters say
  `ingress_wait_ms`, the time from the stamp to the replica.
- Calibration happens in each replica's constructor (cached per machine beside the bundle), so Ray routes
  nothing to a replica, and the OIP ready route answers nothing, before its latency table exists;
  `check_health` fails when the replica's worker stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any, Dict, Mapping, Optional

from . import bounds
from .errors import BundleError
from .serve_bundle import check_serve_args

INGRESS_HEADER = "x-request-start"
MAX_INGRESS_AGE_S = 60.0
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "dynasearch_runtime.serve_ray.proxy_middlewares"
APP_NAME = "dynasearch"


# ---------------------------------------------------------------------------------- the ingress time
def parse_request_start(value: Optional[str]) -> Optional[float]:
    """Unix seconds of an `X-Request-Start` value, or None when it is none: `t=` and a number in seconds
    (nginx's `t=${msec}`), milliseconds (HAProxy's `t=%Ts%ms`), microseconds (the usual) or nanoseconds, told
    apart by magnitude (seconds since 1973 at least)."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("t="):
        text = text[2:]
    try:
        v = float(text)
    except ValueError:
        return None
    if not (v > 0 and v < float("inf")):
        return None
    for scale in (1e9, 1e6, 1e3, 1.0):  # ns, us, ms, s: the largest unit that gives a date after 1973
        if v / scale > 1e8:
            return v / scale
    return None


def ingress_arrival(
    headers: Mapping[str, str], received: float, now: Optional[float] = None, max_age_s: float = MAX_INGRESS_AGE_S
) -> float:
    """The request's arrival on the monotonic clock: `received` (this replica's receive time, monotonic)
    moved back by the age of its X-Request-Start stamp when that is in the past and at most `max_age_s`
    old; `received` itself otherwise. `now`: the wall clock (default time.time())."""
    stamp = parse_request_start(headers.get(INGRESS_HEADER))
    if stamp is None:
        return received
    age = (time.time() if now is None else now) - stamp
    if not (0.0 < age <= max_age_s):
        return received
    return received - age


class StampIngress:
    """ASGI middleware for Ray Serve's HTTP proxy: `X-Request-Start: t=<unix microseconds>` on each HTTP
    request as the proxy receives it (an earlier valid stamp, from a load balancer in front, is kept)."""

    def __init__(self, app: Any, max_age_s: float = MAX_INGRESS_AGE_S) -> None:
        self.app = app
        self.max_age_s = max_age_s

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") == "http":
            now = time.time()
            headers = list(scope.get("headers") or [])
            old = [v for k, v in headers if k.lower() == INGRESS_HEADER.encode()]
            stamp = parse_request_start(old[0].decode("latin-1")) if len(old) == 1 else None
            if stamp is None or not (0.0 <= now - stamp <= self.max_age_s):
                headers = [(k, v) for k, v in headers if k.lower() != INGRESS_HEADER.encode()]
                headers.append((INGRESS_HEADER.encode(), f"t={int(now * 1e6)}".encode()))
                scope = dict(scope, headers=headers)
        await self.app(scope, receive, send)


def proxy_middlewares() -> list:
    """Ray Serve's HTTP proxy callback (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=
    dynasearch_runtime.serve_ray.proxy_middlewares): the middlewares its proxies apply."""
    from starlette.middleware import Middleware

    return [Middleware(StampIngress)]


# ---------------------------------------------------------------------------------- the deployment
class _Replica:
    """One replica: the bundle's engine, calibrated in the constructor, and the server's app (Ray's
    late-bound ingress: `__serve_build_asgi_app__` runs after the constructor)."""

    async def __init__(
        self,
        bundle: str,
        slo_ms: float,
        device: Optional[str],
        name: str,
        static: Optional[str],
        overload: str,
        budget_s: float,
        queue_bound: int,
        max_ingress_age_s: float,
        margin_ms: Optional[float] = None,
    ) -> None:
        from .serve_bundle import BundleEngine, prepare_policy
        from .server import Server

        loop = asyncio.get_running_loop()
        # off the event loop: Ray probes the replica's loop while the latency table is measured
        engine = await loop.run_in_executor(None, BundleEngine, bundle, device, static)
        policy = await loop.run_in_executor(
            None, lambda: prepare_policy(engine, slo_ms, overload, budget_s, margin_ms=margin_ms)
        )
        self._server = Server(engine, policy, queue_bound=queue_bound)
        self._name = name
        self._max_age_s = max_ingress_age_s

    def __serve_build_asgi_app__(self) -> Any:
        from .server import build_app

        def ingress(headers: Mapping[str, str], received: float) -> float:
            return ingress_arrival(headers, received, max_age_s=self._max_age_s)

        return build_app(self._server, self._name, ingress=ingress)

    async def check_health(self) -> None:
        worker = self._server._worker
        if self._server.stopping or worker is None or not worker.done():
            return
        error = None if worker.cancelled() else worker.exception()
        raise RuntimeError(f"the server's worker stopped: {error!r}")


_DEPLOYMENT: Any = None


def _deployment() -> Any:
    global _DEPLOYMENT
    if _DEPLOYMENT is None:
        from ray import serve

        _DEPLOYMENT = serve.deployment(serve.ingress()(_Replica), name="dynasearch")
    return _DEPLOYMENT


def _check(
    slo_ms: float,
    overload: str,
    name: str,
    replicas: int,
    queue_bound: int,
    budget_s: float,
    margin_ms: Optional[float],
) -> None:
    check_serve_args(slo_ms, margin_ms, overload, name)
    bounds.check("replicas", replicas, "--replicas", BundleError)
    bounds.check("queue", queue_bound, "queue bound", BundleError)
    bounds.check("duration_s", budget_s, "calibration budget", BundleError)


def app(
    bundle: str,
    slo_ms: float,
    device: Optional[str] = None,
    name: str = "dynabert",
    static: Optional[str] = None,
    overload: str = "shed",
    replicas: int = 1,
    queue_bound: int = 4096,
    budget_s: float = 30.0,
    max_ingress_age_s: float = MAX_INGRESS_AGE_S,
    ray_actor_options: Optional[Dict[str, Any]] = None,
    margin_ms: Optional[float] = None,
) -> Any:
    """The Ray Serve application of a bundle's front: `serve.run(app(BUNDLE, 40.0), route_prefix="/")`.
    Each replica loads the bundle (a path every node can read), calibrates its latency table (at most
    `budget_s`), then serves the OIP routes; `max_ongoing_requests` is `queue_bound`."""
    _check(slo_ms, overload, name, replicas, queue_bound, budget_s, margin_ms)
    bounds.check("duration_s", max_ingress_age_s, "ingress age limit", BundleError)
    options: Dict[str, Any] = {
        "num_replicas": replicas,
        "max_ongoing_requests": queue_bound,
        "max_constructor_retry_count": 3,  # a calibration that failed fails again: say so soon
        "graceful_shutdown_wait_loop_s": 0.5,  # a stopping replica looks for requests it still holds this often
    }
    if ray_actor_options is not None:
        options["ray_actor_options"] = ray_actor_options
    return (
        _deployment()
        .options(**options)
        .bind(
            os.path.abspath(bundle), float(slo_ms), device, name, static, overload, float(budget_s), int(queue_bound),
            float(max_ingress_age_s), margin_ms,
        )
    )  # fmt: skip


def build(args: Dict[str, Any]) -> Any:
    """`app` from the string arguments of Ray's `serve run dynasearch_runtime.serve_ray:build bundle=B
    slo=40ms [device=..] [replicas=N]` or a Serve config file's `args`."""
    from .units import parse_latency

    known = {"bundle", "slo", "device", "name", "static", "overload", "replicas", "queue_bound", "budget_s"}
    unknown = sorted(set(args) - known)
    if unknown or "bundle" not in args or "slo" not in args:
        raise BundleError(f"arguments: bundle and slo, and optionally {', '.join(sorted(known - {'bundle', 'slo'}))}"
                          + (f"; unknown: {', '.join(unknown)}" if unknown else ""))  # fmt: skip
    return app(
        str(args["bundle"]),
        parse_latency(str(args["slo"]), BundleError),
        device=args.get("device"),
        name=str(args.get("name", "dynabert")),
        static=args.get("static"),
        overload=str(args.get("overload", "shed")),
        replicas=bounds.parse("replicas", str(args.get("replicas", 1))),
        queue_bound=bounds.parse("queue", str(args.get("queue_bound", 4096))),
        budget_s=bounds.parse("duration_s", str(args.get("budget_s", 30))),
    )


# ---------------------------------------------------------------------------------- the command
def serve_ray(
    bundle: str,
    slo_ms: float,
    device: Optional[str] = None,
    name: str = "dynabert",
    host: str = "127.0.0.1",
    port: int = 8000,
    static: Optional[str] = None,
    overload: str = "shed",
    replicas: int = 1,
    address: Optional[str] = None,
    budget_s: float = 30.0,
    num_cpus: Optional[int] = None,
    margin_ms: Optional[float] = None,
) -> None:
    """Run `app` on Ray Serve at host:port until SIGTERM or Ctrl-C. Without `address`, a local Ray on this
    machine (usage stats off unless RAY_USAGE_STATS_ENABLED says otherwise, no dashboard), shut down at the
    end; with it, the cluster at that address (`ray start --head` there), where only this application is
    deleted at the end. Arguments and the bundle are checked first (one line, BundleError); on a local Ray
    the latency table is measured here first too (the replicas read it from the cache), so an SLO this
    machine cannot hold is one line, not a replica that never starts."""
    bounds.check("port", port, "--port", BundleError)
    _check(slo_ms, overload, name, replicas, 4096, budget_s, margin_ms)
    from .serve_bundle import BundleEngine, prepare_policy

    engine = BundleEngine(bundle, device, static)
    if address is None:
        prepare_policy(engine, slo_ms, overload, budget_s, progress=lambda m: print(m, flush=True), margin_ms=margin_ms)
    del engine
    env = {PROXY_CALLBACK_ENV: PROXY_CALLBACK}
    if address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Ray's switch for a one-machine instance: its node address and every port on 127.0.0.1 (read when
        # ray is first imported), whatever --host the HTTP proxy listens on
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)  # the local proxy inherits it
    import ray  # the ray extra
    from ray import serve

    if address is None:
        ray.init(include_dashboard=False, num_cpus=num_cpus, log_to_driver=False)
    else:  # a Serve that this job starts on the cluster gets the proxy callback (nodes: see docs/deployment.md)
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        except (ConnectionError, ValueError) as e:  # nothing there, or not an address: the user's input
            why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise BundleError(
                f"--ray-address {address!r}: no Ray cluster to join ({why}); start one there with `ray start "
                "--head`, or drop --ray-address for a local Ray"
            ) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which sets its own SIGTERM handler
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(app(bundle, slo_ms, device, name, static, overload, replicas, budget_s=budget_s,
                          margin_ms=margin_ms),
                      name=APP_NAME, route_prefix="/")  # fmt: skip
        except RuntimeError as e:  # a replica's constructor failed (Ray retried it): the error's last line
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            raise BundleError(f"the Ray Serve application did not start: {lines[-1] if lines else e}") from None
        print(
            f"serving {name} on Ray Serve ({replicas} replica(s)) at http://{host}:{port} with SLO {slo_ms:g} ms",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal while shutting down is ignored
            signal.signal(sig, signal.SIG_IGN)
        try:
            if address is None:
                serve.shutdown()  # replicas drain: Ray waits for the requests they hold
            else:
                serve.delete(APP_NAME)
        finally:
            ray.shutdown()
