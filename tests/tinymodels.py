"""Shared test helpers: tiny random backbones (2-4 layers, hidden 32-64) saved as model directories.

Nothing here downloads: tokenizers are built from a small vocab written by the fixture.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from hypothesis import strategies as st

from dynabert.extract import random_like
from dynabert.subnet import BackboneShape, SubnetConfig

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DYNASEARCH_SHARED_DATA", REPO.parent / "shared" / "data"))

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]


def write_tiny_tokenizer(path: Path) -> None:
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    # transformers 5: `vocab_file=` is silently ignored (every word becomes [UNK]); pass the dict.
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(TINY_VOCAB)}, do_lower_case=True)
    tok.save_pretrained(str(path))
    assert tok.convert_tokens_to_ids(tok.tokenize("w1 w2")) == [TINY_VOCAB.index("w1"), TINY_VOCAB.index("w2")]


def tiny_bert_config(layers: int = 3, hidden: int = 32, heads: int = 4, ffn: int = 64, num_labels: int = 2):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=64,
        num_labels=num_labels,
    )


def tiny_roberta_config(layers: int = 3, hidden: int = 32, heads: int = 4, ffn: int = 64, num_labels: int = 2):
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=66,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=num_labels,
    )


def save_hf_model(path: Path, config, seed: int = 0) -> Path:
    """A random Hugging Face *ForSequenceClassification saved with save_pretrained, plus a tokenizer."""
    from transformers import BertForSequenceClassification, RobertaForSequenceClassification

    cls = RobertaForSequenceClassification if config.model_type == "roberta" else BertForSequenceClassification
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(str(path))
    write_tiny_tokenizer(path)
    return path


def random_ids(model, batch: int = 3, seq_len: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    from dynabert.onnx_export import sample_inputs

    return sample_inputs(model, batch, seq_len, seed)


def subnets(shape: BackboneShape):
    """Random valid sub-networks, zero-width sub-blocks included."""

    @st.composite
    def build(draw):
        layers = draw(st.lists(st.integers(0, shape.num_layers - 1), min_size=1, unique=True).map(sorted))
        heads = draw(st.lists(st.integers(0, shape.num_heads), min_size=len(layers), max_size=len(layers)))
        ffn = draw(st.lists(st.integers(0, shape.intermediate_size), min_size=len(layers), max_size=len(layers)))
        return SubnetConfig(layers, heads, ffn)

    return build()


def tiny_random_model(flavor: str = "bert"):
    """A random 4-layer adaptive model (hidden 32, 4 heads of 8, FFN 64)."""
    shape = BackboneShape(
        num_layers=4,
        num_heads=4,
        head_dim=8,
        hidden_size=32,
        intermediate_size=64,
        vocab_size=100,
        max_positions=64,
        type_vocab_size=1 if flavor == "roberta" else 2,
        flavor=flavor,
    )
    return random_like(shape, seed=3)


def write_sst2_like(path: Path, n_train: int = 64, n_dev: int = 24, seed: int = 0) -> Path:
    """SST-2-layout TSVs over TINY_VOCAB words: label 1 iff the sentence holds w1."""
    import random

    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    filler = [f"w{i}" for i in range(2, 40)]
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            y = rng.random() < 0.5
            words = rng.choices(filler, k=rng.randint(2, 9)) + (["w1"] if y else ["w0"])
            rng.shuffle(words)
            rows.append(f"{' '.join(words)}\t{int(y)}")
        (path / name).write_text("\n".join(rows) + "\n")
    return path
