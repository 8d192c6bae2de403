"""Session fixtures: tiny random backbones saved as model directories (helpers in tinymodels.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# An internal error (a bug, not bad input) propagates with its traceback in tests instead of the
# CLI's one line + exit 3 (tests/search/test_cli.py checks that line with this unset).
os.environ.setdefault("DYNASEARCH_RAISE_INTERNAL", "1")
torch.set_num_threads(1)

from tinymodels import save_hf_model, tiny_bert_config, tiny_roberta_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_hf_model(tmp_path_factory.mktemp("tiny-bert"), tiny_bert_config())


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    return save_hf_model(tmp_path_factory.mktemp("tiny-roberta"), tiny_roberta_config(), seed=1)


@pytest.fixture(params=["bert", "roberta"])
def tiny_dir(request, tiny_bert_dir, tiny_roberta_dir) -> Path:
    return tiny_bert_dir if request.param == "bert" else tiny_roberta_dir
