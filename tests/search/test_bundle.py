"""The deployment bundle (issue 18 item 4): `export --results RESULTS --bundle --out BUNDLE` serves every
device of a search from one folder, and its loader runs where neither torch nor the repository can be
imported."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit
from fakes import additive_ms  # noqa: E402
from searchkit import REPO, cli, fit_predictor_dir  # noqa: E402

pytest_plugins = ["searchkit"]

PYTHON = sys.executable
TEXTS = ["the movie was good", "a bad and awful plot"]
# Python started with this folder on PYTHONPATH cannot import torch, transformers or the repository.
BLOCKER = """import sys
for _m in ("torch", "transformers", "dynabert", "predictors", "search", "dynasearch"):
    sys.modules[_m] = None
"""


def slow_ms(s, batch: int = 1, seq: int = 16) -> float:
    return additive_ms(s, batch, seq) + 3 * sum(0.05 * h for h in s.heads)


@pytest.fixture(scope="module")
def slow_predictor(tmp_path_factory, sk_base):
    return fit_predictor_dir(sk_base, tmp_path_factory.mktemp("bundle-slow") / "pred", fn=slow_ms)


def search_devices(run, out, targets, *predictors) -> Path:
    args = [a for name, p in predictors for a in ("--predictor", f"{name}={p}")]
    rc = cli("search", run, *args, "--out", out, "--quiet", "--heartbeat", 1, "--trials", 16, "--no-verify",
             "--target-latency", targets)  # fmt: skip
    assert rc in (0, 1)
    return out


@pytest.fixture(scope="module")
def two_devices(sk_fast, sk_run, sk_predictor, slow_predictor) -> Path:
    return search_devices(
        sk_run, sk_fast / "bundle-two", "fast=4ms,slow=7ms", ("fast", sk_predictor), ("slow", slow_predictor)
    )


@pytest.fixture(scope="module")
def bundle(two_devices, sk_fast) -> Path:
    out = sk_fast / "bundle-two-out"
    assert cli("export", "--results", two_devices, "--bundle", "--out", out) == 0
    return out


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def no_torch(tmp: Path) -> dict:
    """The environment of a Python that cannot import torch, transformers or the repository."""
    import os

    block = tmp / "block"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(block), OMP_NUM_THREADS="1")
    return env


def run_py(code: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_bundle_serves_every_device(two_devices, bundle):
    index = json.loads((bundle / "devices.json").read_text())
    searched = {d["name"]: d for d in json.loads((two_devices / "devices.json").read_text())["devices"]}
    answered = {n for n, d in searched.items() if d["answer"]}
    assert {e["name"] for e in index["devices"]} == answered and answered
    assert {s["name"] for s in index["skipped"]} == set(searched) - answered
    for e in index["devices"]:
        s = searched[e["name"]]
        assert e["key"] == s["answer"]["key"] and e["predicted_ms"] == s["answer"]["predicted_ms"]
        assert e["fingerprint"] == s["setting"]["fingerprint"] == e["where"]["fingerprint"]
        assert (e["backend"], e["threads"], e["batch"], e["length"], e["precision"]) == (
            "onnxruntime", 1, 1, 16, "fp32"
        )  # fmt: skip
        assert e["file"] == f"models/{e['key']}-fp32/model.onnx" and (bundle / e["file"]).is_file()
        assert e["cpu_model"] == "Test CPU" and e["metric"] == "accuracy" and e["when"] and e["exported"]
    # one folder per distinct config; the tokenizer once at the root
    assert len(index["models"]) == len({e["key"] for e in index["devices"]})
    assert (bundle / "tokenizer.json").is_file() and not list((bundle / "models").rglob("tokenizer*.json"))
    # a digest of every file (the index itself aside), all right
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"devices.json"}
    assert set(index["files"]) == files
    assert all(sha256(bundle / f) == d for f, d in index["files"].items())
    # the loader and the runtime, copied as they are
    runtime = REPO / "predictors" / "runtime"
    for src in runtime.glob("*.py"):
        assert (bundle / "dynasearch_runtime" / src.name).read_text() == src.read_text()
    assert "dynasearch_runtime.bundle import" in (bundle / "dynasearch_bundle.py").read_text()


def test_bundle_loads_without_torch(bundle, tmp_path):
    env = no_torch(tmp_path)
    index = json.loads((bundle / "devices.json").read_text())
    names = [e["name"] for e in index["devices"]]
    assert index["labels"] == {"0": "0", "1": "1"}  # the trained run's id2label (SST-2's labels are 0 and 1)
    code = f"""
import json, sys, warnings
try:
    import torch
    sys.exit("torch imported")
except ImportError:
    pass
