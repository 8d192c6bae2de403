"""`dynasearch loadtest URL --bundle BUNDLE`: an open-loop load test of a dynasearch server on this machine.

Arrivals are Poisson at a rate schedule (phases of RATE:SECONDS: constant, steps, bursts), drawn by
the serving simulator's `poisson` (seeded, the same schedule the simulator replays). Each request carries
`texts` report examples of the bundle (the dev examples its search held out and reported on, in one
seeded order, replayed from devices.json's `report`); a bundle whose search held nothing out is refused.
Latency counts from each request's INTENDED send time (no coordinated omission); the generator logs its
own lag and flags the run unreliable when its p99 exceeds 10% of the SLO. Loopback only; bounded in
requests and seconds.

Reported: SLO attainment, p50/p95/p99, goodput, served accuracy (correct answers / texts sent) and
effective accuracy (correct answers within the SLO / texts sent), shed requests, sub-network switches.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from dynabert.errors import DataError, DynasearchError
from dynasearch_runtime import bounds
from dynasearch_runtime.simulator import percentile, poisson

MAX_REQUESTS = 100_000
LAG_SHARE = 0.10  # a generator whose own send lag p99 exceeds this share of the SLO is flagged unreliable


class LoadtestError(DynasearchError):
    """A load test that cannot run: a URL off this machine, a bundle without held-out report examples, ..."""


@dataclass(frozen=True)
class LoadtestConfig:
    url: str
    bundle: str
    schedule: tuple[tuple[float, float], ...]  # (seconds, requests per second) phases
    data_dir: str | None = None
    model: str = "dynabert"
    texts: int = 1
    seed: int = 0
    timeout_s: float = 60.0

    def check(self) -> None:
        if not self.schedule:
            raise LoadtestError("the schedule has no phase; give RATE:SECONDS[,RATE:SECONDS...]")
        for i, (seconds, rate) in enumerate(self.schedule):
            bounds.check("duration_s", seconds, f"schedule phase {i + 1}'s seconds", LoadtestError)
            bounds.check("rate", rate, f"schedule phase {i + 1}'s rate", LoadtestError)
        expected = sum(s * r for s, r in self.schedule)
        if expected > MAX_REQUESTS:
            raise LoadtestError(f"the schedule sends about {expected:.0f} requests; at most {MAX_REQUESTS} per run")
        bounds.check("texts", self.texts, "texts per request", LoadtestError)
        bounds.check("duration_s", self.timeout_s, "request timeout", LoadtestError)
        loopback_base(self.url)


def parse_schedule(text: str) -> tuple[tuple[float, float], ...]:
    """'RATE:SECONDS,RATE:SECONDS' -> ((seconds, rate), ...)."""
    phases = []
    for part in str(text).split(","):
        rate, sep, seconds = part.strip().partition(":")
        try:
            phases.append((float(seconds), float(rate)))
        except ValueError:
            raise LoadtestError(
                f"schedule phase {part.strip()!r} is not RATE:SECONDS (e.g. 20:30 or 10:20,60:20)"
            ) from None
        if not sep:
            raise LoadtestError(f"schedule phase {part.strip()!r} is not RATE:SECONDS (e.g. 20:30 or 10:20,60:20)")
    return tuple(phases)


def loopback_base(url: str) -> str:
    """The URL's scheme://host:port when its host is this machine (127.0.0.0/8, ::1, localhost)."""
    u = urllib.parse.urlsplit(str(url))
    if u.scheme != "http" or not u.hostname:
        raise LoadtestError(f"URL {url!r} must be http://HOST:PORT of a dynasearch server on this machine")
    host = u.hostname
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if not local:
        raise LoadtestError(
            f"URL host {host!r} is not this machine; a load test targets 127.0.0.1, ::1 or localhost only"
        )
    try:
        port = u.port  # urllib reads it with int(): a word or 99999 raises
    except ValueError:
        port = -1
    if port is not None:
        bounds.check("port", port, f"the port of URL {url!r}", LoadtestError)
    return f"http://{u.netloc}"


