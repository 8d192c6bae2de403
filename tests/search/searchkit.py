"""Shared fixtures and helpers for the search tests (issue 8): a tiny trained run, SST-2-like data,
a synthetic latency predictor with the tiny model's exact backbone shape, and a finished search.

Import the fixtures into a test module (`from searchkit import base_model, ...`): pytest finds them
there. Everything is session-scoped and built without downloads.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS / "predictors"))

from fakes import FAKE_MACHINE, additive_ms, fake_rows  # noqa: E402
from tinymodels import make_model_dir, make_sst2_dir  # noqa: E402

SEQ = 16  # the synthetic predictor's sequence length


def predictor_records(
    model_dir: Path, machine: dict | None = None, n_random: int = 40, seed: int = 0, fn=additive_ms, dtype="float32"
):
    """Records rows (as `dynasearch measure` writes them) for the tiny model's shape: the layer table
    of the default space plus random configs, latency `fn`."""
    from dynabert.space import SearchSpace
    from predictors.measure import load_shape
    from predictors.samplers import layer_table_configs

    shape = load_shape(model_dir)
    space = SearchSpace.default(shape)
    rng = random.Random(seed)
    configs = layer_table_configs(space) + [space.sample(rng) for _ in range(n_random)]
    configs += space.grid()
    seen, uniq = set(), []
    for c in configs:
        if c.key not in seen:
            seen.add(c.key)
            uniq.append(c)
    return fake_rows(shape, uniq, fn, seq=SEQ, machine=machine, dtype=dtype)


def fit_predictor_dir(
    model_dir: Path, out: Path, machine: dict | None = None, fn=additive_ms, dtype: str = "float32"
) -> Path:
    """A fitted layer-regression predictor saved in `out` (records in out.parent/records.csv), fitted on
    records measured at `dtype` (a NAME:int8 device entry takes an "int8" one)."""
    from dynasearch_runtime.schema import append_rows
    from predictors import make_predictor, read_records

    out.parent.mkdir(parents=True, exist_ok=True)
    rec = out.parent / f"{out.name}-records.csv"
    append_rows(str(rec), predictor_records(model_dir, machine, fn=fn, dtype=dtype))
    pred = make_predictor("layer-regression").fit(read_records(rec))
    pred.save(out)
    return out


def this_machine() -> dict:
    from dynasearch_runtime.fingerprint import machine_info

    return machine_info(with_torch=True)


def cli(*args) -> int:
    from dynasearch.cli import main

    return main([str(a) for a in args])


def train_run(base: Path, data: Path, run: Path) -> Path:
    rc = cli(
        "train",
        "--model",
        base,
        "--task",
        "sst2",
        "--data-dir",
        data,
        "--out",
        run,
        "--max-steps",
        3,
        "--max-seq-length",
        32,
        "--batch-size",
        16,
        "--no-progress",
    )
    assert rc == 0, "training the tiny run failed"
    return run


def search_args(run: Path, predictor: Path, out: Path, *extra) -> list:
    return ["search", run, "--predictor", predictor, "--out", out, "--quiet", "--heartbeat", 1, *extra]


def count_grid_trials(results: Path, study: str = "dynasearch") -> int:
    """Trials (any state) carrying the user attribute 'grid', read straight from the SQLite study."""
    with sqlite3.connect(results / "study.db") as c:
        return c.execute(
            "SELECT COUNT(*) FROM trial_user_attributes a JOIN trials t ON a.trial_id = t.trial_id "
            "JOIN studies s ON t.study_id = s.study_id WHERE a.key = 'grid' AND s.study_name = ?",
            (study,),
        ).fetchone()[0]


def complete_trials(db: Path, study: str = "dynasearch") -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute(
                "SELECT COUNT(*) FROM trials t JOIN studies s ON t.study_id = s.study_id "
                "WHERE s.study_name = ? AND t.state = 'COMPLETE'",
                (study,),
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def subprocess_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def sk_fast(tmp_path_factory):
    """A session folder on tmpfs when there is one: the SQLite study commits many times per trial,
    and on a shared disk its fsyncs cost ~0.5 s per trial (0.15 s on tmpfs)."""
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="dynasearch-tests-", dir=shm))
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("sk-fast")


@pytest.fixture
def fast_tmp(sk_fast, request) -> Path:
    """A fresh folder per test inside sk_fast."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=request.node.name[:40].replace("[", "_").replace("]", "_") + "-", dir=sk_fast))


@pytest.fixture(scope="session")
def sk_base(tmp_path_factory) -> Path:
    """A plain tiny base model directory (no stage.json: not trained)."""
    return make_model_dir(tmp_path_factory.mktemp("sk-base") / "model")


@pytest.fixture(scope="session")
def sk_data(tmp_path_factory) -> Path:
    return make_sst2_dir(tmp_path_factory.mktemp("sk-data") / "sst2", n_train=96, n_dev=48)


@pytest.fixture(scope="session")
def sk_run(tmp_path_factory, sk_base, sk_data) -> Path:
    """A run directory of `dynasearch train` (3 steps per stage)."""
    return train_run(sk_base, sk_data, tmp_path_factory.mktemp("sk-run") / "run")


@pytest.fixture(scope="session")
def sk_predictor(tmp_path_factory, sk_base) -> Path:
    """A synthetic layer-regression predictor for the tiny shape; its fingerprint is fake (use --no-verify)."""
    return fit_predictor_dir(sk_base, tmp_path_factory.mktemp("sk-pred") / "pred")


@pytest.fixture(scope="session")
def sk_int8_predictor(tmp_path_factory, sk_base) -> Path:
    """The synthetic predictor fitted on int8 records (as `measure --dtype int8` writes): a NAME:int8 entry's."""
    return fit_predictor_dir(sk_base, tmp_path_factory.mktemp("sk-pred-int8") / "pred", dtype="int8")


@pytest.fixture(scope="session")
def sk_local_predictor(tmp_path_factory, sk_base) -> Path:
    """The same synthetic predictor, but fitted on records that carry THIS machine's fingerprint."""
    return fit_predictor_dir(sk_base, tmp_path_factory.mktemp("sk-lpred") / "pred", machine=this_machine())


@pytest.fixture(scope="session")
def sk_results(sk_fast, sk_run, sk_predictor) -> Path:
    """A finished search (30 trials, nsga2, --no-verify, target 4 ms) on the trained run. Tests
    that change a results directory copy it first (copy_results)."""
    out = sk_fast / "sk-results"
    rc = cli(*search_args(sk_run, sk_predictor, out, "--trials", 30, "--no-verify", "--target-latency", "4ms"))
    assert rc == 0
    return out


def copy_results(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


__all__ = [
    "FAKE_MACHINE",
    "SEQ",
    "additive_ms",
    "cli",
    "complete_trials",
    "copy_results",
    "fast_tmp",
    "sk_fast",
    "count_grid_trials",
    "fit_predictor_dir",
    "make_model_dir",
    "make_sst2_dir",
    "predictor_records",
    "search_args",
    "sk_base",
    "sk_data",
    "sk_local_predictor",
    "sk_predictor",
    "sk_results",
    "sk_run",
    "subprocess_env",
    "this_machine",
    "train_run",
]
