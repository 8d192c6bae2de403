"""Tiny backbones, tokenizers and synthetic tasks for the training tests (no downloads)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from dynabert.extract import shape_config
from dynabert.modeling import DynaBertForSequenceClassification
from dynabert.subnet import BackboneShape

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
    """A saved tiny random model plus a WordPiece tokenizer over WORDS."""
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    cfg = shape_config(shape)
    cfg.hidden_dropout_prob = dropout
    cfg.attention_probs_dropout_prob = dropout
    cfg.num_labels = num_labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DynaBertForSequenceClassification(cfg)
    model.save_pretrained(str(path))
    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(str(path))
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
