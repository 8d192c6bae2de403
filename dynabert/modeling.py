"""A BERT/RoBERTa sequence classifier whose layers may each have their own width.

This file is deliberately self-contained (torch + transformers only): `dynasearch export --format hf`
copies it verbatim next to the exported weights, so that plain transformers can load a sub-network
with `AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)`.
Do not import anything from the `dynabert` package here.

One class serves two roles:
- the super-network (every layer at full width), which can run any sub-network in *active* mode:
  `model(input_ids, ..., active=[(layer, heads, ffn), ...])` slices the leading heads / neurons of
  the shared weights on the fly (views, no copies) and skips dropped layers;
- the extracted sub-network (a config with per-layer `layer_heads` / `layer_ffn`), physically small.

A layer with 0 heads has no attention sub-block and a layer with 0 FFN neurons no FFN sub-block:
the residual stream passes through that sub-block unchanged (nothing runs on empty matrices).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

# (original layer index, heads kept, FFN neurons kept) for each kept layer, in order.
ActiveSpec = Sequence[tuple[int, int, int]]


class DynaBertConfig(PretrainedConfig):
    model_type = "dynabert"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        # "bert": absolute positions from 0, pooler (dense+tanh on [CLS]) + linear classifier.
        # "roberta": positions from pad_token_id+1 skipping padding, dense+tanh+out_proj head.
        flavor: str = "bert",
        # Per-layer widths of the physical model; None means every layer at full width.
        layer_heads: list[int] | None = None,
        layer_ffn: list[int] | None = None,
        # Which layers of the source backbone the layers of this model were (provenance only).
        source_layers: list[int] | None = None,
        head_dim: int | None = None,
        classifier_dropout: float | None = None,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.flavor = flavor
        self.head_dim = head_dim if head_dim is not None else hidden_size // num_attention_heads
        self.layer_heads = list(layer_heads) if layer_heads is not None else [num_attention_heads] * num_hidden_layers
        self.layer_ffn = list(layer_ffn) if layer_ffn is not None else [intermediate_size] * num_hidden_layers
        self.source_layers = list(source_layers) if source_layers is not None else list(range(num_hidden_layers))
        self.classifier_dropout = classifier_dropout
        if not (len(self.layer_heads) == len(self.layer_ffn) == len(self.source_layers) == num_hidden_layers):
            raise ValueError(
                f"layer_heads ({len(self.layer_heads)}), layer_ffn ({len(self.layer_ffn)}) and source_layers "
                f"({len(self.source_layers)}) must each have num_hidden_layers={num_hidden_layers} entries"
            )


class _SliceAccumulate(torch.autograd.Function):
    """The leading `n` entries of `param` along `dim`, as a view; its gradient is added straight into
    that slice of `param.grad` (allocated as zeros on first use, like AccumulateGrad would have).

    Plain slicing makes autograd allocate a full-size zero gradient per use (SliceBackward) and add the
    whole of it into `param.grad`; a training step runs a dozen sub-networks on slices of the same
    weights, so that was a full-size zero-fill, copy and add per weight per sub-network. The values
    summed into `param.grad` are the same (adding the slice's gradient to the same entries, in the same
    order; the rest of the tensor only ever received zeros)."""

    @staticmethod
    def forward(ctx, param: torch.Tensor, n: int, dim: int) -> torch.Tensor:
        ctx.param, ctx.n, ctx.dim = param, n, dim
        return param.detach().narrow(dim, 0, n)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        p = ctx.param
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.narrow(ctx.dim, 0, ctx.n).add_(grad)
        return None, None, None


def _lead(param: torch.Tensor, n: int, dim: int = 0) -> torch.Tensor:
    """The leading `n` entries of `param` along `dim`: the parameter itself when that is all of it; a
    view whose gradient accumulates in place (_SliceAccumulate) when it is a leaf being trained."""
    if n == param.shape[dim]:
        return param
    if param.requires_grad and param.is_leaf and torch.is_grad_enabled():
        return _SliceAccumulate.apply(param, n, dim)
    return param.narrow(dim, 0, n)


def _act(name: str):
    if name in ("gelu", "gelu_new", "gelu_python"):
        return F.gelu if name == "gelu" else (lambda x: F.gelu(x, approximate="tanh"))
    if name == "relu":
        return F.relu
    if name == "tanh":
        return torch.tanh
    raise ValueError(f"unsupported hidden_act {name!r}; supported: gelu, gelu_new, relu, tanh")


class Embeddings(nn.Module):
    def __init__(self, config: DynaBertConfig):
        super().__init__()
        self.flavor = config.flavor
        self.pad_token_id = config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(max(config.type_vocab_size, 1), config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        if self.flavor == "roberta":
            # RoBERTa numbers real tokens from pad_token_id + 1 and gives padding the pad position.
            not_pad = input_ids.ne(self.pad_token_id).to(torch.long)
            positions = torch.cumsum(not_pad, dim=1) * not_pad + self.pad_token_id
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))


class Attention(nn.Module):
    """Multi-head self-attention with `heads` heads of `head_dim`; output projection back to hidden."""

    def __init__(self, config: DynaBertConfig, heads: int):
        super().__init__()
        inner = heads * config.head_dim
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, inner)
        self.key = nn.Linear(config.hidden_size, inner)
        self.value = nn.Linear(config.hidden_size, inner)
        self.output = nn.Linear(inner, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn_dropout = config.attention_probs_dropout_prob
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        # heads=None: all physical heads. Otherwise slice the leading `heads` (views, no copies).
        B, T, _ = x.shape
        n = self.query.out_features if heads is None else heads * self.head_dim
        q = F.linear(x, _lead(self.query.weight, n), _lead(self.query.bias, n))
        k = F.linear(x, _lead(self.key.weight, n), _lead(self.key.bias, n))
        v = F.linear(x, _lead(self.value.weight, n), _lead(self.value.bias, n))
        q, k, v = (t.view(B, T, -1, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hd)
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        ctx = ctx.transpose(1, 2).reshape(B, T, n)
        out = F.linear(ctx, _lead(self.output.weight, n, 1), self.output.bias)
        return self.LayerNorm(x + self.dropout(out))


class FeedForward(nn.Module):
    def __init__(self, config: DynaBertConfig, neurons: int):
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, neurons)
        self.output = nn.Linear(neurons, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.act = _act(config.hidden_act)

    def forward(self, x: torch.Tensor, neurons: int | None = None) -> torch.Tensor:
        n = self.intermediate.out_features if neurons is None else neurons
        h = self.act(F.linear(x, _lead(self.intermediate.weight, n), _lead(self.intermediate.bias, n)))
        out = F.linear(h, _lead(self.output.weight, n, 1), self.output.bias)
        return self.LayerNorm(x + self.dropout(out))


class Layer(nn.Module):
    def __init__(self, config: DynaBertConfig, heads: int, ffn: int):
        super().__init__()
        # A sub-block of width 0 does not exist: the residual stream skips it.
        self.attention = Attention(config, heads) if heads > 0 else None
        self.ffn = FeedForward(config, ffn) if ffn > 0 else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor, heads: int | None = None, ffn: int | None = None):
        if self.attention is not None and heads != 0:
            x = self.attention(x, mask, heads)
        if self.ffn is not None and ffn != 0:
            x = self.ffn(x, ffn)
        return x


class ClassificationHead(nn.Module):
    """BERT: pooler (dense+tanh on the first token) then a linear classifier.
    RoBERTa: dropout, dense+tanh on <s>, dropout, out_proj. Same computation, different dropout
    placement; both keep the names of their Hugging Face counterparts after conversion."""

    def __init__(self, config: DynaBertConfig):
        super().__init__()
        self.flavor = config.flavor
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(p)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x[:, 0]
        if self.flavor == "roberta":
            first = self.dropout(first)
        pooled = torch.tanh(self.dense(first))
        return self.out_proj(self.dropout(pooled))


class DynaBertPreTrainedModel(PreTrainedModel):
    config_class = DynaBertConfig
    base_model_prefix = "dynabert"
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


class DynaBertForSequenceClassification(DynaBertPreTrainedModel):
    def __init__(self, config: DynaBertConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config, h, f) for h, f in zip(config.layer_heads, config.layer_ffn))
        self.classifier = ClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        active: ActiveSpec | None = None,
        output_hidden_states: bool = False,
        return_dict: bool | None = None,
        embedding_output: torch.Tensor | None = None,
        **kwargs,
    ):
        """active: run only these (layer, heads, ffn) on the shared weights; None runs the model as built.
        output_hidden_states: also return [embedding output, output of each run layer...], i.e. the
        input to every run layer followed by the final output (what distillation matches).
        embedding_output: the embeddings' output for these inputs, computed once by the caller (it is
        never sliced, so every sub-network of a training step can share it)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Additive mask (B, 1, 1, T): 0 where attended, dtype-min where padding.
        mask = 1.0 - attention_mask[:, None, None, :].to(self.embeddings.LayerNorm.weight.dtype)
        mask = mask * torch.finfo(mask.dtype).min
        x = self.embeddings(input_ids, token_type_ids) if embedding_output is None else embedding_output
        hidden = [x] if output_hidden_states else None
        plan = active if active is not None else [(i, None, None) for i in range(len(self.layers))]
        for i, heads, ffn in plan:
            x = self.layers[i](x, mask, heads, ffn)
            if hidden is not None:
                hidden.append(x)
        logits = self.classifier(x)
        loss = None if labels is None else self.gold_loss(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=tuple(hidden) if hidden else None)

    def gold_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The gold-label loss: cross-entropy, MSE for regression (num_labels 1)."""
        if self.config.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
        return F.cross_entropy(logits, labels)


class OnnxWrapper(nn.Module):
    """Positional (input_ids, attention_mask[, token_type_ids]) -> logits, for torch.onnx.export."""

    def __init__(self, model: DynaBertForSequenceClassification):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


__all__ = ["DynaBertConfig", "DynaBertForSequenceClassification", "ActiveSpec", "OnnxWrapper"]