def report_examples(bundle: str, data_dir: str | None) -> tuple[list[str], list[str] | None, list[int]]:
    """(texts, pairs, class ids) of the bundle's report examples, replayed from devices.json's `report`."""
    from dynabert.evaluate import index_sha256, report_indices
    from dynabert.tasks import get_task, load_split
    from dynasearch_runtime.bundle_index import read_index

    index = read_index(bundle)
    report = index.get("report")
    if int(index.get("version", 1)) < 2 or not isinstance(report, dict):
        raise LoadtestError(f"{bundle} records no report examples (a version-1 bundle); export it again with --front K")
    if not report.get("held_out"):
        raise LoadtestError(
            f"{bundle}'s search held nothing out (no --search-dev): its metrics were scored on the examples it ranked "
            "on; search again with --search-dev N, then export the bundle"
        )
    if not report.get("recorded") or not report.get("sha256"):
        raise LoadtestError(f"{bundle}'s search did not record which dev examples it reported on; search it again")
    spec = get_task(str(report["task"]))
    if spec.is_regression:
        raise LoadtestError(f"task {spec.name} is a regression: the load test scores classifiers")
    dev = load_split(spec, "dev", data_dir or report.get("data_dir"), None if data_dir else report.get("dev_file"))
    if len(dev) != report.get("dev_examples"):
        raise DataError(
            f"the dev split read ({dev.source}) has {len(dev)} examples; the search's had {report.get('dev_examples')}: "
            "give --data-dir of the data the search used"
        )
    idx = report_indices(
        len(dev), report["search_dev"], report["search_dev_seed"], report["rescore_dev"], report["rescore_seed"]
    )
    if index_sha256(idx) != report["sha256"]:
        raise DataError(
            f"the report examples read from {dev.source} are not the ones the search recorded (sha256 differs)"
        )
    part = dev.subset(idx)
    return part.texts, part.pairs, [int(y) for y in part.labels]


async def _drive(cfg: LoadtestConfig, base: str, examples, slo_ms: float, progress) -> list[dict[str, Any]]:
    # aiohttp, not httpx: httpx's connection pool matches every waiting request against every connection
    # (quadratic): at 280 requests/s against a server at its capacity the generator itself used a core and
    # fell minutes behind its schedule (measured here); aiohttp's pool hands connections to waiters in order.
    import aiohttp  # the serve extra

    texts, pairs, labels = examples
    order = list(range(len(texts)))
    random.Random(cfg.seed).shuffle(order)  # one seeded order, the same for every mode compared
    arrivals = poisson([(s, r) for s, r in cfg.schedule], seed=cfg.seed, texts=cfg.texts)
    results: list[dict[str, Any]] = []
    url = f"{base}/v2/models/{cfg.model}/infer"

    async def one(client, i: int, intended: float) -> None:
        lag = time.monotonic() - intended
        picks = [order[(i * cfg.texts + j) % len(order)] for j in range(cfg.texts)]
        inputs = [{"name": "text", "datatype": "BYTES", "shape": [len(picks)], "data": [texts[k] for k in picks]}]
        if pairs is not None:
            inputs.append(
                {"name": "text_pair", "datatype": "BYTES", "shape": [len(picks)], "data": [pairs[k] for k in picks]}
            )
        row: dict[str, Any] = {
            "i": i,
            "lag_ms": lag * 1000.0,
            "texts": len(picks),
            "picks": picks,  # indices into the report examples: a paired comparison resamples them
            "correct": 0,
            "config": None,
            "model_ms": None,
            "server_ms": None,
        }
        try:
            async with client.post(url, json={"inputs": inputs}) as r:
                row["status"] = r.status
                doc = await r.json() if r.status == 200 else None
                if r.status not in (200, 503):  # the server's reason, for a run that nothing answered
                    row["error"] = (await r.text())[:300]
            if doc is not None:
                out = {o["name"]: o for o in doc["outputs"]}
                width = out["scores"]["shape"][1]
                scores = out["scores"]["data"]
                for n, k in enumerate(picks):
                    s = scores[n * width : (n + 1) * width]
                    row["correct"] += int(max(range(width), key=s.__getitem__) == labels[k])
                params = doc["parameters"]
                row["config"] = params["subnetwork"]
                row["model_ms"] = params.get("model_ms")
                row["server_ms"] = params.get("server_ms")
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            row["status"] = f"{type(e).__name__}"
            # refused, reset or closed: the server is not there (it died, or stopped listening), not slow
            row["gone"] = isinstance(e, aiohttp.ClientConnectionError) and not isinstance(e, asyncio.TimeoutError)
        row["latency_ms"] = (time.monotonic() - intended) * 1000.0  # from the INTENDED send time
        results.append(row)

    connector = aiohttp.TCPConnector(limit=1024)
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        start = time.monotonic() + 0.05
        tasks = []
        for i, a in enumerate(arrivals):
            intended = start + a.arrival_s
            delay = intended - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(client, i, intended)))
            if progress and i % 500 == 499:
                progress(f"{i + 1} of {len(arrivals)} requests sent")
        await asyncio.gather(*tasks)
    return sorted(results, key=lambda r: r["i"])


