"""Shared test helpers, one home for the tiny models: random backbones (2-4 layers, hidden 32-64) saved as
Hugging Face or DynaBERT model directories, and SST-2-like data for them.

Nothing here downloads: tokenizers are built from a small vocab written by the fixture.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch
from hypothesis import strategies as st

from dynabert.extract import random_like, shape_config
from dynabert.modeling import DynaBertForSequenceClassification
from dynabert.subnet import BackboneShape, SubnetConfig

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DYNASEARCH_SHARED_DATA", REPO.parent / "shared" / "data"))

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]


def write_tiny_tokenizer(path: Path, vocab: list[str] = TINY_VOCAB) -> None:
    """A WordPiece tokenizer over `vocab` saved in `path`."""
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    # transformers 5: `vocab_file=` is silently ignored (every word becomes [UNK]); pass the dict.
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(str(path))
    if vocab is TINY_VOCAB:
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


# ---- tiny DynaBERT model directories and the SST-2-like data whose words their tokenizer knows
WORDS = [
    "good",
    "great",
    "bad",
    "awful",
    "the",
    "a",
    "movie",
    "film",
    "plot",
    "was",
    "is",
    "very",
    "quite",
    "and",
    "but",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = BackboneShape(
    num_layers=4,
    num_heads=4,
    head_dim=8,
    hidden_size=32,
    intermediate_size=64,
    vocab_size=len(SPECIAL) + len(WORDS),
    max_positions=64,
)


def make_model_dir(
    path: Path, shape: BackboneShape = TINY, dropout: float = 0.1, seed: int = 0, num_labels: int = 2
) -> Path:
    """A saved tiny random DynaBERT model plus a WordPiece tokenizer over WORDS (the words of make_sst2_dir)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = shape_config(shape)
    cfg.hidden_dropout_prob = dropout
    cfg.attention_probs_dropout_prob = dropout
    cfg.num_labels = num_labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DynaBertForSequenceClassification(cfg)
    model.save_pretrained(str(path))
    write_tiny_tokenizer(path, SPECIAL + WORDS)
    return path


def sentence(rng: random.Random, positive: bool) -> str:
    filler = [w for w in WORDS if w not in ("good", "great", "bad", "awful")]
    words = rng.choices(filler, k=rng.randint(2, 12))
    words.insert(rng.randint(0, len(words)), rng.choice(["good", "great"] if positive else ["bad", "awful"]))
    return " ".join(words)


def make_sst2_dir(path: Path, n_train: int = 96, n_dev: int = 32, seed: int = 0) -> Path:
    """SST-2-layout TSVs: the label says whether a positive word occurs."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            y = rng.random() < 0.5
            rows.append(f"{sentence(rng, y)} \t{int(y)}")
        (path / name).write_text("\n".join(rows) + "\n")
    return path
