"""dynasearch export MODEL_DIR (--width W --depth D | --subnet FILE.json) --format onnx,hf --out DIR"""

from __future__ import annotations

from pathlib import Path

from .common import add_model_arg, add_subnet_args, bounded, subnet_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export one sub-network for deployment (ONNX, Hugging Face format, manifest)",
        description="Writes DIR/model.onnx and/or a Hugging Face directory (config.json, model.safetensors, "
        "modeling_dynabert.py; load with AutoModelForSequenceClassification.from_pretrained(DIR, "
        "trust_remote_code=True)), the tokenizer files, subnet.json and manifest.json. Every export "
        "is checked against PyTorch before DIR appears.",
    )
    add_model_arg(p)
    add_subnet_args(p)
    p.add_argument(
        "--format",
        default=None,
        help="comma-separated: onnx, hf (default both; --bundle picks each device's format itself)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument(
        "--num-labels",
        type=bounded("labels"),
        default=None,
        help="labels of the classifier head (default: from the checkpoint)",
    )
    r = p.add_argument_group("a config chosen from a search's results")
    r.add_argument(
        "--results", metavar="RESULTS", help="results directory of `dynasearch search` (the model is the searched one)"
    )
    r.add_argument(
        "--target-latency",
        metavar="LAT",
        help="with --results: the best config under this latency (e.g. 8ms), as `query` (exit status 1 when none meets it)",
    )
    r.add_argument("--key", help="with --results: the config with this key (see RESULTS/trials.csv)")
    r.add_argument(
        "--bundle",
        action="store_true",
        help="with --results: ONE folder serving every device of the search: each device's answer in its "
        "format (ONNX, int8 ONNX, or a Hugging Face directory for torch), shared where devices agree, "
        "devices.json with sha256s, the tokenizer once and a loader (python DIR/dynasearch_bundle.py DIR --check)",
    )
    r.add_argument(
        "--front",
        type=bounded("front"),
        default=None,
        metavar="K",
        help="with --bundle: also carry up to K configs of each device's Pareto front, spread over its latency "
        "range (the answer, the fastest and the most accurate among them), each with its metric on the search's "
        "report examples (default 6; 0: each device's answer alone)",
    )
    r.add_argument(
        "--no-check-time",
        action="store_true",
        help="with --bundle: do not time this machine's entries with the loader's --check loop at export "
        "(check_ms stays null; --check then compares with the search's measured latency)",
    )
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    if args.num_labels is not None and (args.bundle or args.results is not None):
        args._parser.error(
            "--num-labels sets the classifier head of MODEL_DIR, and --results (and --bundle) export the searched "
            "model with its own head: drop --num-labels"
        )
    if args.bundle:
        return run_bundle(args)
    if args.no_check_time:
        args._parser.error("--no-check-time goes with --bundle (it skips timing the bundle's entries at export)")
    if args.front is not None:
        args._parser.error(
            f"--front {args.front} goes with --bundle (it sets the front configs a bundle carries per device)"
        )
    args.format = args.format or "onnx,hf"
    if args.results is not None or args.target_latency is not None or args.key is not None:
        return run_from_results(args)
    from dynabert.backbone import load_model
    from dynabert.export import export_subnet, parse_formats
    from dynabert.extract import model_shape
    from dynabert.io import check_output_dir
    from dynabert.runs import is_run, run_model_dir

    from .common import print_warnings

    parse_formats(args.format)
    check_output_dir(args.out, args.overwrite)
    # A training run exports its latest finished stage, as `evaluate RUN` and `search RUN` read it.
    model_dir = (
        run_model_dir(args.model_dir) if args.model_dir is not None and is_run(args.model_dir) else args.model_dir
    )
    model = load_model(model_dir, num_labels=args.num_labels)
    subnet, grid_point = subnet_from_args(args, model_shape(model), args._parser.error)
    with print_warnings():  # a random classifier head (no trained MODEL_DIR) is one 'warning: ...' line
        manifest = export_subnet(
            None, subnet, args.out, args.format, args.overwrite, grid_point=grid_point, model=model
        )
    p = manifest["parameters"]["total"]
    print(f"exported subnet {manifest['subnet_key']} ({subnet.describe()}) to {args.out}")
    print(f"  parameters {p:,}  encoder GFLOPs (b1, s128) {manifest['flops']['encoder_flops_batch1_seq128'] / 1e9:.3f}")
    for k, v in manifest["checks"].items():
        print(f"  {k} = {v:.2e}")
    return 0


