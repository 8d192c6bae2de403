"""dynasearch info [MODEL_DIR]: backbone summary and the paper grid as a table."""

from __future__ import annotations

from .common import add_model_arg, positive_int


def register(sub) -> None:
    p = sub.add_parser("info", help="backbone summary and the 12-point width x depth grid")
    add_model_arg(p)
    p.add_argument("--seq-len", type=positive_int, default=128, help="sequence length for FLOPs (default 128)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size for FLOPs (default 1)")
    p.set_defaults(func=run)


def run(args) -> int:
    from dynabert.backbone import load_model
    from dynabert.extract import model_shape
    from dynabert.subnet import grid_table

    model = load_model(args.model_dir)
    shape = model_shape(model)
    print(f"backbone   {model.source_dir}")
    print(
        f"shape      {shape.flavor}: {shape.num_layers} layers, hidden {shape.hidden_size}, "
        f"{shape.num_heads} heads x {shape.head_dim}, FFN {shape.intermediate_size}, vocab {shape.vocab_size}, "
        f"max positions {shape.max_positions}"
    )
    head = "initialised (no trained classifier in the checkpoint)" if model.head_initialized else "from checkpoint"
    print(f"head       {shape.num_labels} labels, {head}")
    table = grid_table(shape, batch=args.batch, seq_len=args.seq_len)
    print(f"\npaper grid (FLOPs: encoder, batch {args.batch}, sequence length {args.seq_len})")
    print(table.to_string(index=False))
    return 0
