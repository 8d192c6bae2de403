"""Tokenisation once per split, batches padded to their own longest sequence (dynamic padding).

Training order: a permutation seeded by (seed, stage, epoch), so a resumed run can skip exactly the
batches it already did. Evaluation: examples sorted by length and cut into batches, so a batch of
short sentences is not padded to a long one; predictions are put back in the original order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from dynasearch_runtime import bounds

from .errors import DataError
from .tasks import TaskData


@dataclass
class Encoded:
    """Token ids per example (unpadded) and labels as one tensor."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: torch.Tensor  # (N,) long for classification, float for regression
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) with T the longest sequence of this batch
    attention_mask: torch.Tensor  # (B, T)
    token_type_ids: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> Batch:
        return Batch(
            *(
                t.to(device, non_blocking=True)
                for t in (self.input_ids, self.attention_mask, self.token_type_ids, self.labels)
            )
        )


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    # AutoTokenizer also reads config.json and warns that it does not know model_type "dynabert";
    # only the tokenizer files matter here, so that warning is silenced for this call.
    # trust_remote_code=False: a Hugging Face export's config.json has an auto_map (for plain
    # transformers users); left unset, transformers would ask "Do you wish to run the custom code?
    # [y/N]" on the terminal and read stdin. dynasearch loads its exports with its own classes and
    # never runs code from a model directory.
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except Exception as e:  # transformers raises OSError/ValueError for a dir without tokenizer files
        # Reference-code (transformers 2.x) checkpoints: config.json without model_type, so
        # AutoTokenizer cannot pick a class; a WordPiece vocab.txt is BERT's (uncased, as released).
        vocab = Path(model_dir) / "vocab.txt"
        if vocab.is_file():
            from transformers import BertTokenizerFast

            return BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
        raise DataError(f"cannot load a tokenizer from {model_dir}: {e}") from None
    finally:
        hf_logging.set_verbosity(level)


def max_length_allowed(config) -> int:
    """The longest sequence the position table holds (RoBERTa numbers positions from pad_id + 1)."""
    n = config.max_position_embeddings
    if getattr(config, "flavor", "bert") == "roberta":
        n -= config.pad_token_id + 1
    return n


def check_max_length(max_length: int, config) -> None:
    limit = max_length_allowed(config)
    if bounds.violation("max_seq_length", max_length, high=limit) is not None:
        raise DataError(f"max sequence length {max_length} is outside 2..{limit}, the positions this backbone has")


def encode(data: TaskData, tokenizer, max_length: int, regression: bool) -> Encoded:
    """Tokenise every example once (truncated to max_length, longest-first for pairs), no padding."""
    kw = dict(truncation=True, max_length=max_length, padding=False, return_token_type_ids=True)
    enc = tokenizer(data.texts, data.pairs, **kw) if data.pairs is not None else tokenizer(data.texts, **kw)
    dtype = torch.float32 if regression else torch.long
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded(list(enc["input_ids"]), list(enc["token_type_ids"]), torch.tensor(data.labels, dtype=dtype), pad)


def collate(enc: Encoded, idx: list[int]) -> Batch:
    """Pad the chosen examples to the longest of them."""
    T = max(len(enc.input_ids[i]) for i in idx)
    B = len(idx)
    ids = torch.full((B, T), enc.pad_id, dtype=torch.long)
    tt = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for r, i in enumerate(idx):
        n = len(enc.input_ids[i])
        ids[r, :n] = torch.tensor(enc.input_ids[i])
        tt[r, :n] = torch.tensor(enc.token_type_ids[i])
        mask[r, :n] = 1
    return Batch(ids, mask, tt, enc.labels[idx])


def stage_seed(seed: int, stage: str, epoch: int) -> int:
    # crc32, not hash(): Python salts str hashes per process, which would break resume.
    return (seed * 1_000_003 + zlib.crc32(stage.encode()) * 101 + epoch) % (2**63)


GROUP_BATCHES = 50  # group_by_length: batches per length-sorted chunk (as Hugging Face's megabatches)


def epoch_batches(
    n: int, batch_size: int, seed: int, stage: str, epoch: int, lengths: list[int] | None = None
) -> list[list[int]]:
    """The global batches of one epoch: a seeded permutation cut into batch_size pieces (last kept).

    lengths given (group by length): the permutation is cut into chunks of GROUP_BATCHES batches,
    each chunk sorted by length before cutting, then the batch order is shuffled. Batches then hold
    similar lengths, so dynamic padding pads little; still a pure function of (seed, stage, epoch)."""
    g = torch.Generator().manual_seed(stage_seed(seed, stage, epoch))
    perm = torch.randperm(n, generator=g).tolist()
    if lengths is None:
        return [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    chunk = batch_size * GROUP_BATCHES
    batches = []
    for c in range(0, n, chunk):
        part = sorted(perm[c : c + chunk], key=lambda i: -lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def shard(batch_idx: list[int], rank: int, world: int) -> list[int]:
    """This process's part of a global batch (strided, so sizes differ by at most one)."""
    return batch_idx[rank::world]


def eval_batches(enc: Encoded, batch_size: int) -> tuple[list[Batch], list[int]]:
    """Length-sorted batches and the example order they hold (to undo the sort)."""
    order = sorted(range(len(enc)), key=lambda i: len(enc.input_ids[i]))
    batches = [collate(enc, order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    return batches, order
