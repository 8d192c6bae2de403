"""dynasearch query RESULTS --target-latency 8ms [--json] [--verify]: answers from the results alone."""

from __future__ import annotations


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
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    import json
    import sys

    from search.errors import NoAnswerError
    from search.results import best_under, describe_answer, read_results
    from search.units import parse_latency

    from .common import print_warnings

    target = parse_latency(args.target_latency)
    try:
        with print_warnings():  # an older results format is one 'warning: ...' line
            ans = best_under(read_results(args.results), target)
            while args.verify and not ans["verified"]:
                from search.verify import verify_results_answer

                ans = verify_results_answer(args.results, ans)
                if ans["measured_ms"] > target:  # it is now measured: the next query skips it
                    print(
                        f"config {ans['key']} measured {ans['measured_ms']:.3f} ms, missing {target:g} ms; trying the next one"
                    )
                    ans = best_under(read_results(args.results), target)
    except NoAnswerError as e:  # the query ran and found nothing: exit 1, as `search` does (2 is for bad input)
        print(f"dynasearch query: no answer: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(ans, sort_keys=True))
    else:
        print(f"best config under {target:g} ms:")
        print(describe_answer(ans))
    return 0
