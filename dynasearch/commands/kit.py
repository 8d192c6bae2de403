"""dynasearch kit [MODEL_DIR] --out DIR: ONNX files + a standalone runner for another device."""

from __future__ import annotations

from .common import (
    add_config_args,
    add_model_arg,
    add_protocol_args,
    bounded,
    check_config_args,
    configs_from_args,
    protocol_from_args,
)


def register(sub) -> None:
    p = sub.add_parser(
        "kit",
        help="write a measurement kit (ONNX files + runner.py needing only numpy and onnxruntime) for another device",
        description="Writes DIR/models/<key>.onnx for sampled sub-networks, DIR/kit.json and DIR/runner.py. On the "
        "device: `python runner.py` (needs only Python, numpy, onnxruntime) times them with the same protocol as "
        "`dynasearch measure` and writes records.csv in the same format; feed it to `dynasearch fit-predictor`.",
    )
    add_model_arg(p)
    p.add_argument("--out", required=True, metavar="DIR", help="kit directory (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing kit directory")
    p.add_argument(
        "--provider",
        default="CPUExecutionProvider",
        help="runner's default execution provider (default CPUExecutionProvider)",
    )
    p.add_argument(
        "--threads", type=bounded("threads"), nargs="+", default=[1], help="runner's default threads (default 1)"
    )
    p.add_argument(
        "--spinning", choices=["on", "off"], default="off", help="runner's default thread spinning (default off)"
    )
    p.add_argument("--batch", type=bounded("batch"), nargs="+", default=[1], help="batch sizes (default 1)")
    p.add_argument(
        "--seq-len", type=bounded("seq_len"), nargs="+", default=[128], help="sequence lengths (default 128)"
    )
    p.add_argument("--no-verify", action="store_true", help="skip checking each ONNX file against PyTorch")
    add_config_args(p)
    add_protocol_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from predictors import load_shape, write_kit  # predictors (pandas): not on the query path

    check_config_args(args)  # --sampler/--n that choose nothing: refused before any work
    protocol = protocol_from_args(args)
    shape = load_shape(args.model_dir)
    subnets, sampler = configs_from_args(args, shape)
    out = write_kit(
        args.out,
        shape,
        subnets,
        sampler=sampler,
        batches=args.batch,
        seq_lens=args.seq_len,
        threads=args.threads,
        provider=args.provider,
        spinning=args.spinning == "on",
        protocol=protocol,
        verify=not args.no_verify,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote a kit of {len(subnets)} configs to {out}")
    print(f"  on the device: cd {out.name} && python runner.py   (needs python, numpy, onnxruntime)")
    print(f"  then: dynasearch fit-predictor {out.name}/records.csv --out predictor")
    return 0
