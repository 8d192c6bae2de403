"""Session fixtures: tiny random backbones saved as model directories (helpers in tinymodels.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
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
