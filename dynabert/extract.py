"""Extract mode: build the physically smaller model of a sub-network from the super-network's weights."""

from __future__ import annotations

import copy

import torch

from .errors import InvalidSubnetError
from .modeling import DynaBertConfig, DynaBertForSequenceClassification
from .subnet import BackboneShape, SubnetConfig, uniform_widths


def model_shape(model: DynaBertForSequenceClassification) -> BackboneShape:
    """The model's own shape (an exported sub-network is a backbone of its own: its layers, its
    widest layer); see `BackboneShape.from_config`."""
    return BackboneShape.from_config(model.config)


def _where(model: DynaBertForSequenceClassification) -> str:
    src = getattr(model, "source_dir", None)
    return f"model {src}" if src else "this model"


def _widths(cfg) -> str:
    return f"heads {','.join(map(str, cfg.layer_heads))}, FFN {','.join(map(str, cfg.layer_ffn))} per layer"


def check_uniform(model: DynaBertForSequenceClassification, what: str = "width/depth multipliers") -> None:
    """Refuse (one line) `what` on a model whose layers have different widths.

    The rule for exported sub-networks used as inputs: a model's shape is its own (its layers, its
    widest layer), and width/depth multipliers, the paper grid, DynaBERT's width and depth stages and
    rewiring are relative to ONE per-layer shape. A uniform export (every layer the same heads and
    FFN, e.g. any grid point) is such a backbone: width 1 depth 1 is the export itself. A non-uniform
    one (e.g. a per-layer answer of a search) is not: multipliers relative to its widest layer would
    ask more than its narrower layers have, and relative to each layer they would be another grid
    than the one its measurements and searches use. So those are refused; what still works on it is
    what needs no multiplier: explicit subnet JSONs that fit every layer (evaluate, export), the
    teacher stage (fine-tuning the model as built), scoring the model as built."""
    cfg = model.config
    if not uniform_widths(cfg):
        raise InvalidSubnetError(
            f"{_where(model)} has layers of different widths ({_widths(cfg)}): {what} need one width for every "
            f"layer, so they do not apply to it; give a --subnet JSON that fits each layer (see `dynasearch info`), "
            f"or export a uniform sub-network (--width/--depth) to use as a backbone"
        )


def check_fits(model: DynaBertForSequenceClassification, subnet: SubnetConfig) -> SubnetConfig:
    """Validate against the backbone, then against the widths the model physically has per layer
    (an already-extracted model can only be cut further, not widened)."""
    cfg = model.config
    subnet.validate(model_shape(model))
    for layer, h, f in subnet.active_spec():
        if h > cfg.layer_heads[layer] or f > cfg.layer_ffn[layer]:
            note = (
                ""
                if uniform_widths(cfg)
                else (
                    f" (its layers have different widths: {_widths(cfg)}; width/depth multipliers, relative to its widest "
                    "layer, do not fit it)"
                )
            )
            raise InvalidSubnetError(
                f"layer {layer} asks heads={h}, ffn={f} but {_where(model)} has heads={cfg.layer_heads[layer]}, "
                f"ffn={cfg.layer_ffn[layer]} there{note}"
            )
    return subnet


@torch.no_grad()
def extract_subnet(model: DynaBertForSequenceClassification, subnet: SubnetConfig) -> DynaBertForSequenceClassification:
    """A standalone model holding only the kept layers, heads and neurons (copies, no masks).

    Its outputs equal `model(..., active=subnet.active_spec())` in eval mode.
    """
    check_fits(model, subnet)
    src_cfg = model.config
    cfg_dict = src_cfg.to_dict()
    for k in (
        "layer_heads",
        "layer_ffn",
        "source_layers",
        "num_hidden_layers",
        "architectures",
        "auto_map",
        "model_type",
        "transformers_version",
    ):
        cfg_dict.pop(k, None)
    # The extracted model is a backbone of its own: its config names its own widest layer (what
    # config-only readers such as `predictors.measure.load_shape` and plain transformers see).
    cfg_dict["head_dim"] = src_cfg.head_dim
    cfg_dict["num_attention_heads"] = max(subnet.heads)
    cfg_dict["intermediate_size"] = max(subnet.ffn)
    config = DynaBertConfig(
        **cfg_dict,
        num_hidden_layers=subnet.depth,
        layer_heads=list(subnet.heads),
        layer_ffn=list(subnet.ffn),
        source_layers=[src_cfg.source_layers[i] for i in subnet.layers],
    )
    small = DynaBertForSequenceClassification(config)
    small.embeddings.load_state_dict(model.embeddings.state_dict())
    small.classifier.load_state_dict(model.classifier.state_dict())
    for j, (i, h, f) in enumerate(subnet.active_spec()):
        src, dst = model.layers[i], small.layers[j]
        if h:
            n = h * src_cfg.head_dim
            a, b = src.attention, dst.attention
            for name in ("query", "key", "value"):
                getattr(b, name).weight.copy_(getattr(a, name).weight[:n])
                getattr(b, name).bias.copy_(getattr(a, name).bias[:n])
            b.output.weight.copy_(a.output.weight[:, :n])
            b.output.bias.copy_(a.output.bias)
            b.LayerNorm.load_state_dict(a.LayerNorm.state_dict())
        if f:
            a, b = src.ffn, dst.ffn
            b.intermediate.weight.copy_(a.intermediate.weight[:f])
            b.intermediate.bias.copy_(a.intermediate.bias[:f])
            b.output.weight.copy_(a.output.weight[:, :f])
            b.output.bias.copy_(a.output.bias)
            b.LayerNorm.load_state_dict(a.LayerNorm.state_dict())
    small.head_initialized = getattr(model, "head_initialized", False)
    small.source_dir = getattr(model, "source_dir", None)
    small.train(model.training)
    return small


def random_like(
    shape: BackboneShape, subnet: SubnetConfig | None = None, seed: int = 0
) -> DynaBertForSequenceClassification:
    """A randomly initialised model of a backbone shape (optionally already cut to `subnet`).

    Latency does not depend on the weights, so measuring needs only the shape."""
    config = shape_config(shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DynaBertForSequenceClassification(config).eval()
    return extract_subnet(model, subnet) if subnet is not None else model


def shape_config(shape: BackboneShape) -> DynaBertConfig:
    return DynaBertConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        head_dim=shape.head_dim,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_positions,
        type_vocab_size=shape.type_vocab_size,
        num_labels=shape.num_labels,
        flavor=shape.flavor,
        pad_token_id=1 if shape.flavor == "roberta" else 0,
    )


def clone_model(model: DynaBertForSequenceClassification) -> DynaBertForSequenceClassification:
    return copy.deepcopy(model)
