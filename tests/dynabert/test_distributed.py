"""2 CPU processes under torchrun (gloo) train to the same weights as one process."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from tinymodels import make_model_dir, make_sst2_dir

from dynabert.tasks import get_task
from dynabert.train import RunInputs, train
from dynabert.train_config import TrainConfig

# Odd batch size: the two processes get 9 and 8 examples, so the loss scaling by share size is tested.
CFG = TrainConfig(
    stages=("teacher", "rewire", "width", "depth"),
    max_steps=3,
    batch_size=17,
    max_seq_length=32,
    learning_rate=1e-3,
    checkpoint_every=3,
    eval_batch_size=64,
)


def test_two_process_run_equals_single_process(tmp_path):
    # dropout 0: the processes draw different dropout masks than the single process would
    model = make_model_dir(tmp_path / "model", dropout=0.0)
    data = make_sst2_dir(tmp_path / "data", n_train=80, n_dev=20)
    single = tmp_path / "single"
    train(RunInputs(single, get_task("sst2"), model, data), CFG, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    worker = Path(__file__).with_name("ddp_worker.py")
    multi = tmp_path / "multi"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(worker),
            str(model),
            str(data),
            str(multi),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for sub in ("teacher", "rewired", "width", "width_depth"):
        a = load_file(str(single / sub / "model.safetensors"))
        b = load_file(str(multi / sub / "model.safetensors"))
        for k in a:
            # float summation order differs between 1 and 2 processes; Adam amplifies that to ~1e-5
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4, msg=f"{sub}: {k}")
    # the weights really moved (else equality proves nothing)
    w0 = load_file(str(model / "model.safetensors"))["layers.0.attention.query.weight"]
    assert not torch.allclose(
        w0, load_file(str(multi / "teacher" / "model.safetensors"))["layers.0.attention.query.weight"]
    )
