"""The measurement kit: its runner runs in a subprocess where only numpy and onnxruntime can be
imported, writes the same records format, resumes, and refuses bad providers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from latency_helpers import SHAPE

from dynabert.errors import OutputExistsError
from dynabert.space import SearchSpace
from predictors import RECORD_COLUMNS, MeasurementError, Protocol, read_records, write_kit
from predictors.kit import RUNTIME
from predictors.samplers import uniform_configs

# Block every heavy or project import, run runner.py, then report what got imported.
BLOCKED = ("torch", "pandas", "dynabert", "predictors", "search", "scipy", "transformers")
DRIVER = """
import json, runpy, sys
for name in {blocked!r}:
    sys.modules[name] = None  # importing it now raises ImportError
sys.argv = ["runner.py"] + {args!r}
code = 0
try:
    runpy.run_path({runner!r}, run_name="__main__")
except SystemExit as e:
    code = e.code
loaded = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in {blocked!r})
print(json.dumps({{"code": code, "loaded": loaded, "numpy": "numpy" in sys.modules, "ort": "onnxruntime" in sys.modules}}))
"""


def run_runner(kit, *args):
    code = DRIVER.format(blocked=BLOCKED, args=list(args), runner=str(kit / "runner.py"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return json.loads(res.stdout.strip().splitlines()[-1]), res


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    out = tmp_path_factory.mktemp("kit") / "kit"
    subs = uniform_configs(SearchSpace.default(SHAPE), 3, seed=4)
    prot = Protocol(min_runs=3, max_runs=5, max_seconds=0.2, warmup_max=3, warmup_max_seconds=0.05)
    write_kit(out, SHAPE, subs, sampler="uniform", batches=[1], seq_lens=[8], protocol=prot, progress=False)
    return out


def test_kit_layout(kit):
    info = json.loads((kit / "kit.json").read_text())
    assert len(info["configs"]) == 3
    assert all((kit / "models" / f"{c['key']}.onnx").is_file() for c in info["configs"])
    assert "python runner.py" in (kit / "README.txt").read_text()


def test_runtime_is_shipped_as_is_and_standalone(kit):
    """The kit's runtime/ is dynasearch_runtime file for file; its imports are relative, the standard
    library's, numpy's or onnxruntime's (the server's modules: and the serve extra's), and it parses as
    Python 3.8."""
    import ast

    shipped = sorted(p.name for p in (kit / "runtime").iterdir())
    assert shipped == sorted(p.name for p in RUNTIME.glob("*.py")) and "runner.py" in shipped
    for name in shipped:
        src = (kit / "runtime" / name).read_text()
        assert src == (RUNTIME / name).read_text()
        tree = ast.parse(src, name, feature_version=(3, 8))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level:
                top = [node.module.split(".")[0]]
            elif isinstance(node, ast.Import):
                top = [a.name.split(".")[0] for a in node.names]
            else:
                continue
            # the server's modules also take the serve extra (imported inside the functions that need it)
            extra = ("starlette", "uvicorn", "prometheus_client") if name in ("server.py", "serve_bundle.py") else ()
            extra = ("starlette", "ray") if name == "serve_ray.py" else extra  # the ray extra (its module only)
            assert all(m in sys.stdlib_module_names or m in ("numpy", "onnxruntime", *extra) for m in top), (name, top)


def test_runner_without_torch_writes_records_and_resumes(kit):
    out, res = run_runner(kit, "--threads", "1", "--batch", "1", "2")
    assert out["code"] in (0, None), res.stderr
    assert out["loaded"] == [] and out["numpy"] and out["ort"]
    df = read_records(kit / "records.csv")
    assert list(df.columns) == list(RECORD_COLUMNS)
    assert len(df) == 6 and (df["status"] == "ok").all() and (df["median_ms"] > 0).all()
    assert (df["torch_version"] == "").all() and (df["backend"] == "onnxruntime").all()
    assert df["flops"].notna().all()  # batch 2 was not precomputed: filled in when read
    again, res = run_runner(kit, "--threads", "1", "--batch", "1")
    assert again["code"] in (0, None)
    assert "0 to measure" in res.stdout and len(read_records(kit / "records.csv")) == 6


def test_runner_refuses_unknown_provider(kit):
    out, res = run_runner(kit, "--provider", "FooExecutionProvider")
    assert out["code"] == 2 and "unknown onnxruntime execution provider 'FooExecutionProvider'" in res.stderr


def test_kit_refuses_existing_output(kit):
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_kit(kit, SHAPE, uniform_configs(SearchSpace.default(SHAPE), 1), seq_lens=[8], progress=False)


def test_kit_refuses_bad_provider_name(tmp_path):
    with pytest.raises(MeasurementError, match="unknown onnxruntime execution provider 'gpu'"):
        write_kit(tmp_path / "k", SHAPE, uniform_configs(SearchSpace.default(SHAPE), 1), provider="gpu", progress=False)
    assert not (tmp_path / "k").exists()


def test_runner_keeps_raw_timings_and_a_speed_index(kit):
    out, res = run_runner(kit, "--threads", "1", "--batch", "1", "--out", str(kit / "speed.csv"))
    assert out["code"] in (0, None), res.stderr
    df = read_records(kit / "speed.csv")
    anchor = json.loads((kit / "kit.json").read_text())["anchor"]["key"]
    assert (df["anchor_key"] == anchor).all() and (df["speed_index"] == 1.0).all()  # the first run is the reference
    assert (df["corrected_median_ms"] > 0).all() and "speed index 1.000" in res.stdout
    raw = list((kit / "speed.raw").glob("*.csv"))
    assert len(raw) == 1 and anchor in raw[0].read_text()


@pytest.mark.parametrize(
    "args,match",
    [
        (["--seq-len", "65"], "--seq-len 65 is longer than the backbone's 64 positions"),
        (["--out", "/proc/x.csv"], "cannot write records file '/proc/x.csv'"),
        (["--out", "/tmp"], "is a directory"),
    ],
)
def test_runner_refuses_bad_inputs_before_timing(kit, args, match):
    out, res = run_runner(kit, *args)
    assert out["code"] == 2 and match in res.stderr and "threads 1 batch" not in res.stdout


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda b: b[:-300], r"row 1 \(line 2\): protocol is '\{.*'; expected JSON \(the cell is cut or not JSON\)"),
        (lambda b: b.replace(b",ok,", b",okay,", 1), r"row 1 \(line 2\): status is 'okay'; expected ok or failed"),
    ],
    ids=["cut-last-row", "word-in-status"],
)
def test_runner_refuses_damaged_records_before_timing(kit, tmp_path, damage, match):
    """The runner appends to its --out through the same row check as `dynasearch measure`: a damaged
    file is one line and exit 2, and is left as it was."""
    import re

    good = tmp_path / "good.csv"
    out, res = run_runner(kit, "--threads", "1", "--batch", "1", "--limit", "1", "--out", str(good))
    assert out["code"] in (0, None), res.stderr
    bad = tmp_path / "bad.csv"
    bad.write_bytes(damage(good.read_bytes()))
    before = bad.read_bytes()
    out, res = run_runner(kit, "--threads", "1", "--batch", "1", "--out", str(bad))
    assert out["code"] == 2 and "threads 1 batch" not in res.stdout, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(match, lines[0]), res.stderr
    assert bad.read_bytes() == before and not (tmp_path / "bad.raw").exists()


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda t: t[: len(t) // 2], r"cannot read the kit file '.*kit\.json': "),
        (lambda t: t.replace('"kit_version": 2', '"kit_version": 9'), r"kit_version 9; this runner reads version 2"),
        (lambda t: t.replace('"configs"', '"konfigs"'), r"lacks key 'configs'"),
    ],
    ids=["cut", "unknown-version", "missing-key"],
)
def test_runner_refuses_a_damaged_kit_file(kit, tmp_path, damage, match):
    import re

    k = shutil.copytree(kit, tmp_path / "k", ignore=shutil.ignore_patterns("*.csv", "*.raw"))
    (k / "kit.json").write_text(damage((k / "kit.json").read_text()))
    out, res = run_runner(k)
    lines = res.stderr.strip().splitlines()
    assert out["code"] == 2 and len(lines) == 1 and re.search(match, lines[0]), res.stderr
    assert not (k / "records.csv").exists()


def test_runner_exits_nonzero_when_nothing_succeeded(tmp_path):
    subs = uniform_configs(SearchSpace.default(SHAPE), 2, seed=4)
    k = tmp_path / "kit"
    write_kit(
        k,
        SHAPE,
        subs,
        seq_lens=[8],
        protocol=Protocol(min_runs=3, max_runs=3, warmup_min=1, warmup_max=1),
        anchor=None,
        progress=False,
    )
    for f in (k / "models").glob("*.onnx"):
        f.write_bytes(b"not an onnx file")
    out, res = run_runner(k)
    assert out["code"] == 1 and "none of the 2 configs could be measured" in res.stderr
