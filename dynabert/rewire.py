"""Network rewiring: sort every layer's heads and FFN neurons by importance, most important first.

Importance (first-order Taylor, as the reference code): the task loss against gold labels, model at
full width in eval mode, gradients ZEROED per batch (the reference forgets to; we do not copy that).
- head h: |dL/dm_h| for a mask m of ones multiplying head h's attention probabilities. Scaling the
  probabilities scales that head's context ctx_h, so dL/dm_h = sum(ctx_h * dL/dctx_h), which equals
  sum over head h's input columns of W_o * dL/dW_o (W_o = attention.output): no mask plumbing needed.
- FFN neuron i: |sum_j W1[i,j] dW1[i,j] + b1[i] db1[i]| + |sum_j W2[j,i] dW2[j,i]|.
Permuting rows/columns consistently does not change what the full network computes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .data import Batch
from .modeling import DynaBertForSequenceClassification


def compute_importance(
    model: DynaBertForSequenceClassification, batches: Iterable[Batch]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(head importance (L, H), neuron importance (L, F)) summed over the batches."""
    cfg = model.config
    L, H, F, d = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size, cfg.head_dim
    dev = next(model.parameters()).device
    heads = torch.zeros(L, H, device=dev)
    neurons = torch.zeros(L, F, device=dev)
    was_training = model.training
    model.eval()
    for batch in batches:
        b = batch.to(dev)
        model.zero_grad(set_to_none=True)
        out = model(b.input_ids, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids, labels=b.labels)
        out.loss.backward()
        with torch.no_grad():
            for i, layer in enumerate(model.layers):
                wo = layer.attention.output.weight  # (hidden, H*d)
                heads[i] += (wo * wo.grad).sum(0).view(H, d).sum(1).abs()
                w1, b1, w2 = layer.ffn.intermediate.weight, layer.ffn.intermediate.bias, layer.ffn.output.weight
                neurons[i] += ((w1 * w1.grad).sum(1) + b1 * b1.grad).abs()
                neurons[i] += (w2 * w2.grad).sum(0).abs()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return heads, neurons


@torch.no_grad()
def permute_(model: DynaBertForSequenceClassification, head_order: torch.Tensor, neuron_order: torch.Tensor) -> None:
    """Reorder in place: layer i's heads as head_order[i], its neurons as neuron_order[i]."""
    d = model.config.head_dim
    for i, layer in enumerate(model.layers):
        att, ffn = layer.attention, layer.ffn
        rows = (head_order[i].to(torch.long)[:, None] * d + torch.arange(d)).reshape(-1).to(att.query.weight.device)
        for lin in (att.query, att.key, att.value):
            lin.weight.copy_(lin.weight[rows])
            lin.bias.copy_(lin.bias[rows])
        att.output.weight.copy_(att.output.weight[:, rows])
        n = neuron_order[i].to(torch.long).to(ffn.intermediate.weight.device)
        ffn.intermediate.weight.copy_(ffn.intermediate.weight[n])
        ffn.intermediate.bias.copy_(ffn.intermediate.bias[n])
        ffn.output.weight.copy_(ffn.output.weight[:, n])


def rewire_(model: DynaBertForSequenceClassification, batches: Iterable[Batch]) -> dict[str, list]:
    """Measure importance on `batches` and rewire the model in place. Returns the orders and scores
    (JSON-ready) for the run's records."""
    cfg = model.config
    if any(h != cfg.num_attention_heads for h in cfg.layer_heads) or any(
        f != cfg.intermediate_size for f in cfg.layer_ffn
    ):
        raise ValueError("rewiring needs the full-width super-network, not an extracted sub-network")
    heads, neurons = compute_importance(model, batches)
    head_order = torch.argsort(heads, dim=1, descending=True, stable=True)
    neuron_order = torch.argsort(neurons, dim=1, descending=True, stable=True)
    permute_(model, head_order, neuron_order)
    return {
        "head_order": head_order.tolist(),
        "head_importance": heads.tolist(),
        "neuron_order_first32": neuron_order[:, :32].tolist(),
    }
