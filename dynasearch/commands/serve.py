"""dynasearch serve BUNDLE --slo 40ms: the device's front of a bundle as one dynamic server (no torch)."""

from __future__ import annotations

from .common import bounded


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a bundle's front over the Open Inference Protocol, switching sub-network per batch to hold an SLO",
        description="Loads the front configs the bundle carries for this machine's device (`export --bundle --front K`), "
        "measures their latency table here (batch sizes 1-16, length buckets; cached beside the bundle), then answers "
        "POST /v2/models/NAME/infer, choosing each batch's sub-network so that as many requests as possible meet the "
        "SLO and, among those choices, accuracy is highest. GET /metrics in Prometheus format. SIGTERM: stop "
        "accepting, answer what is queued, exit 0. Needs the serve extra: pip install 'dynasearch[serve]'.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="a bundle of `dynasearch export --results R --bundle --front K`")
    p.add_argument("--slo", required=True, metavar="LAT", help="latency objective per request with a unit, e.g. 40ms")
    p.add_argument(
        "--device", default=None, metavar="NAME", help="the bundle's device to serve (default: this machine's)"
    )
    p.add_argument("--name", default="dynabert", help="model name in the protocol's paths (default dynabert)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=bounded("port"), default=8000, help="port (default 8000)")
    p.add_argument(
        "--static", default=None, metavar="KEY|full", help="serve one fixed config (a front key, or full: the most "
        "accurate) through the same code: the baselines"
    )  # fmt: skip
    p.add_argument(
        "--overload",
        choices=["shed", "late"],
        default="shed",
        help="when even the fastest config cannot meet a request's deadline: shed (503 + Retry-After; default: a "
        "late answer is worth less than a retry elsewhere, and shedding keeps the rest of the queue on time) or late",
    )
    p.add_argument(
        "--slo-margin",
        default=None,
        metavar="LAT",
        help="plan each batch to end this long before its requests' deadline: the time an answer takes from the server "
        "to the client, outside the server's view (default: a tenth of the SLO; 0 for none)",
    )
    r = p.add_argument_group("Ray Serve (needs the ray extra: pip install 'dynasearch[ray]')")
    r.add_argument(
        "--ray",
        action="store_true",
        help="serve through a Ray Serve deployment (the same routes; each replica batches with the policy); "
        "a local Ray on this machine unless --ray-address names a cluster",
    )
    r.add_argument("--replicas", type=bounded("replicas"), default=None, help="--ray: replicas (default 1)")
    r.add_argument(
        "--ray-address", default=None, metavar="ADDR", help="--ray: a running Ray cluster (ray start --head), e.g. "
        "10.0.0.5:6379 or auto; the bundle must be at the same path on every node"
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args) -> int:
    from dynasearch_runtime.errors import BundleError
    from dynasearch_runtime.units import parse_margin
    from search.units import parse_latency

    if not args.ray:
        given = [o for o, v in (("--replicas", args.replicas), ("--ray-address", args.ray_address)) if v is not None]
        if given:
            said = " and ".join(given)
            raise BundleError(
                f"{said} {'applies' if len(given) == 1 else 'apply'} to --ray only: add --ray, or drop {said}"
            )
    slo = parse_latency(args.slo)
    margin = parse_margin(args.slo_margin, BundleError)
    if args.ray:
        import importlib.util

        # the ray extra, said in one line before anything starts (found, not imported: serve_ray sets Ray's
        # environment before its first import)
        if importlib.util.find_spec("ray") is None:
            raise BundleError("--ray needs the ray extra (ray is missing): pip install 'dynasearch[ray]'")
        from dynasearch_runtime.serve_ray import serve_ray

        serve_ray(args.bundle, slo, args.device, args.name, args.host, args.port, args.static, args.overload,
                  args.replicas or 1, args.ray_address, margin_ms=margin)  # fmt: skip
        return 0
    from dynasearch_runtime.serve_bundle import serve

    serve(args.bundle, slo, args.device, args.name, args.host, args.port, args.static, args.overload, margin)
    return 0
