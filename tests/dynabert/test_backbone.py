"""Loading model directories: Hugging Face, DynaBERT reference-code checkpoints, our own, bad ones."""

import json

import pytest
import torch
from tinymodels import random_ids, tiny_bert_config, write_tiny_tokenizer

from dynabert.backbone import load_model, read_weights
from dynabert.errors import ModelLoadError
from dynabert.extract import extract_subnet, model_shape
from dynabert.subnet import SubnetConfig, paper_grid


def write_reference_checkpoint(path, seed=0):
    """What the DynaBERT reference code (transformers 2.1.1) writes: a config.json without
    model_type and with extra keys, weights in pytorch_model.bin with standard BERT names."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    hf = BertForSequenceClassification(tiny_bert_config(layers=4)).eval()
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "attention_probs_dropout_prob": 0.1,
        "finetuning_task": "sst-2",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 4,
        "num_labels": 2,
        "output_attentions": False,
        "output_hidden_states": False,
        "output_intermediate": True,
        "pruned_heads": {},
        "torchscript": False,
        "type_vocab_size": 2,
        "use_bfloat16": False,
        "vocab_size": hf.config.vocab_size,
        "depth_mult_list": "1.,0.75,0.5",
        "width_mult_list": "0.25,0.5,0.75,1.0",
    }
    (path / "config.json").write_text(json.dumps(config))
    state = {k: v for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    torch.save(state, path / "pytorch_model.bin")
    write_tiny_tokenizer(path)
    return hf


def test_reference_checkpoint_loads_and_grid_runs(tmp_path):
    hf = write_reference_checkpoint(tmp_path / "ref")
    model = load_model(tmp_path / "ref")
    assert model.config.flavor == "bert" and not model.head_initialized
    feeds = random_ids(model)
    with torch.no_grad():
        assert torch.allclose(model(**feeds).logits, hf(**feeds).logits, atol=1e-5)
        for _, _, sub in paper_grid(model_shape(model)):
            assert torch.isfinite(model(**feeds, active=sub.active_spec()).logits).all()


def test_own_export_round_trips(tmp_path, tiny_bert_dir):
    model = load_model(tiny_bert_dir)
    small = extract_subnet(model, SubnetConfig((0, 2), (1, 3), (7, 0)))
    small.save_pretrained(str(tmp_path / "small"))
    again = load_model(tmp_path / "small")
    assert again.config.layer_heads == [1, 3] and again.config.layer_ffn == [7, 0]
    feeds = random_ids(model)
    with torch.no_grad():
        assert torch.allclose(again(**feeds).logits, small(**feeds).logits, atol=1e-6)


def test_new_label_count_initialises_head_but_keeps_pooler(tiny_bert_dir):
    base = load_model(tiny_bert_dir)
    model = load_model(tiny_bert_dir, num_labels=3)
    assert model.head_initialized and model.classifier.out_proj.out_features == 3
    assert torch.equal(model.classifier.dense.weight, base.classifier.dense.weight)


def test_bare_encoder_gets_seeded_head(tmp_path):
    from transformers import BertModel

    BertModel(tiny_bert_config()).save_pretrained(str(tmp_path))
    a, b = load_model(tmp_path, seed=5), load_model(tmp_path, seed=5)
    assert a.head_initialized and torch.equal(a.classifier.out_proj.weight, b.classifier.out_proj.weight)


def test_packaged_default_backbone():
    model = load_model(None)
    shape = model_shape(model)
    assert (shape.num_layers, shape.hidden_size, shape.num_heads, shape.intermediate_size) == (6, 384, 12, 1536)


# ------------------------------------------------------------------ bad input
def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "absent")


def test_file_instead_of_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_model(tmp_path / "f")


def test_other_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(ModelLoadError, match="'gpt2' model; supported: bert, roberta"):
        load_model(tmp_path)


def test_no_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_malformed_config(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert",')
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(tmp_path)


def test_config_of_random_bytes(tmp_path):
    (tmp_path / "config.json").write_bytes(b'{"model_type": "bert"}\xff\xfe')
    with pytest.raises(
        ModelLoadError, match=r"model config .*config.json is not UTF-8 text \(byte 0xff at offset 22\)"
    ):
        load_model(tmp_path)


def test_no_weights(tmp_path):
    (tmp_path / "config.json").write_text(tiny_bert_config().to_json_string())
    with pytest.raises(ModelLoadError, match="has no weights; expected one of model.safetensors, pytorch_model.bin"):
        load_model(tmp_path)


def test_truncated_weights(tmp_path, tiny_bert_dir):
    (tmp_path / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    data = (tiny_bert_dir / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_model(tmp_path)


def test_pickled_code_is_not_executed(tmp_path):
    # A pytorch_model.bin holding an arbitrary object is refused by weights_only loading.
    (tmp_path / "config.json").write_text(tiny_bert_config().to_json_string())
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(ModelLoadError, match="weights-only"):
        read_weights(tmp_path)


def test_weights_that_do_not_match_config(tmp_path, tiny_bert_dir):
    cfg = json.loads((tiny_bert_dir / "config.json").read_text())
    cfg["hidden_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((tiny_bert_dir / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="do not match config.json"):
        load_model(tmp_path)