import dynasearch_bundle as b
out = {{}}
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    m = b.load(".")
out["warned"] = [str(x.message) for x in w]
out["default"] = m.entry["name"]
out["pred"] = m.predict({TEXTS!r})
out["picked"] = {{n: b.load(".", device=n).entry["name"] for n in {names!r}}}
out["runtime"] = sys.modules["dynasearch_runtime.bundle"].__file__
out["mods"] = sorted(k for k in ("torch", "transformers", "dynabert", "predictors", "search") if sys.modules.get(k))
print(json.dumps(out))
"""
    r = run_py(code, bundle, env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["picked"] == {n: n for n in names}
    assert Path(out["runtime"]).resolve().parent == (bundle / "dynasearch_runtime").resolve()
    assert out["mods"] == []
    assert len(out["pred"]) == 2
    for label, scores in out["pred"]:
        assert label in ("0", "1") and label == str(max(range(2), key=scores.__getitem__))
        assert len(scores) == 2 and abs(sum(scores) - 1) < 1e-5
    # the fake machine of the synthetic predictors is not this one: the nearest entry, warned, naming both
    assert any("no entry of . was measured on this machine" in w and "Test CPU" in w for w in out["warned"])


def test_check_and_bad_input_of_the_loader(bundle, tmp_path):
    import shutil

    env = no_torch(tmp_path)
    name = json.loads((bundle / "devices.json").read_text())["devices"][0]["name"]
    r = subprocess.run(
        [PYTHON, "-m", "dynasearch_bundle", ".", "--check", "--device", name, "--runs", "5"],
        cwd=bundle, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode in (0, 1), r.stderr
    assert "ratio" in r.stdout and f"device {name} (fp32)" in r.stdout and "predicted on Test CPU" in r.stdout
    # an unknown device: one line listing the devices
    r = subprocess.run([PYTHON, "-m", "dynasearch_bundle", ".", "--device", "tpu"], cwd=bundle, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "no device 'tpu' in ." in err[0] and f"devices: {name}" in err[0]
    # a changed file is refused, naming it
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    index = json.loads((copy / "devices.json").read_text())
    target = index["devices"][0]["file"]
    with open(copy / target, "ab") as f:
        f.write(b"\0")
    r = run_py(
        "import dynasearch_bundle as b\ntry:\n    b.load('.')\nexcept b.BundleError as e:\n    print(e)\n", copy, env
    )
    assert r.returncode == 0 and f"bundle file {target} changed since the bundle was written" in r.stdout
    r = subprocess.run([PYTHON, "-m", "dynasearch_bundle", ".", "--check"], cwd=copy, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and target in r.stderr


def test_both_devices_picking_one_config_share_one_file(two_devices, fast_tmp):
    """Generous targets do not force it with the tiny run (every config scores the same, so each device
    breaks the tie by its own predicted latency): the devices index of a copy gives slow fast's answer."""
    import shutil

    results = fast_tmp / "same"
    shutil.copytree(two_devices, results)
    doc = json.loads((results / "devices.json").read_text())
    fast, slow = doc["devices"]
    slow["answer"] = fast["answer"]
    (results / "devices.json").write_text(json.dumps(doc))
    out = fast_tmp / "same-out"
    # --front 0: the answers alone (slow's front, from its own results, holds another config)
    assert cli("export", "--results", results, "--bundle", "--front", 0, "--out", out) == 0
    index = json.loads((out / "devices.json").read_text())
    a, b = index["devices"]
    assert (a["name"], b["name"]) == ("fast", "slow") and a["key"] == b["key"] == fast["answer"]["key"]
    assert a["file"] == b["file"] and a["predicted_ms"] == b["predicted_ms"] == fast["answer"]["predicted_ms"]
    assert list(index["models"]) == [f"models/{a['key']}-fp32"] and len(list((out / "models").iterdir())) == 1
    assert a["fingerprint"] == b["fingerprint"]  # same fake machine, another setting: the entries' own setting
    assert a["where"] == {k: a[k] for k in ("fingerprint", "cpu_model", "cpu_cores", "gpu_name")}


def torch_predictor(model_dir: Path, out: Path) -> Path:
    """A synthetic predictor whose records say backend torch (fake machine)."""
    import random

    from fakes import fake_rows

    from dynabert.space import SearchSpace
    from dynasearch_runtime.schema import append_rows
    from predictors import make_predictor, read_records
    from predictors.measure import load_shape
    from predictors.samplers import layer_table_configs

    shape = load_shape(model_dir)
    space = SearchSpace.default(shape)
    rng = random.Random(0)
    configs = {c.key: c for c in layer_table_configs(space) + space.grid() + [space.sample(rng) for _ in range(40)]}
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = out.parent / "torch-records.csv"
    append_rows(str(rec), fake_rows(shape, list(configs.values()), additive_ms, seq=16, backend="torch"))
    make_predictor("layer-regression").fit(read_records(rec)).save(out)
    return out


