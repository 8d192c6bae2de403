"""Active mode == extract mode for every valid sub-network; parity with Hugging Face models."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from tinymodels import random_ids, subnets, tiny_random_model

from dynabert.backbone import load_model
from dynabert.extract import extract_subnet, model_shape
from dynabert.subnet import SubnetConfig, count_params, paper_grid

MODELS = {f: tiny_random_model(f) for f in ("bert", "roberta")}


@pytest.mark.parametrize("flavor", ["bert", "roberta"])
def test_extracted_equals_active_property(flavor):
    model = MODELS[flavor]
    shape = model_shape(model)
    feeds = random_ids(model, batch=3, seq_len=11)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(subnets(shape))
    def check(subnet):
        small = extract_subnet(model, subnet).eval()
        with torch.no_grad():
            active = model(**feeds, active=subnet.active_spec()).logits
            extracted = small(**feeds).logits
        assert (active - extracted).abs().max().item() <= 1e-5
        # Physically smaller: parameter count equals the analytic count.
        assert sum(p.numel() for p in small.parameters()) == count_params(shape, subnet)["total"]

    check()


def test_extracted_model_has_no_zero_width_blocks():
    model = MODELS["bert"]
    small = extract_subnet(model, SubnetConfig((0, 3), (0, 2), (5, 0)))
    assert small.layers[0].attention is None and small.layers[0].ffn.intermediate.out_features == 5
    assert small.layers[1].ffn is None and small.layers[1].attention.query.out_features == 2 * 8
    assert small.config.source_layers == [0, 3]


def test_zero_width_sub_block_is_skipped_not_run():
    model = MODELS["bert"]
    feeds = random_ids(model)
    with torch.no_grad():
        x = model.embeddings(feeds["input_ids"], feeds["token_type_ids"])
        mask = torch.zeros(x.shape[0], 1, 1, x.shape[1])
        assert torch.equal(model.layers[0](x, mask, 0, 0), x)


def test_hidden_states_for_distillation():
    model = MODELS["bert"]
    feeds = random_ids(model)
    sub = SubnetConfig((0, 2), (2, 4), (32, 64))
    with torch.no_grad():
        full = model(**feeds, output_hidden_states=True)
        out = model(**feeds, active=sub.active_spec(), output_hidden_states=True)
    # Full model: embedding output + one per layer; sub-network: embedding + one per kept layer.
    assert len(full.hidden_states) == 5 and len(out.hidden_states) == 3
    assert torch.equal(out.hidden_states[0], full.hidden_states[0])
    # hidden_states[j] is the input to the j-th kept layer: layer 2 ran on layer 0's output.
    mask = torch.zeros(feeds["input_ids"].shape[0], 1, 1, feeds["input_ids"].shape[1])
    mask[feeds["attention_mask"][:, None, None, :] == 0] = torch.finfo(torch.float32).min
    with torch.no_grad():
        again = model.layers[2](out.hidden_states[1], mask, 4, 64)
    assert torch.allclose(again, out.hidden_states[2], atol=1e-6)
    assert torch.equal(full.hidden_states[3], model.layers[2](full.hidden_states[2], mask).detach())


def test_active_mode_does_not_copy_or_change_weights():
    model = MODELS["bert"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ptr = model.layers[0].attention.query.weight.data_ptr()
    with torch.no_grad():
        model(**random_ids(model), active=[(0, 1, 3), (2, 2, 5)])
    assert model.layers[0].attention.query.weight.data_ptr() == ptr
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_active_mode_gradients_only_reach_used_slices():
    model = tiny_random_model("bert").train()
    feeds = random_ids(model)
    out = model(**feeds, labels=torch.tensor([0, 1, 0]), active=[(1, 2, 10)])
    out.loss.backward()
    g = model.layers[1].attention.query.weight.grad
    assert g[:16].abs().sum() > 0 and g[16:].abs().sum() == 0
    assert model.layers[0].attention.query.weight.grad is None  # dropped layer untouched
    assert model.layers[1].ffn.intermediate.weight.grad[10:].abs().sum() == 0


@pytest.mark.parametrize("order", [1, -1])
def test_slice_gradients_accumulate_as_plain_slicing(order, monkeypatch):
    """Several sub-networks' backwards (full width and sliced, either order, dropout on) sum into the
    same .grad, bit for bit, as with plain slicing (full-size zero gradients per slice); an unused
    parameter keeps grad None."""
    import dynabert.modeling as modeling

    model = tiny_random_model("bert").train()
    feeds = random_ids(model)
    specs = [[(0, 4, 64), (1, 4, 64), (2, 4, 64)], [(0, 3, 48), (2, 2, 17)], [(1, 1, 0), (3, 0, 5)]][::order]

    def grads():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        for a in specs:
            model(**feeds, labels=torch.tensor([0, 1, 0]), active=a).loss.backward()
        return {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}

    fast = grads()
    monkeypatch.setattr(modeling, "_lead", lambda p, n, dim=0: p[:n] if dim == 0 else p[:, :n])
    plain = grads()
    assert fast.keys() == plain.keys() and fast["layers.3.attention.query.weight"] is None
    for k in fast:
        assert (fast[k] is None) == (plain[k] is None), k
        assert fast[k] is None or torch.equal(fast[k], plain[k]), k


@pytest.mark.parametrize("flavor", ["bert", "roberta"])
def test_matches_hugging_face_model(flavor, tiny_bert_dir, tiny_roberta_dir):
    from transformers import AutoModelForSequenceClassification

    path = tiny_bert_dir if flavor == "bert" else tiny_roberta_dir
    hf = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    ours = load_model(path)
    assert not ours.head_initialized and ours.config.flavor == flavor
    feeds = random_ids(ours, batch=3, seq_len=10)
    with torch.no_grad():
        assert torch.allclose(hf(**feeds).logits, ours(**feeds).logits, atol=1e-5)


@pytest.mark.parametrize("flavor", ["bert", "roberta"])
def test_grid_subnets_run_on_loaded_model(flavor, tiny_bert_dir, tiny_roberta_dir):
    model = load_model(tiny_bert_dir if flavor == "bert" else tiny_roberta_dir)
    feeds = random_ids(model)
    for _, _, sub in paper_grid(model_shape(model)):
        with torch.no_grad():
            assert model(**feeds, active=sub.active_spec()).logits.shape == (3, 2)


def test_shared_embedding_output_gives_the_same_logits():
    """Training computes the embeddings once per step and passes them to every sub-network."""
    model = MODELS["bert"].eval()
    feeds = random_ids(model)
    sub = SubnetConfig((0, 2), (2, 4), (32, 64))
    with torch.no_grad():
        emb = model.embeddings(feeds["input_ids"], feeds.get("token_type_ids"))
        own = model(**feeds, active=sub.active_spec(), output_hidden_states=True)
        shared = model(**feeds, active=sub.active_spec(), output_hidden_states=True, embedding_output=emb)
    assert torch.equal(own.logits, shared.logits) and torch.equal(own.hidden_states[-1], shared.hidden_states[-1])
    with torch.no_grad():  # and it is really used: other embeddings, other logits
        other = model(**feeds, active=sub.active_spec(), embedding_output=emb + 1.0)
    assert not torch.allclose(other.logits, own.logits)