def loadtest(cfg: LoadtestConfig, progress=None, keep_rows: bool = False) -> dict[str, Any]:
    """Run the load test; the summary (see the module docstring). `keep_rows`: also every request's row
    (`rows`: i, texts, picks (report-example indices), correct, status, config, latency_ms, lag_ms,
    model_ms and server_ms as the server reported them)."""
    cfg.check()
    base = loopback_base(cfg.url)
    examples = report_examples(cfg.bundle, cfg.data_dir)
    try:
        with urllib.request.urlopen(f"{base}/v2/models/{cfg.model}", timeout=10) as r:
            meta = json.loads(r.read())
        slo_ms = float(meta["parameters"]["slo_ms"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LoadtestError(f"no dynasearch model {cfg.model!r} answers at {base} ({type(e).__name__}: {e})") from None
    rows = asyncio.run(_drive(cfg, base, examples, slo_ms, progress))
    check_rows(rows, base)
    n = len(rows)
    sent_texts = sum(r["texts"] for r in rows) or 1
    ok = [r for r in rows if r["status"] == 200]
    on_time = [r for r in ok if r["latency_ms"] <= slo_ms]
    lat = [r["latency_ms"] for r in ok]
    configs = [r["config"] for r in ok]
    lag_p99 = percentile([r["lag_ms"] for r in rows], 99)
    seconds = sum(s for s, _ in cfg.schedule)
    summary = {
        "requests": n,
        "slo_ms": slo_ms,
        "attainment": len(on_time) / n if n else float("nan"),
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "goodput_rps": len(on_time) / seconds,
        "served_accuracy": sum(r["correct"] for r in ok) / sent_texts,
        "effective_accuracy": sum(r["correct"] for r in on_time) / sent_texts,
        "shed": sum(1 for r in rows if r["status"] == 503),
        "errors": sum(1 for r in rows if r["status"] not in (200, 503)),
        "switches": sum(1 for a, b in zip(configs, configs[1:]) if a != b),
        "subnetworks": {k: configs.count(k) for k in sorted(set(configs))},
        "send_lag_p99_ms": lag_p99,
        "unreliable": bool(lag_p99 > LAG_SHARE * slo_ms),
        "texts_per_request": cfg.texts,
        "schedule": [{"rate": r, "seconds": s} for s, r in cfg.schedule],
        "seed": cfg.seed,
    }
    if keep_rows:
        summary["rows"] = rows
    return summary


def _alive(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/v2/health/live", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def check_rows(rows: list[dict[str, Any]], base: str) -> None:
    """A run whose numbers mean nothing is an error, not a summary: the server stopped answering
    mid-run, or it refused every request (e.g. --texts above its limit per request)."""
    gone = [r for r in rows if r.get("gone")]
    if gone and not _alive(base):  # a refused or reset connection under load alone is counted, not fatal
        raise LoadtestError(
            f"the server at {base} stopped answering mid-run: {len(gone)} of {len(rows)} requests failed "
            f"({gone[0]['status']} first at request {gone[0]['i']}); no summary written"
        )
    if rows and not any(r["status"] in (200, 503) for r in rows):
        first = rows[0]
        why = str(first.get("error") or first["status"]).strip().replace("\n", " ")
        raise LoadtestError(f"the server at {base} answered none of {len(rows)} requests: {first['status']}: {why}")


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"{s['requests']} requests, SLO {s['slo_ms']:g} ms: attainment {100 * s['attainment']:.1f}%, "
        f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, goodput {s['goodput_rps']:.1f}/s",
        f"served accuracy {100 * s['served_accuracy']:.2f}%, effective accuracy {100 * s['effective_accuracy']:.2f}%, "
        f"shed {s['shed']}, errors {s['errors']}, sub-network switches {s['switches']} ({json.dumps(s['subnetworks'])})",
    ]
    if s["unreliable"]:
        lines.append(
            f"warning: the generator's own send lag p99 was {s['send_lag_p99_ms']:.1f} ms, over 10% of the SLO: "
            "this run is unreliable (run the generator on a core of its own)"
        )
    return "\n".join(lines)
