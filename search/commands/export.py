"""dynasearch export MODEL_DIR (--width W --depth D | --subnet FILE.json) --format onnx,hf --out DIR"""

from __future__ import annotations

from .common import add_model_arg, add_subnet_args, subnet_from_args


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
    p.add_argument("--format", default="onnx,hf", help="comma-separated: onnx, hf (default both)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--num-labels", type=int, default=None, help="labels of the classifier head (default: from the checkpoint)")
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    from dynabert.backbone import load_model
    from dynabert.extract import model_shape
    from dynabert.io import check_output_dir
    from search.export import export_subnet, parse_formats

    parse_formats(args.format)
    check_output_dir(args.out, args.overwrite)
    model = load_model(args.model_dir, num_labels=args.num_labels)
    subnet, grid_point = subnet_from_args(args, model_shape(model), args._parser.error)
    manifest = export_subnet(None, subnet, args.out, args.format, args.overwrite, grid_point=grid_point, model=model)
    p = manifest["parameters"]["total"]
    print(f"exported subnet {manifest['subnet_key']} ({subnet.describe()}) to {args.out}")
    print(f"  parameters {p:,}  encoder GFLOPs (b1, s128) {manifest['flops']['encoder_flops_batch1_seq128'] / 1e9:.3f}")
    for k, v in manifest["checks"].items():
        print(f"  {k} = {v:.2e}")
    return 0
