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

# Modules that time real runs and assert what the timings say (busy rounds, undisturbed runs, the
# speed correction, convergence): marked `serial`, they run in the suite's second phase, alone on the
# machine (`make test` runs the rest first on every core with pytest-xdist, then these on one).
SERIAL_MODULES = (
    "predictors/test_clock.py",
    "predictors/test_latency_protocol.py",
    "predictors/test_latency_speed.py",
    "dynasearch_runtime/test_calibrate.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.as_posix().endswith(SERIAL_MODULES):
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_hf_model(tmp_path_factory.mktemp("tiny-bert"), tiny_bert_config())


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    return save_hf_model(tmp_path_factory.mktemp("tiny-roberta"), tiny_roberta_config(), seed=1)


@pytest.fixture(params=["bert", "roberta"])
def tiny_dir(request, tiny_bert_dir, tiny_roberta_dir) -> Path:
    return tiny_bert_dir if request.param == "bert" else tiny_roberta_dir
