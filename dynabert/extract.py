"""Extract mode: build the physically smaller model of a sub-network from the super-network's weights."""

from __future__ import annotations

import copy

import torch

from .errors import InvalidSubnetError
from .modeling import DynaBertConfig, DynaBertForSequenceClassification
from .subnet import BackboneShape, SubnetConfig


def model_shape(model: DynaBertForSequenceClassification) -> BackboneShape:
    return BackboneShape.from_config(model.config)


def check_fits(model: DynaBertForSequenceClassification, subnet: SubnetConfig) -> SubnetConfig:
    """Validate against the backbone, then against the widths the model physically has per layer
    (an already-extracted model can only be cut further, not widened)."""
    cfg = model.config
    subnet.validate(model_shape(model))
    for layer, h, f in subnet.active_spec():
        if h > cfg.layer_heads[layer] or f > cfg.layer_ffn[layer]:
            raise InvalidSubnetError(
                f"layer {layer} asks heads={h}, ffn={f} but this model has heads={cfg.layer_heads[layer]}, "
                f"ffn={cfg.layer_ffn[layer]} there"
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
    for k in ("layer_heads", "layer_ffn", "source_layers", "num_hidden_layers", "architectures", "auto_map", "model_type", "transformers_version"):
        cfg_dict.pop(k, None)
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


def random_like(shape: BackboneShape, subnet: SubnetConfig | None = None, seed: int = 0) -> DynaBertForSequenceClassification:
    """A randomly initialised model of a backbone shape (optionally already cut to `subnet`).

    Latency does not depend on the weights, so measuring needs only the shape."""
    config = shape_config(shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DynaBertForSequenceClassification(config).eval()
    return extract_subnet(model, subnet) if subnet is not None else model


def shape_config(shape: BackboneShape) -> DynaBertConfig:
    return DynaBertConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads, head_dim=shape.head_dim, intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_positions, type_vocab_size=shape.type_vocab_size,
        num_labels=shape.num_labels, flavor=shape.flavor, pad_token_id=1 if shape.flavor == "roberta" else 0,
    )


def clone_model(model: DynaBertForSequenceClassification) -> DynaBertForSequenceClassification:
    return copy.deepcopy(model)
