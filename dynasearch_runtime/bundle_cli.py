"""The bundle's command line and `--check` (`python BUNDLE/dynasearch_bundle.py BUNDLE [--check]`):
predict texts, or time the chosen model here against its recorded latency (see `bundle`).

Part of the device runtime (standard library; relative imports, Python 3.8 syntax).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

from . import bounds
from .bundle import (
    CHECK_RUNS,
    CHECK_TOLERANCE,
    BundleModel,
    check_argument,
    choose,
    describe_entry,
    describe_machine,
    front,
    load,
    read_index,
)
from .errors import BundleError, DynasearchError


# ------------------------------------------------------------------------------ the command line
def _measured(e: Dict[str, Any]) -> Optional[Tuple[float, str]]:
    """The search's verified latency of the entry: the raw median first (a fresh process's time is raw; the
    speed-corrected one is on the scale of the predictor's records run, which a lone process here does not
    share), else the speed-corrected one; None when the search did not measure it."""
    for field, name in (("measured_raw_ms", "measured (raw)"), ("measured_ms", "measured (speed-corrected)")):
        if e.get(field):
            return float(e[field]), name
    return None


def check_setting(model: BundleModel) -> None:
    """BundleError when the model runs at other threads or another batch than its entry's: every latency the
    bundle records is at the entry's own setting, so there is nothing to compare a time at another one with."""
    e = model.entry
    if (model.threads, model.batch) != (int(e["threads"]), int(e["batch"])):
        raise BundleError(
            f"--check compares with the latency recorded at the entry's setting (device {e['name']} "
            f"({e['precision']}): threads {e['threads']}, batch {e['batch']}), not at threads {model.threads}, "
            f"batch {model.batch}; drop --threads/--batch, or time another setting without --check "
            "(in Python: load(BUNDLE, threads=N, batch=N).time_ms())"
        )


def check(model: BundleModel, runs: int = CHECK_RUNS) -> Tuple[int, str]:
    """(exit status, the line): the time here against the recorded latency: check_ms (this loop's time at
    export on the exporting machine) first, else the search's measured latency (raw, then speed-corrected),
    else the predicted one. With check_ms the line also gives the search's measured latency and its ratio,
    for information (the verification times models interleaved and cold, this loop one model warm).
    BundleError (`check_setting`) when the model runs at another threads or batch than its entry's."""
    e = model.entry
    check_setting(model)
    here = model.time_ms(runs)
    where = describe_machine(e, e.get("fingerprint"))
    measured = _measured(e)
    info = ""
    if e.get("check_ms"):
        recorded, kind = float(e["check_ms"]), "recorded by the loader's loop at export"
        said = ([f"{e['check_runs']} runs"] if e.get("check_runs") else []) + (
            [str(e["check_when"])] if e.get("check_when") else []
        )
        when = f" ({', '.join(said)})" if said else ""
        kind += f" on {where}{when}"
        if measured:
            info = (
                f"; the search's verification {measured[1]}: {measured[0]:.3f} ms, ratio {here / measured[0]:.2f} "
                "(for information: it times models interleaved and cold)"
            )
        elif e.get("predicted_ms"):
            info = f"; predicted {float(e['predicted_ms']):.3f} ms, ratio {here / float(e['predicted_ms']):.2f}"
    elif measured:
        recorded, kind = measured[0], f"{measured[1]} on {where}"
    else:
        recorded, kind = e.get("predicted_ms"), f"predicted on {where}"
    head = (
        f"device {e['name']} ({e['precision']}): {here:.3f} ms here (median of {runs} runs at batch {model.batch}, "
        f"length {e['length']}, {model.threads} thread(s))"
    )
    if not recorded:
        return 1, head + "; the bundle records no latency for it"
    ratio = here / float(recorded)
    off = abs(ratio - 1.0) > CHECK_TOLERANCE
    return int(off), (
        f"{head} against {float(recorded):.3f} ms {kind}: ratio {ratio:.2f} "
        + (f"(more than {CHECK_TOLERANCE:.0%} off)" if off else f"(within {CHECK_TOLERANCE:.0%})")
        + info
    )


