"""dynasearch info [MODEL_DIR]: backbone summary and the paper grid as a table.

An exported sub-network (or a run stage trained from one) is a backbone of its own: the shape shown
is ITS shape (its layers, its widest layer) and the grid is relative to it, so width 1 depth 1 is the
model itself. A model whose layers have different widths has no grid (see
`dynabert.extract.check_uniform`): its per-layer widths are shown instead.
"""

from __future__ import annotations

from .common import add_model_arg, bounded


def register(sub) -> None:
    p = sub.add_parser("info", help="backbone summary and the 12-point width x depth grid")
    add_model_arg(p)
    p.add_argument(
        "--seq-len",
        type=bounded("seq_len"),
        default=None,
        help="sequence length for FLOPs (default 128, or the backbone's positions when fewer)",
    )
    p.add_argument("--batch", type=bounded("batch"), default=1, help="batch size for FLOPs (default 1)")
    p.set_defaults(func=run)


def _join(values) -> str:
    return ",".join(map(str, values))


def run(args) -> int:
    from dynabert.backbone import load_model
    from dynabert.extract import model_shape
    from dynabert.subnet import (
        PAPER_WIDTHS,
        SubnetConfig,
        count_flops,
        count_params,
        grid_table,
        grid_widths,
        uniform_widths,
    )
    from dynasearch_runtime.fingerprint import check_seq_lens, max_seq_len

    model = load_model(args.model_dir)
    shape = model_shape(model)
    cfg = model.config
    if args.seq_len is None:
        args.seq_len = min(128, max_seq_len(shape.to_dict()))
    check_seq_lens([args.seq_len], shape.to_dict())  # FLOPs of a length the model cannot take mean nothing
    uniform = uniform_widths(cfg)
    print(f"backbone   {model.source_dir}")
    print(
        f"shape      {shape.flavor}: {shape.num_layers} layers, hidden {shape.hidden_size}, "
        f"{shape.num_heads} heads x {shape.head_dim}, FFN {shape.intermediate_size}, vocab {shape.vocab_size}, "
        f"max positions {shape.max_positions}" + ("" if uniform else " (widest layer)")
    )
    if not uniform:
        print(f"layers     heads {_join(cfg.layer_heads)}; FFN {_join(cfg.layer_ffn)} (per layer: not uniform)")
    if list(cfg.source_layers) != list(range(cfg.num_hidden_layers)):
        print(
            f"cut from   layers {_join(cfg.source_layers)} of the model it was extracted from "
            f"(an exported sub-network: a backbone of its own)"
        )
    head = "initialised (no trained classifier in the checkpoint)" if model.head_initialized else "from checkpoint"
    print(f"head       {shape.num_labels} labels, {head}")
    if not uniform or shape.num_heads < 1:
        built = SubnetConfig(tuple(range(cfg.num_hidden_layers)), tuple(cfg.layer_heads), tuple(cfg.layer_ffn))
        p = count_params(shape, built)
        flops = count_flops(shape, built, args.batch, args.seq_len)
        print(
            f"as built   {p['total'] / 1e6:.2f} M parameters, encoder GFLOPs {flops / 1e9:.3f} "
            f"(batch {args.batch}, sequence length {args.seq_len})"
        )
        why = (
            "its layers have different widths, and width/depth multipliers need one width for every layer"
            if not uniform
            else "it has no attention heads, and width multipliers keep round(heads * width) heads"
        )
        print(f"\npaper grid: none: {why}; give sub-networks of it as --subnet JSON files that fit each layer.")
        return 0
    widths = grid_widths(shape)
    table = grid_table(shape, batch=args.batch, seq_len=args.seq_len, widths=widths)
    print(f"\npaper grid (FLOPs: encoder, batch {args.batch}, sequence length {args.seq_len})")
    print(table.to_string(index=False))
    dropped = [w for w in PAPER_WIDTHS if w not in widths]
    if dropped:
        print(
            f"(width {', '.join(f'{w:g}' for w in dropped)} left out: it keeps round({shape.num_heads} * width) = 0 heads)"
        )
    return 0