def run_from_results(args) -> int:
    import sys

    from search.deploy import export_from_results
    from search.errors import NoAnswerError
    from search.units import parse_latency

    from .common import print_warnings

    if args.results is None:
        args._parser.error("--target-latency and --key choose a config from --results RESULTS")
    if args.model_dir is not None or args.width is not None or args.depth is not None or args.subnet is not None:
        args._parser.error(
            "--results exports the searched model's config: give no MODEL_DIR, --width, --depth or --subnet"
        )
    if (args.target_latency is None) == (args.key is None):
        args._parser.error("with --results, give exactly one of --target-latency LAT or --key KEY")
    target = parse_latency(args.target_latency) if args.target_latency is not None else None
    from search.devices import read_devices

    index = read_devices(args.results)
    if index is not None:  # a multi-device search: its root holds no results of its own
        from search.errors import SearchError

        folders = ", ".join(f"{Path(args.results) / d['results']}" for d in index["devices"])
        raise SearchError(
            f"{args.results} is a multi-device search: export one device's results ({folders}), or all of them "
            "with --bundle"
        )
    try:
        with print_warnings():  # an older results format is one 'warning: ...' line
            m = export_from_results(
                args.results, args.out, target_ms=target, key=args.key, formats=args.format, overwrite=args.overwrite
            )
    except NoAnswerError as e:  # it ran and no config meets the target: exit 1, as `search` does (2 is for bad input)
        print(f"dynasearch export: no answer: {e}", file=sys.stderr)
        return 1
    s = m["search"]
    lat = f"predicted {s['predicted_ms']:.3f} ms" + (
        f", measured {s['measured_ms']:.3f} ms" if s["verified"] else " (not verified)"
    )
    metric = s["metric_full_dev"] if s["metric_full_dev"] is not None else s["metric_search_dev"]
    print(f"exported config {m['subnet_key']} to {args.out}: {s['metric']} {metric:.2f}, {lat}")
    for k, v in m["checks"].items():
        print(f"  {k} = {v:.2e}")
    return 0


def run_bundle(args) -> int:
    from dynasearch_runtime.bundle import check_command
    from search.bundle import FRONT_CONFIGS, write_bundle

    from .common import print_warnings

    if args.results is None:
        args._parser.error("--bundle exports every device of a search: give --results RESULTS")
    if args.target_latency is not None or args.key is not None:
        args._parser.error(
            "--bundle takes each device's own answer (its target from the search); drop --target-latency and "
            "--key (or drop --bundle to export one config)"
        )
    if args.format is not None:
        args._parser.error(
            "--bundle picks each device's format (ONNX for onnxruntime, Hugging Face for torch): drop --format"
        )
    if args.model_dir is not None or args.width is not None or args.depth is not None or args.subnet is not None:
        args._parser.error(
            "--results exports the searched model's configs: give no MODEL_DIR, --width, --depth or --subnet"
        )
    with print_warnings():  # a device without an answer, a random head: one 'warning: ...' line each
        index = write_bundle(
            args.results,
            args.out,
            overwrite=args.overwrite,
            check_time=not args.no_check_time,
            front=FRONT_CONFIGS if args.front is None else args.front,
        )
    print(
        f"bundle {args.out}: {len(index['devices'])} device entr{'y' if len(index['devices']) == 1 else 'ies'}, "
        f"{len(index['models'])} model folder(s)"
    )
    for e in index["devices"]:
        lat = (
            f"predicted {e['predicted_ms']:.3f} ms"
            + (f", measured {e['measured_ms']:.3f} ms" if e["measured_ms"] is not None else "")
            + (f", --check loop here {e['check_ms']:.3f} ms" if e.get("check_ms") is not None else "")
        )
        print(
            f"  {e['name']} ({e['precision']}, {e['backend']}): {e['key']} -> {e['file']}: {e['metric']} "
            f"{e['metric_value']:.2f}, {lat}"
        )
        if e.get("front"):
            ms = [c["predicted_ms"] for c in e["front"]]
            print(
                f"    front: {len(e['front'])} of its {e['front_size']} front config(s), predicted {min(ms):.3f}.."
                f"{max(ms):.3f} ms"
            )
    report = index["report"]
    if index["front"]["configs"]:
        print(
            f"  front metrics on {report['examples'] if report['examples'] is not None else 'the'} report examples "
            f"({'held out' if report['held_out'] else 'nothing held out: the whole dev split'})"
        )
    print(f"  check on a device: {check_command(str(args.out))}")
    return 0