def _list_front(bundle: str, device: Optional[str], threads: Optional[int], batch: Optional[int]) -> int:
    """--front: the chosen entry's device's front, one JSON line per config (BundleError without a front)."""
    index = read_index(bundle)
    entry, _ = choose(index, device, threads, batch, bundle=bundle)
    configs = front(index, entry["name"], entry["precision"], bundle)
    print(f"front of device {entry['name']} ({entry['precision']}): {len(configs)} config(s), fastest first")
    for c in configs:
        print(json.dumps(c))
    return 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments in one line naming the value and what is allowed (`dynasearch_bundle: error: ...`),
    exit status 2, as every other error of the loader."""

    def error(self, message: str):  # type: ignore[override]
        print(f"dynasearch_bundle: error: {message}", file=sys.stderr)
        sys.exit(2)


_bounded = bounds.arg_type  # one number of a kind of the bounds table


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = _Parser(
        prog="python BUNDLE/dynasearch_bundle.py",
        description="Load a dynasearch deployment bundle, say which device entry this machine uses, predict "
        "texts, or time the model here against its recorded latency (--check: exit status 0 within 10%, 1 "
        "when more off, 2 on bad input).",
    )
    p.add_argument("bundle", help="the bundle folder")
    p.add_argument("--device", help="the device entry to use (default: this machine's)")
    p.add_argument("--threads", type=_bounded("threads"), help="threads to run with (default: the entry's)")
    p.add_argument("--batch", type=_bounded("batch"), help="texts per run (default: the entry's)")
    p.add_argument("--text", action="append", default=[], help="a text to classify (repeatable); prints JSON lines")
    p.add_argument(
        "--check",
        action="store_true",
        help="time the model here against the recorded latency (check_ms, this loop's time at export; else the "
        "search's measured latency; else the predicted one)",
    )
    p.add_argument(
        "--runs", type=_bounded("runs"), default=CHECK_RUNS, help=f"timed runs of --check (default {CHECK_RUNS})"
    )
    p.add_argument(
        "--front",
        action="store_true",
        help="list the front configs the bundle carries for the chosen entry's device (JSON lines, fastest first: "
        "key, file, metric on the report examples, predicted and measured latency); a bundle without a front says so",
    )
    s = p.add_argument_group("serving (needs the serve extra: starlette, uvicorn, prometheus_client; Python 3.9+)")
    s.add_argument(
        "--serve", action="store_true", help="serve the device's front dynamically (Open Inference Protocol)"
    )
    s.add_argument("--slo", metavar="LAT", help="--serve: the latency objective with a unit, e.g. 40ms")
    s.add_argument("--host", default="127.0.0.1", help="--serve: address (default 127.0.0.1)")
    s.add_argument("--port", type=_bounded("port"), default=8000, help="--serve: port (default 8000)")
    s.add_argument("--name", default="dynabert", help="--serve: model name (default dynabert)")
    s.add_argument("--static", metavar="KEY|full", help="--serve: one fixed front config (the baselines)")
    s.add_argument("--overload", choices=["shed", "late"], default="shed", help="--serve: shed (503) or late")
    s.add_argument("--slo-margin", metavar="LAT", help="--serve: plan batches to end this long before the deadline "
                   "(default: a tenth of the SLO; 0 for none)")  # fmt: skip
    args = p.parse_args(bounds.glue_negative_values(sys.argv[1:] if argv is None else argv))
    if args.serve:
        if args.check or args.text or args.front or args.threads or args.batch:
            p.error(
                "--serve serves the device's front at its own setting: drop --check, --text, --front, --threads, --batch"
            )
        if not args.slo:
            p.error("--serve needs --slo LAT (e.g. --slo 40ms)")
        try:
            from .serve_bundle import serve  # the serve extra: only a server needs it
            from .units import parse_latency, parse_margin

            serve(args.bundle, parse_latency(args.slo, BundleError), args.device, args.name, args.host, args.port,
                  args.static, args.overload, parse_margin(args.slo_margin, BundleError))  # fmt: skip
            return 0
        except DynasearchError as e:
            print(f"dynasearch_bundle: error: {e}", file=sys.stderr)
            return 2
        except ImportError as e:
            print(f"dynasearch_bundle: error: --serve needs the serve extra ({e.name} is missing): pip install "
                  "starlette uvicorn prometheus_client", file=sys.stderr)  # fmt: skip
            return 2
    for name in ("slo", "static", "slo_margin"):
        if getattr(args, name):
            p.error(f"--{name.replace('_', '-')} applies to --serve only")
    if args.front and (args.check or args.text):
        p.error("--front lists the device's front configs: drop --check and --text (or drop --front)")

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    try:
        check_argument("runs", "--runs", args.runs)
        if args.front:
            return _list_front(args.bundle, args.device, args.threads, args.batch)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.simplefilter("ignore", ResourceWarning)  # the collector's unclosed-socket notes: not the user's
            warnings.showwarning = show
            model = load(args.bundle, args.device, args.threads, args.batch)
        if args.check:
            check_setting(model)  # before anything is printed or predicted
        print(f"using {describe_entry(model.entry)}")
        for text, (label, scores) in zip(args.text, model.predict(args.text) if args.text else []):
            print(json.dumps({"text": text, "label": label, "scores": scores}))
        if args.check:
            code, line = check(model, args.runs)
            print(line)
            return code
        return 0
    except DynasearchError as e:
        print(f"dynasearch_bundle: error: {e}", file=sys.stderr)
        return 2


if (
    __name__ == "__main__"
):  # python -m dynasearch_runtime.bundle_cli BUNDLE (the bundle's own: BUNDLE/dynasearch_bundle.py)
    sys.exit(main())
