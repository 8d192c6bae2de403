"""Run by torchrun from test_distributed.py: the same training call as the single-process run."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/ (tinymodels), after the repository

from dynabert.tasks import get_task  # noqa: E402
from dynabert.train import RunInputs, train  # noqa: E402
from tests.dynabert.test_distributed import CFG  # noqa: E402

if __name__ == "__main__":
    model, data, out = sys.argv[1:4]
    train(RunInputs(out, get_task("sst2"), model, data), CFG, progress=False)