def test_torch_entry_is_a_hugging_face_directory(sk_fast, sk_run, sk_base, sk_predictor, tmp_path, capsys):
    from dynasearch_runtime.bundle import load

    tp = torch_predictor(sk_base, tmp_path / "tp" / "pred")
    results = search_devices(sk_run, sk_fast / "bundle-torch", "ort=1000ms,pt=1000ms", ("ort", sk_predictor),
                             ("pt", tp))  # fmt: skip
    out = sk_fast / "bundle-torch-out"
    assert cli("export", "--results", results, "--bundle", "--out", out) == 0
    index = json.loads((out / "devices.json").read_text())
    ort, pt = index["devices"]
    assert (ort["backend"], ort["format"], pt["backend"], pt["format"]) == ("onnxruntime", "onnx", "torch", "hf")
    assert pt["file"] == f"models/{pt['key']}-fp32" and (out / pt["file"] / "model.safetensors").is_file()
    assert (out / pt["file"] / "modeling_dynabert.py").is_file() and not (out / pt["file"] / "tokenizer.json").exists()
    # with torch (this process): the Hugging Face directory predicts as the ONNX model of the same config would
    with pytest.warns(UserWarning, match="no entry of .* was measured on this machine"):
        model = load(out, device="pt")
    assert model.entry["name"] == "pt"
    (la, sa), (lb, sb) = model.predict(TEXTS)
    assert la in ("0", "1") and len(sa) == 2 and abs(sum(sb) - 1) < 1e-5
    # without torch: the torch entry says it needs torch, naming it; the default is the onnxruntime entry
    env = no_torch(tmp_path)
    r = subprocess.run([PYTHON, "-m", "dynasearch_bundle", ".", "--device", "pt"], cwd=out, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "device pt (a torch entry" in r.stderr and "needs the torch package" in r.stderr
    r = subprocess.run([PYTHON, "-m", "dynasearch_bundle", ".", "--text", TEXTS[0]], cwd=out, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "using device ort" in r.stdout and json.loads(r.stdout.splitlines()[-1])["text"] == TEXTS[0]


def test_single_device_results_on_this_machine(sk_fast, sk_run, sk_local_predictor, tmp_path):
    """A single-device RESULTS (no devices.json) whose predictor is this machine's: one entry, picked
    by fingerprint without a warning."""
    from searchkit import search_args

    results = sk_fast / "bundle-single"
    assert cli(*search_args(sk_run, sk_local_predictor, results, "--trials", 12, "--no-verify",
                            "--target-latency", "1000ms")) == 0  # fmt: skip
    out = tmp_path / "b"
    assert cli("export", "--results", results, "--bundle", "--out", out) == 0
    index = json.loads((out / "devices.json").read_text())
    (e,) = index["devices"]
    meta = json.loads((results / "search.json").read_text())
    assert e["name"] == "onnxruntime-cpu" and e["key"] == meta["answer"]["key"] and e["results"] == "."
    code = "import json, warnings\nwarnings.simplefilter('error')\nimport dynasearch_bundle as b\n"
    code += "m = b.load('.')\nprint(json.dumps([m.entry['name'], m.predict(['good'])[0][0]]))\n"
    r = run_py(code, out, no_torch(tmp_path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["onnxruntime-cpu", json.loads(r.stdout)[1]]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--key", "abc"], "--bundle takes each device's own answer"),
        (["--target-latency", "4ms"], "--bundle takes each device's own answer"),
        (["--format", "onnx"], "--bundle picks each device's format"),
    ],
)
def test_bundle_bad_options(two_devices, tmp_path, capsys, extra, message):
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:
        cli("export", "--results", two_devices, "--bundle", "--out", out, *extra)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()


def test_bundle_without_results(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli("export", "--bundle", "--out", tmp_path / "o")
    assert e.value.code == 2 and "--bundle exports every device of a search: give --results RESULTS" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()


def test_devices_without_answers(two_devices, fast_tmp, capsys):
    import shutil

    results = fast_tmp / "none"
    shutil.copytree(two_devices, results)
    doc = json.loads((results / "devices.json").read_text())
    doc["devices"][1]["answer"] = None
    (results / "devices.json").write_text(json.dumps(doc))
    out = fast_tmp / "one"
    assert cli("export", "--results", results, "--bundle", "--out", out) == 0
    index = json.loads((out / "devices.json").read_text())
    assert [e["name"] for e in index["devices"]] == ["fast"] and index["skipped"][0]["name"] == "slow"
    assert "warning: device slow (fp32) has no answer" in capsys.readouterr().err
    for d in doc["devices"]:
        d["answer"] = None
    (results / "devices.json").write_text(json.dumps(doc))
    out = fast_tmp / "nothing"
    assert cli("export", "--results", results, "--bundle", "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has an answer, so there is nothing to bundle" in err[0] and not out.exists()


def test_int8_entry_ships_the_int8_model(sk_fast, sk_run, sk_predictor, sk_int8_predictor, tmp_path):
    """An fp32 and an int8 entry of one device: the int8 folder holds model.int8.onnx (not the fp32
    model it was quantised from), the entry points at it and the loader runs it."""
    results = search_devices(sk_run, sk_fast / "bundle-int8", "cpu=1000ms", ("cpu", sk_predictor),
                             ("cpu:int8", sk_int8_predictor))  # fmt: skip
    out = tmp_path / "b"
    assert cli("export", "--results", results, "--bundle", "--out", out) == 0
    index = json.loads((out / "devices.json").read_text())
    by = {e["precision"]: e for e in index["devices"]}
    assert set(by) == {"fp32", "int8"} and by["int8"]["name"] == by["fp32"]["name"] == "cpu"
    i8 = by["int8"]
    assert i8["file"] == f"models/{i8['key']}-int8/model.int8.onnx" and (out / i8["file"]).is_file()
    assert not (out / i8["model_dir"] / "model.onnx").exists()
    assert "model.onnx" in index["models"][i8["model_dir"]]["removed_from_export"]
    manifest = json.loads((out / i8["model_dir"] / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["onnx_file"] == "model.int8.onnx"
    code = "import json\nimport dynasearch_bundle as b\nm = b.load('.', device='cpu')\n"
    code += "print(json.dumps([m.entry['precision'], m.predict(['good'])[0][0]]))\n"
    r = run_py(code, out, no_torch(tmp_path))
    assert r.returncode == 0, r.stderr
    precision, label = json.loads(r.stdout)
    # the precision the search's verdict gave the device (fp32 without one)
    assert label in ("0", "1") and precision == (index["precision"].get("cpu", "").split(":")[0] or "fp32")


# ------------------------------------------- check_ms: --check's own loop, timed at export on this machine
@pytest.fixture(scope="module")
def here_and_there(sk_fast, sk_run, sk_local_predictor, sk_predictor) -> Path:
    """A two-device search: `here` (records of THIS machine) and `there` (the fake machine)."""
    return search_devices(sk_run, sk_fast / "bundle-here", "here=1000ms,there=1000ms", ("here", sk_local_predictor),
                          ("there", sk_predictor))  # fmt: skip


@pytest.fixture(scope="module")
def here_bundle(here_and_there, sk_fast) -> Path:
    out = sk_fast / "bundle-here-out"
    assert cli("export", "--results", here_and_there, "--bundle", "--out", out) == 0
    return out


def test_check_ms_is_recorded_for_this_machine_only(here_and_there, fast_tmp, capsys):
    import datetime
    import statistics

    from dynasearch_runtime.bundle import CHECK_RUNS
    from search.bundle import CHECK_REPEATS

    out = fast_tmp / "b"
    assert cli("export", "--results", here_and_there, "--bundle", "--out", out) == 0
    captured = capsys.readouterr()
    index = json.loads((out / "devices.json").read_text())
    by = {e["name"]: e for e in index["devices"]}
    here, there = by["here"], by["there"]
    assert here["check_ms"] > 0 and here["check_runs"] == CHECK_RUNS
    assert len(here["check_repeats_ms"]) == CHECK_REPEATS
    assert statistics.median(here["check_repeats_ms"]) == here["check_ms"]
    assert datetime.datetime.fromisoformat(here["check_when"]).tzinfo is not None
    assert (there["check_ms"], there["check_runs"], there["check_when"], there["check_repeats_ms"]) == (None,) * 4
    assert "measured_ms" in here and "measured_raw_ms" in here  # kept as the search wrote them
    assert index["check_time"]["timed"] and index["check_time"]["entries"] == 1
    assert index["check_time"]["runs"] == CHECK_RUNS and index["check_time"]["repeats"] == CHECK_REPEATS
    timed = [line for line in captured.err.splitlines() if line.startswith("timed ")]
    assert len(timed) == 1 and "timed device here (fp32" in timed[0]
    assert "--check loop here" in captured.out
    # nothing but the bundle's own files (no __pycache__ from loading it), every digest right
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"devices.json"}
    assert set(index["files"]) == files
    # --no-check-time: nothing timed, and devices.json says so
    out2 = fast_tmp / "b2"
    assert cli("export", "--results", here_and_there, "--bundle", "--out", out2, "--no-check-time") == 0
    assert "timed " not in capsys.readouterr().err
    index = json.loads((out2 / "devices.json").read_text())
    assert all(e["check_ms"] is None and e["check_runs"] is None for e in index["devices"])
    assert index["check_time"]["timed"] is False and "--no-check-time" in index["check_time"]["note"]


def test_no_check_time_needs_bundle(sk_results, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli("export", "--results", sk_results, "--key", "abc", "--out", tmp_path / "o", "--no-check-time")
    assert e.value.code == 2 and "--no-check-time goes with --bundle" in capsys.readouterr().err


def test_entries_sharing_a_model_and_setting_share_one_timing(here_and_there, fast_tmp, capsys):
    import shutil

    results = fast_tmp / "shared"
    shutil.copytree(here_and_there, results)
    doc = json.loads((results / "devices.json").read_text())
    here, there = doc["devices"]
    there["answer"], there["setting"] = here["answer"], here["setting"]
    (results / "devices.json").write_text(json.dumps(doc))
    out = fast_tmp / "shared-out"
    assert cli("export", "--results", results, "--bundle", "--out", out) == 0
    assert sum(line.startswith("timed ") for line in capsys.readouterr().err.splitlines()) == 1
    a, b = json.loads((out / "devices.json").read_text())["devices"]
    assert a["file"] == b["file"] and a["check_ms"] == b["check_ms"] > 0 and a["check_when"] == b["check_when"]


def test_a_failure_while_timing_leaves_no_bundle(here_and_there, fast_tmp, monkeypatch):
    import search.bundle as sb

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sb, "_time_entry", boom)
    out = fast_tmp / "killed"
    with pytest.raises(KeyboardInterrupt):
        sb.write_bundle(here_and_there, out, progress=False)
    assert not out.exists() and not [p for p in fast_tmp.iterdir() if p.name.endswith(".tmp")]


def test_check_compares_with_check_ms_first(here_bundle, tmp_path):
    """devices.json is not among its own digests: a copy with another check_ms still loads."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(here_bundle, copy)
    index = json.loads((copy / "devices.json").read_text())
    here = next(e for e in index["devices"] if e["name"] == "here")
    here.update(check_ms=1e5, measured_raw_ms=1e5, measured_ms=1e5)
    (copy / "devices.json").write_text(json.dumps(index))
    r = subprocess.run([PYTHON, "-m", "dynasearch_bundle", ".", "--check", "--device", "here", "--runs", "3"],
                       cwd=copy, env=no_torch(tmp_path), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 1, r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert "against 100000.000 ms recorded by the loader's loop at export on" in line
    assert "more than 10% off" in line and "the search's verification measured (raw): 100000.000 ms" in line


def test_check_decides_by_check_ms_and_reports_measured(here_bundle):
    from dynasearch_runtime.bundle import load
    from dynasearch_runtime.bundle_cli import check

    model = load(here_bundle, device="here")
    model.time_ms = lambda runs=20, warmup=3: 2.0
    e = model.entry
    e.update(check_ms=2.1, check_runs=20, check_when="2024-01-01T00:00:00+00:00", measured_raw_ms=2.5, measured_ms=2.6)
    code, line = check(model, 5)
    assert code == 0 and "\n" not in line
    assert "against 2.100 ms recorded by the loader's loop at export on" in line and "ratio 0.95 (within 10%)" in line
    assert "the search's verification measured (raw): 2.500 ms, ratio 0.80 (for information" in line
    # the first comparison decides, whatever the measured one says
    e.update(check_ms=2.5, measured_raw_ms=2.0)
    code, line = check(model, 5)
    assert code == 1 and "ratio 0.80 (more than 10% off)" in line and "measured (raw): 2.000 ms, ratio 1.00" in line
    # without check_ms: the measured latency (raw, then speed-corrected), then the predicted one
    e.update(check_ms=None, measured_raw_ms=2.05)
    code, line = check(model, 5)
    assert code == 0 and "against 2.050 ms measured (raw) on" in line and "loader's loop" not in line
    e.update(measured_raw_ms=None, measured_ms=3.0)
    assert check(model, 5)[1].count("measured (speed-corrected) on") == 1
    e.update(measured_ms=None, predicted_ms=2.0)
    code, line = check(model, 5)
    assert code == 0 and "against 2.000 ms predicted on" in line


@pytest.mark.parametrize(
    "field, value",
    [
        ("check_ms", -1.0),
        ("check_ms", 0),
        ("check_ms", "3.2"),
        ("check_ms", True),
        ("check_ms", float("nan")),
        ("check_ms", float("inf")),
        ("check_runs", 0),
        ("check_runs", 2.5),
        ("check_runs", True),
    ],
)
def test_read_index_rejects_a_bad_check_field(here_bundle, tmp_path, field, value):
    from dynasearch_runtime.bundle import BundleError, read_index

    index = json.loads((here_bundle / "devices.json").read_text())
    i = next(i for i, e in enumerate(index["devices"]) if e["name"] == "here")
    index["devices"][i][field] = value
    (tmp_path / "devices.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=rf"devices\[{i}\] \(here, fp32\) has {field} .*it must be null or"):
        read_index(str(tmp_path))
    index["devices"][i][field] = None  # null is fine
    (tmp_path / "devices.json").write_text(json.dumps(index))
    assert read_index(str(tmp_path))["devices"][i][field] is None


def test_check_with_check_ms_and_no_run_count(here_bundle):
    """check_ms without check_runs (or without check_when): no 'None runs' in the line."""
    from dynasearch_runtime.bundle import load
    from dynasearch_runtime.bundle_cli import check

    model = load(here_bundle, device="here")
    model.time_ms = lambda runs=20, warmup=3: 2.0
    e = model.entry
    e.update(check_ms=2.0, check_runs=None, check_when="2024-01-01T00:00:00+00:00")
    line = check(model, 5)[1]
    assert "None" not in line and " (2024-01-01T00:00:00+00:00): ratio" in line
    e.update(check_runs=20, check_when=None)
    line = check(model, 5)[1]
    assert "None" not in line and " (20 runs): ratio" in line
    e.update(check_runs=None)
    line = check(model, 5)[1]
    assert "None" not in line and "recorded by the loader's loop at export on" in line and "()" not in line


# ---------------------------------------- --check at another threads / batch than the entry's recorded one
def test_time_ms_runs_at_the_models_batch_and_check_refuses_another_setting(here_bundle, monkeypatch):
    import dynasearch_runtime.bundle as rb
    import dynasearch_runtime.bundle_cli as cli_module

    seen = []

    def spy(inputs, batch, length, vocab):
        seen.append((batch, length))
        return real(inputs, batch, length, vocab)

    real = rb.ort_feeds
    monkeypatch.setattr(rb, "ort_feeds", spy)
    model = rb.load(here_bundle, device="here", batch=4)
    assert (model.batch, model.entry["batch"]) == (4, 1)
    assert model.time_ms(runs=1, warmup=0) > 0 and seen == [(4, model.entry["length"])]
    setting = r"--check compares with the latency recorded at the entry's setting \(device here \(fp32\): threads 1, "
    with pytest.raises(rb.BundleError, match=setting + r"batch 1\), not at threads 1, batch 4; drop --threads/--batch"):
        cli_module.check(model, 1)
    model = rb.load(here_bundle, device="here", threads=2)
    with pytest.raises(rb.BundleError, match=setting + r"batch 1\), not at threads 2, batch 1"):
        cli_module.check(model, 1)
    assert len(seen) == 1  # refused before timing
    # the entry's own setting, named explicitly, is checked as without it
    model = rb.load(here_bundle, device="here", threads=1, batch=1)
    model.time_ms = lambda runs=20, warmup=3: 2.0
    assert "at batch 1, length" in cli_module.check(model, 1)[1]


@pytest.mark.parametrize("extra", [["--threads", "2"], ["--batch", "4"]])
def test_check_cli_refuses_another_setting(here_bundle, tmp_path, extra):
    r = subprocess.run([PYTHON, "-m", "dynasearch_bundle", ".", "--check", "--device", "here", *extra],
                       cwd=here_bundle, env=no_torch(tmp_path), capture_output=True, text=True, timeout=300)  # fmt: skip
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert err[0].startswith("dynasearch_bundle: error: --check compares with the latency recorded at the entry's")
    assert "(device here (fp32): threads 1, batch 1)" in err[0] and "drop --threads/--batch" in err[0]


# ------------------------------------------------------ every number of devices.json the loader reads
@pytest.mark.parametrize(
    "field, value, nullable",
    [
        ("measured_raw_ms", "abc", True),
        ("measured_ms", "abc", True),
        ("measured_ms", 0, True),
        ("predicted_ms", -2.0, True),
        ("predicted_ms", float("nan"), True),
        ("metric_value", "abc", True),
        ("metric_full", float("inf"), True),
        ("metric_search", [0.5], True),
        ("cpu_cores", 1.5, True),
        ("threads", "abc", False),
        ("threads", None, False),
        ("batch", 0, False),
        ("length", True, False),
    ],
)
def test_read_index_rejects_a_bad_number(here_bundle, tmp_path, field, value, nullable):
    from dynasearch_runtime.bundle import BundleError, read_index

    index = json.loads((here_bundle / "devices.json").read_text())
    i = next(i for i, e in enumerate(index["devices"]) if e["name"] == "here")
    index["devices"][i][field] = value
    (tmp_path / "devices.json").write_text(json.dumps(index))
    must = "it must be null or" if nullable else r"it must be an integer in 1\.\."
    with pytest.raises(BundleError, match=rf"devices\[{i}\] \(here, fp32\) has {field} .*; {must}"):
        read_index(str(tmp_path))
    if nullable:
        index["devices"][i][field] = None
        (tmp_path / "devices.json").write_text(json.dumps(index))
        assert read_index(str(tmp_path))["devices"][i][field] is None


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("spinning", "false", "true, false"),  # a string handed to onnxruntime as is would turn spinning ON
        ("spinning", None, "true, false"),
        ("spinning", 0, "true, false"),
        ("dtype", "int3", '"float32", "float16", "bfloat16", "int8"'),
        ("precision", "int4", '"fp32", "int8"'),
    ],
)
def test_read_index_rejects_a_bad_setting(here_bundle, tmp_path, field, value, allowed):
    from dynasearch_runtime.bundle import BundleError, read_index

    index = json.loads((here_bundle / "devices.json").read_text())
    i = next(i for i, e in enumerate(index["devices"]) if e["name"] == "here")
    index["devices"][i][field] = value
    (tmp_path / "devices.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=rf"devices\[{i}\] \(here, .*\) has {field} .*; it must be one of {allowed} "):
        read_index(str(tmp_path))


def test_read_index_rejects_a_bad_vocab_size(here_bundle, tmp_path):
    from dynasearch_runtime.bundle import BundleError, read_index

    index = json.loads((here_bundle / "devices.json").read_text())
    index["vocab_size"] = "abc"
    (tmp_path / "devices.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=r"has vocab_size 'abc'; it must be null or an integer in 1\.\.10000000 "):
        read_index(str(tmp_path))


def test_check_cli_on_a_bad_number_is_one_line(here_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(here_bundle, copy)
    index = json.loads((copy / "devices.json").read_text())
    i = next(i for i, e in enumerate(index["devices"]) if e["name"] == "here")
    index["devices"][i]["measured_raw_ms"] = "abc"
    (copy / "devices.json").write_text(json.dumps(index))
    r = subprocess.run([PYTHON, "-m", "dynasearch_bundle", ".", "--check", "--device", "here"], cwd=copy,
                       env=no_torch(tmp_path), capture_output=True, text=True, timeout=300)  # fmt: skip
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert (
        f"devices[{i}] (here, fp32) has measured_raw_ms 'abc'; it must be null or a number in (0, 3.6e+06] ms" in err[0]
    )


# ------------------------------------------------------------- the loader's arguments: one line, exit 2
@pytest.mark.parametrize(
    "argv, message",
    [
        ([".", "--threads", "abc"], "argument --threads: must be an integer in 1..1024; got 'abc'"),
        ([".", "--batch", "0"], "argument --batch: must be an integer in 1..4096; got 0"),
        ([".", "--runs", "2.5"], "argument --runs: must be an integer in 1..1000000; got '2.5'"),
        ([".", "--nope"], "unrecognized arguments: --nope"),
        ([], "the following arguments are required: bundle"),
    ],
)
def test_loader_bad_arguments_are_one_line(capsys, argv, message):
    from dynasearch_runtime.bundle_cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [f"dynasearch_bundle: error: {message}"]


# ----------------------------------------------- the printed commands work from any working directory
def test_printed_commands_work_from_another_directory(two_devices, fast_tmp, capsys):
    import shlex

    out = fast_tmp / "printed bundle"  # a space in the path: the hint quotes it
    assert cli("export", "--results", two_devices, "--bundle", "--out", out) == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if "check on a device:" in line]
    assert len(hint) == 1
    argv = shlex.split(hint[0].split("check on a device:", 1)[1])
    assert argv[0] == "python" and argv[1:] == [str(out / "dynasearch_bundle.py"), str(out), "--check"]
    elsewhere = fast_tmp / "elsewhere"
    elsewhere.mkdir()
    env = no_torch(fast_tmp)
    r = subprocess.run([PYTHON, *argv[1:]], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    assert "ratio" in r.stdout and "predicted on Test CPU" in r.stdout
    # the warning names the same command (this machine is not the fake one the entries were measured on)
    assert f"{shlex.join(argv)} times it" in r.stderr
    # README.txt's commands, BUNDLE being the bundle's path
    readme = (out / "README.txt").read_text()
    text = next(line for line in readme.splitlines() if "--text" in line).split("#")[0].strip()
    argv = shlex.split(text.replace("BUNDLE", shlex.quote(str(out))))
    assert argv[0] == "python"
    r = subprocess.run([PYTHON, *argv[1:]], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["text"] == "some text"
    assert 'import sys; sys.path.insert(0, "BUNDLE")' in readme
    code = f"import sys; sys.path.insert(0, {str(out)!r})\nimport dynasearch_bundle as b\n"
    code += f"print(sys.modules['dynasearch_runtime.bundle'].__file__, b.load({str(out)!r}).predict(['good'])[0][0])"
    r = run_py(code, elsewhere, env)
    assert r.returncode == 0, r.stderr
    where, label = r.stdout.strip().rsplit(" ", 1)
    assert Path(where).resolve().parent == (out / "dynasearch_runtime").resolve() and label in ("0", "1")


def test_docs_give_the_bundle_commands_that_work_from_any_directory():
    readme = (REPO / "README.md").read_text()
    lines = [line for line in readme.splitlines() if "dynasearch_bundle" in line]
    assert lines and not [line for line in lines if "python -m dynasearch_bundle" in line]
    assert any("python bundle/dynasearch_bundle.py bundle --check" in line for line in lines)
    assert all("sys.path.insert(0, 'bundle')" in line for line in lines if "import dynasearch_bundle" in line)


# ------------------------------------------------------------- the front (issue 24 item 1: devices.json v2)
def sized_scores(model, dev, subnet, metrics, bf16=False):
    """A metric that grows with the sub-network (the tiny run scores every config alike, so its front is one
    config): a front of many configs, the bigger the slower and the more accurate."""
    value = 40.0 + sum(subnet.heads) * 2.0 + sum(subnet.ffn) / 16.0 + dev.n / 1000.0
    return {m: value for m in metrics}


@pytest.fixture(scope="module")
def wide_front(sk_fast, sk_run, sk_predictor) -> Path:
    """A single-device search with held-out report examples (--search-dev 24 of the 48, --rescore-dev 12) whose
    metric grows with the sub-network: a front of several configs."""
    import dynabert.evaluate

    out = sk_fast / "bundle-wide"
    if (out / "search.json").is_file():  # made by another module of this worker (tests/search/test_serve_bundle.py)
        return out
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dynabert.evaluate, "score_subnet", sized_scores)
        rc = cli("search", sk_run, "--predictor", sk_predictor, "--out", out, "--quiet", "--heartbeat", 1,
                 "--trials", 24, "--no-verify", "--target-latency", "4ms", "--search-dev", 24, "--rescore-dev", 12)  # fmt: skip
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def front3(wide_front, sk_fast) -> Path:
    out = sk_fast / "bundle-front3"
    if (out / "devices.json").is_file():  # made by another module of this worker
        return out
    assert cli("export", "--results", wide_front, "--bundle", "--front", 3, "--no-check-time", "--out", out) == 0
    return out


def test_spread_front_keeps_the_ends_and_the_answer_and_spreads_the_rest():
    from search.bundle import spread_front

    rows = [{"key": f"k{i}", "predicted_ms": float(i), "metric_value": 50.0 + i} for i in range(11)]
    assert [r["key"] for r in spread_front(rows, 3, "k7")] == ["k0", "k7", "k10"]
    assert [r["key"] for r in spread_front(rows, 5, "k3")] == ["k0", "k3", "k5", "k7", "k10"]  # ties: the faster
    assert [r["key"] for r in spread_front(rows, 3, None)] == ["k0", "k5", "k10"]
    assert [r["key"] for r in spread_front(rows, 1, "k7")] == ["k7"]  # the answer before the ends
    assert [r["key"] for r in spread_front(rows, 2, "k0")] == ["k0", "k10"]
    assert spread_front(rows, 0, "k7") == [] and len(spread_front(rows, 64, "k7")) == 11
    uneven = [
        {"key": f"u{i}", "predicted_ms": ms, "metric_value": float(i)} for i, ms in enumerate([1, 1.1, 1.2, 5, 9, 10])
    ]
    assert [r["key"] for r in spread_front(uneven, 4, "u1")] == ["u0", "u1", "u3", "u5"]  # 1.1 answer, ~5.5 -> 5


def test_the_bundle_carries_each_devices_front(wide_front, front3, capsys):
    from dynabert.evaluate import index_sha256, report_indices, seeded_subset
    from dynasearch_runtime.bundle import front, front_entry, load_front, read_index
    from search.results import read_results

    res = read_results(wide_front)
    rows = res.front.sort_values("predicted_ms")
    assert len(rows) >= 5, "the fixture's front is too small to show a spread"
    index = read_index(str(front3))
    assert index["version"] == 2 and index["front"]["configs"] == 3
    (e,) = index["devices"]
    assert e["front_size"] == len(rows)
    configs = front(index, e["name"])
    assert len(configs) == 3 and [c["predicted_ms"] for c in configs] == sorted(c["predicted_ms"] for c in configs)
    keys = [c["key"] for c in configs]
    assert keys[0] == rows.iloc[0]["key"]  # the fastest
    assert keys[-1] == rows.loc[rows["metric_full"].idxmax(), "key"]  # the most accurate
    assert e["key"] in keys and [c["answer"] for c in configs] == [k == e["key"] for k in keys]
    full = dict(zip(rows["key"], rows["metric_full"]))
    pred = dict(zip(rows["key"], rows["predicted_ms"]))
    for c in configs:
        assert c["metric_value"] == full[c["key"]] and c["predicted_ms"] == pred[c["key"]]
        assert c["precision"] == "fp32" and c["file"] == f"models/{c['key']}-fp32/model.onnx"
        assert (front3 / c["file"]).is_file() and c["file"] in index["files"]
    assert len(index["models"]) == 3  # each distinct (config, precision) once: the answer's folder among them
    # which dev examples the metrics are on: replayable, and held out from the ranking
    rep = index["report"]
    assert rep["held_out"] and rep["recorded"] and rep["task"] == "sst2" and rep["data_dir"]
    assert (rep["dev_examples"], rep["search_dev"], rep["search_dev_seed"], rep["rescore_dev"], rep["examples"]) == (
        48, 24, 0, 12, 12
    )  # fmt: skip
    idx = report_indices(48, 24, 0, 12, rep["rescore_seed"])
    assert len(idx) == 12 and rep["sha256"] == index_sha256(idx)
    assert not set(idx) & set(seeded_subset(48, 24, 0))  # none of the examples the configs were ranked on
    assert res.meta["report_dev"]["sha256"] == rep["sha256"]
    # a model per front config, at the device's setting
    slow = configs[-1]
    entry = front_entry(index, e["name"], slow["key"])
    assert entry["file"] == slow["file"] and entry["check_ms"] is None and entry["threads"] == e["threads"]
    model = load_front(str(front3), e["name"], slow["key"])
    assert model.entry["key"] == slow["key"] and len(model.predict(TEXTS)) == 2


def test_the_bundles_front_from_the_loaders_command_line(front3, tmp_path):
    index = json.loads((front3 / "devices.json").read_text())
    r = subprocess.run([PYTHON, "-m", "dynasearch_bundle", ".", "--front"], cwd=front3, env=no_torch(tmp_path),
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"front of device {index['devices'][0]['name']} (fp32): 3 config(s), fastest first")
    assert [json.loads(line)["key"] for line in lines[1:]] == [c["key"] for c in index["devices"][0]["front"]]


def test_front_zero_is_todays_bundle(wide_front, fast_tmp):
    from dynasearch_runtime.bundle import BundleError, front, read_index

    out = fast_tmp / "b0"
    assert cli("export", "--results", wide_front, "--bundle", "--front", 0, "--no-check-time", "--out", out) == 0
    index = read_index(str(out))
    (e,) = index["devices"]
    assert index["front"]["configs"] == 0 and "front" not in e and "front_size" not in e
    assert list(index["models"]) == [f"models/{e['key']}-fp32"]  # the answer alone, as before
    with pytest.raises(BundleError, match=r"^\S+ was exported with --front 0: it holds each device's answer alone"):
        front(index, e["name"], bundle=str(out))


def test_a_version_1_bundle_still_loads_and_has_no_front(front3, tmp_path):
    import shutil
    import warnings

    from dynasearch_runtime.bundle import BundleError, front, load, no_front, read_index

    old = tmp_path / "v1"
    shutil.copytree(front3, old)
    index = json.loads((old / "devices.json").read_text())
    index["version"] = 1
    for k in ("front", "report"):
        del index[k]
    keep = {k for e in index["devices"] for k in (e["file"], e["model_dir"])}
    for e in index["devices"]:
        del e["front"], e["front_size"]
    index["files"] = {
        f: d for f, d in index["files"].items() if not f.startswith("models/") or f.rsplit("/", 1)[0] in keep
    }
    (old / "devices.json").write_text(json.dumps(index))
    got = read_index(str(old))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # measured on the fake machine, not this one
        assert got["version"] == 1 and len(load(str(old)).predict(TEXTS)) == 2
    assert no_front(got, str(old)).startswith(f"{old} is a version-1 bundle (written before bundles carried a front)")
    with pytest.raises(BundleError, match=r"is a version-1 bundle .*: it holds each device's answer alone, no front"):
        front(got, index["devices"][0]["name"], bundle=str(old))
    r = subprocess.run([PYTHON, "-m", "dynasearch_bundle", ".", "--front"], cwd=old, env=no_torch(tmp_path),
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "is a version-1 bundle" in err[0] and r.stdout == ""
    index["version"] = 3
    (old / "devices.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=r"is bundle version 3; this loader reads versions 1\.\.2 "):
        read_index(str(old))


def _damage(index: dict, what: str) -> None:
    e = index["devices"][0]
    c = e["front"][0]
    if what == "metric":
        c["metric_value"] = "high"
    elif what == "metric-huge":
        c["metric_value"] = 1e9
    elif what == "latency":
        c["predicted_ms"] = -1.0
    elif what == "measured":
        c["measured_ms"] = float("nan")
    elif what == "subnet":
        c["subnet"]["heads"][0] = 10**6
    elif what == "file":
        c["file"] = "models/nope-fp32/model.onnx"
    elif what == "precision":
        c["precision"] = "int8"
    elif what == "no-answer":
        for c in e["front"]:
            c["answer"] = False
    elif what == "missing":
        del c["key"]
    elif what == "too-many":
        index["front"]["configs"] = 2
    elif what == "configs":
        index["front"]["configs"] = 65
    elif what == "order":
        e["front"].reverse()
    elif what == "not-a-list":
        e["front"] = {"a": 1}
    elif what == "sha256":
        index["report"]["sha256"] = "xyz"
    elif what == "held_out":
        index["report"]["held_out"] = "no"
    elif what == "examples":
        index["report"]["examples"] = 0
    elif what == "front_size":
        e["front_size"] = -3
    elif what == "no-report":
        del index["report"]


@pytest.mark.parametrize(
    "what, message",
    [
        ("metric", r"has front\[0\]\.metric_value 'high'; it must be a number in \[-1e\+06, 1e\+06\]"),
        ("metric-huge", r"has front\[0\]\.metric_value 1000000000\.0; it must be a number in"),
        ("latency", r"has front\[0\]\.predicted_ms -1\.0; it must be a number in \(0, 3\.6e\+06\] ms"),
        ("measured", r"has front\[0\]\.measured_ms nan; it must be null or a number in \(0, 3\.6e\+06\] ms"),
        ("subnet", r"has front\[0\]\.subnet\.heads\[0\] 1000000; it must be an integer in 0\.\.1024"),
        ("file", r"front\[0\] has file 'models/nope-fp32/model\.onnx', which is not among the bundle's files"),
        ("precision", r"front\[0\] has precision 'int8'; it must be the entry's, 'fp32'"),
        ("no-answer", r"has a front with keys .* and answer\(s\) \[\]; its keys must be distinct and exactly one"),
        ("missing", r"front\[0\] lacks key"),
        ("too-many", r"has front .*; it must be a list of 1\.\.2 configs \(front\.configs\)"),
        ("configs", r"has front\.configs 65; it must be an integer in 0\.\.64"),
        ("order", r"has a front not ordered by predicted_ms .*; it must be fastest first"),
        ("not-a-list", r"has front \{'a': 1\}; it must be a list of 1\.\.3 configs"),
        ("sha256", r"report\.sha256 is 'xyz'; it must be null or a sha256 digest"),
        ("held_out", r"report\.held_out is 'no'; it must be true or false"),
        ("examples", r"has report\.examples 0; it must be null or an integer in 1\.\.1000000000"),
        ("front_size", r"has front_size -3; it must be null or an integer in 1\.\."),
        ("no-report", r"has report None; it must be a JSON object"),
    ],
)
def test_a_damaged_front_is_refused_in_one_line(front3, tmp_path, what, message):
    from dynasearch_runtime.bundle import BundleError, read_index

    index = json.loads((front3 / "devices.json").read_text())
    _damage(index, what)
    (tmp_path / "devices.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=message) as e:
        read_index(str(tmp_path))
    assert "\n" not in str(e.value) and str(e.value).endswith("(export the bundle again)")


def test_a_search_that_held_nothing_out_says_so(sk_results, fast_tmp):
    """sk_results ran without --search-dev: the report examples are the whole dev split, said so."""
    from dynabert.evaluate import index_sha256

    out = fast_tmp / "b"
    assert cli("export", "--results", sk_results, "--bundle", "--front", 2, "--no-check-time", "--out", out) == 0
    rep = json.loads((out / "devices.json").read_text())["report"]
    assert rep["held_out"] is False and rep["search_dev"] is None and rep["selection"] == "all"
    assert rep["examples"] == rep["dev_examples"] == 48 and rep["sha256"] == index_sha256(range(48))
    assert rep["note"].startswith("nothing was held out (the search ran without --search-dev)")


def test_a_process_that_imported_dynasearch_gets_the_installed_runtime(bundle, tmp_path):
    """Python imports a package once: a process that imported dynasearch (dynasearch_runtime) before the
    bundle's loader gets the installed runtime, which reads the bundle all the same; a process that did
    not gets the bundle's copy (test_bundle_loads_without_torch)."""
    import os

    code = f"""
import json, sys
import dynasearch_runtime                     # the installed package, first
sys.path.insert(0, {str(bundle)!r})
import dynasearch_bundle as b
m = b.load({str(bundle)!r})
print(json.dumps({{"runtime": sys.modules["dynasearch_runtime.bundle"].__file__, "n": len(m.predict(["good"]))}}))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = run_py(code, tmp_path, env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert Path(out["runtime"]).resolve().parent == (REPO / "dynasearch_runtime").resolve() and out["n"] == 1
