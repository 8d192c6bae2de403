"""dynasearch query RESULTS --target-latency 8ms [--json] [--verify]: answers from the results alone."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "query",
        help="best config of a finished search under a latency target, from its results directory (fast, no torch)",
        description="Answers from RESULTS (written by `dynasearch search`) alone: among the Pareto front's configs whose "
        "latency (measured where measured, else predicted) meets the target, the one with the highest metric on the whole "
        "dev split. An answer whose latency was never measured is marked 'not verified'; --verify measures it now. "
        "Exit status 1 when no config meets the target (one line naming the fastest), 2 on bad input or a damaged RESULTS.",
    )
    p.add_argument("results", metavar="RESULTS", help="a results directory of `dynasearch search`")
    p.add_argument("--target-latency", required=True, metavar="LAT", help="latency target with a unit, e.g. 8ms")
    p.add_argument("--json", action="store_true", help="print the answer as one JSON object")
    p.add_argument("--verify", action="store_true", help="measure the answer on this machine if it was never measured")
    p.add_argument(
        "--device-name",
        default=None,
        metavar="NAME",
        help="a multi-device search: answer for device NAME (its best precision under the target)",
    )
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    import json
    import sys

    from search.errors import NoAnswerError
    from search.results import best_under, describe_answer, read_results
    from search.units import parse_latency

    from .common import print_warnings

    target = parse_latency(args.target_latency)
    results = args.results
    try:
        with print_warnings():  # an older results format is one 'warning: ...' line
            if args.device_name is not None or (Path(results) / "devices.json").is_file():
                results, ans = best_device_answer(results, args.device_name, target)
            else:
                ans = best_under(read_results(results), target)
            while args.verify and not ans["verified"]:
                from search.verify import verify_results_answer

                ans = verify_results_answer(results, ans)
                if ans["measured_ms"] > target:  # it is now measured: the next query skips it
                    print(
                        f"config {ans['key']} measured {ans['measured_ms']:.3f} ms, missing {target:g} ms; trying the next one"
                    )
                    ans = best_under(read_results(results), target)
    except NoAnswerError as e:  # the query ran and found nothing: exit 1, as `search` does (2 is for bad input)
        print(f"dynasearch query: no answer: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(ans, sort_keys=True))
    else:
        print(f"best config under {target:g} ms:")
        print(describe_answer(ans))
    return 0


def best_device_answer(results, name, target):
    """(the device's results folder, its best answer under target over its precisions)."""
    from search.devices import read_devices
    from search.errors import NoAnswerError, SearchError
    from search.results import best_under, read_results

    doc = read_devices(results)
    if doc is None:
        raise SearchError(f"{results} is a single-device search (no devices.json); drop --device-name")
    names = sorted({d["name"] for d in doc["devices"]})
    if name is None:
        raise SearchError(f"{results} holds several devices; name one with --device-name ({', '.join(names)})")
    entries = [d for d in doc["devices"] if d["name"] == name]
    if not entries:
        raise SearchError(f"no device {name!r} in {results}; devices: {', '.join(names)}")
    best, fastest = None, []
    for d in entries:
        folder = Path(results) / d["results"]
        precision = d.get("precision", "fp32")
        try:
            ans = best_under(read_results(folder), target)
        except NoAnswerError as e:
            fastest.append(f"the fastest {precision} config is {e.fastest}" if e.fastest else f"{precision}: {e}")
            continue
        ans["precision"] = precision
        if best is None or (ans.get("metric_full") or 0) > (best[1].get("metric_full") or 0):
            best = (folder, ans)
    if best is None:
        # one sentence for the device, then each precision's fastest config, named by its precision
        raise NoAnswerError(f"no config of device {name} meets {target:g} ms; " + "; ".join(fastest))
    return best
