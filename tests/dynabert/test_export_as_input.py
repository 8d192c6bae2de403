"""Exported sub-networks as inputs (issue 15, item 6): an export is a model of its own.

The round trip of a new user: export a narrower and shallower sub-network (Hugging Face format) ->
`info` shows ITS shape -> train its teacher stage -> evaluate the default grid and width 1 depth 1
-> export it again at 1 x 1 (the model itself) and 0.5 x 0.5; never an interactive prompt, stdin
never read. Measure and search take its shape from `predictors.measure.load_shape`. A non-uniform
export (layers of different widths) has no grid: what needs multipliers is refused in one line
(cases in tests/test_cli_bad_input.py), what does not (explicit subnets, the teacher stage) works.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from exportkit import make_export
from tinymodels import random_ids, save_hf_model, tiny_bert_config, write_sst2_like

from dynabert.backbone import load_model
from dynabert.errors import InvalidSubnetError
from dynabert.extract import check_uniform, extract_subnet, model_shape
from dynabert.subnet import BackboneShape, SubnetConfig, grid_widths, paper_grid, uniform_widths
from dynasearch.cli import main

PROMPT = "Do you wish to run the custom code"
FAST = ["--batch-size", "16", "--max-seq-length", "32", "--no-progress"]
REPO = Path(__file__).resolve().parents[2]
# The tiny source: 4 layers, hidden 32, 8 heads of 4, FFN 64. Its export at width 0.5, depth 0.5:
# layers 0 and 2, 4 heads, FFN 32 -- a 2-layer, 4-head, FFN-32 backbone of its own.
EXPORT_SHAPE = BackboneShape(
    num_layers=2,
    num_heads=4,
    head_dim=4,
    hidden_size=32,
    intermediate_size=32,
    vocab_size=100,
    max_positions=64,
    type_vocab_size=2,
    num_labels=2,
    flavor="bert",
)
ITSELF = {"layers": [0, 1], "heads": [4, 4], "ffn": [32, 32]}


class NoStdin(io.TextIOBase):
    """sys.stdin for in-process CLI calls: every read is recorded (and fails), and the test then
    fails: nothing may ask the user (transformers' prompt catches the read's exception itself)."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def read(self, *a):
        self.reads += 1
        raise OSError("stdin was read")

    readline = read

    def isatty(self) -> bool:
        return True  # look like a terminal: a prompt would be shown on one


@pytest.fixture(autouse=True)
def no_stdin(monkeypatch):
    stdin = NoStdin()
    monkeypatch.setattr(sys, "stdin", stdin)
    yield
    assert stdin.reads == 0, "stdin was read"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-as-input")
    src = save_hf_model(root / "src", tiny_bert_config(layers=4, hidden=32, heads=8, ffn=64))
    return {"src": src, "data": write_sst2_like(root / "data", n_train=48, n_dev=16), "root": root}


@pytest.fixture(scope="module")
def small(assets):
    """`dynasearch export SRC --width 0.5 --depth 0.5 --format hf --out small`."""
    out = assets["root"] / "small"
    assert (
        main(["export", str(assets["src"]), "--width", "0.5", "--depth", "0.5", "--format", "hf", "--out", str(out)])
        == 0
    )
    return out


def _cli(capsys, *argv) -> str:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert PROMPT not in cap.out + cap.err
    return cap.out + cap.err


def _subprocess_cli(*argv) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "dynasearch", *map(str, argv)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---------------------------------------------------------------------------- its own shape
def test_export_config_names_its_own_shape(small):
    cfg = json.loads((small / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["intermediate_size"], cfg["head_dim"]) == (
        2,
        4,
        32,
        4,
    )
    assert cfg["layer_heads"] == [4, 4] and cfg["layer_ffn"] == [32, 32] and cfg["source_layers"] == [0, 2]
    assert "auto_map" in cfg  # still loads with plain transformers (trust_remote_code)


def test_shape_of_an_export_is_its_own(small):
    from predictors.measure import load_shape

    assert load_shape(small) == EXPORT_SHAPE  # what measure and search use (config.json only)
    model = load_model(small)
    assert model_shape(model) == EXPORT_SHAPE  # what info, train, evaluate and export use
    assert model.config.num_attention_heads == 4 and model.config.intermediate_size == 32
    assert SubnetConfig.from_grid(model_shape(model), 1.0, 1.0).to_dict() == ITSELF


def test_older_export_naming_its_source_shape_loads_as_its_own(assets, tmp_path):
    """Exports written before this fix kept num_attention_heads / intermediate_size of the source."""

    def older(cfg):
        cfg.update(num_attention_heads=8, intermediate_size=64)

    old = make_export(assets["src"], tmp_path / "old", {"layers": [0, 2], "heads": [4, 4], "ffn": [32, 32]}, older)
    model = load_model(old)
    assert model_shape(model) == EXPORT_SHAPE
    assert model.config.num_attention_heads == 4  # normalised: rewiring checks these


def test_info_shows_the_exports_own_shape_and_grid(small, capsys):
    out = _cli(capsys, "info", small)
    assert "2 layers, hidden 32, 4 heads x 4, FFN 32" in out and "8 heads" not in out and "FFN 64" not in out
    assert "cut from   layers 0,2" in out
    grid = [line.split() for line in out.splitlines() if line.strip().startswith(("1.00", "0.75", "0.50", "0.25"))]
    assert len(grid) == 12
    w, d, _key, layers, heads, ffn = grid[0][:6]
    assert (w, d, layers, heads, ffn) == ("1.00", "1.00", "0,1", "4", "32")  # width 1 depth 1: the export itself
    assert {(g[3], g[4], g[5]) for g in grid if g[0] == "0.25"} == {("0,1", "1", "8"), ("0", "1", "8")}


# ---------------------------------------------------------------------------- the round trip
def test_round_trip_train_evaluate_export(small, assets, tmp_path, capsys):
    run, data = tmp_path / "run", assets["data"]
    # train: in a child process with stdin closed (/dev/null), as the new user's log was captured
    p = _subprocess_cli(
        "train",
        "--model",
        small,
        "--task",
        "sst2",
        "--data-dir",
        data,
        "--out",
        run,
        "--stages",
        "teacher",
        "--max-steps",
        "2",
        *FAST,
    )
    assert p.returncode == 0, p.stderr
    assert PROMPT not in p.stdout + p.stderr and "custom code" not in p.stdout + p.stderr
    assert PROMPT not in (run / "train.log").read_text()
    rec = json.loads((run / "run.json").read_text())
    assert rec["backbone"] == EXPORT_SHAPE.to_dict()

    # evaluate the default grid (in-process, stdin that fails when read)
    _cli(capsys, "evaluate", run, "--data-dir", data)
    table = pd.read_csv(run / "eval" / "sst2-grid.csv")
    assert len(table) == 12
    assert table.loc[0, ["layers", "heads", "ffn"]].tolist() == ["0,1", "4,4", "32,32"]
    assert table["heads"].map(lambda h: max(map(int, str(h).split(",")))).max() == 4

    # width 1 depth 1 is the export itself, scored as built
    _cli(capsys, "evaluate", run, "--data-dir", data, "--width", "1", "--depth", "1", "--out", tmp_path / "ev")
    one = pd.read_csv(tmp_path / "ev" / f"sst2-{SubnetConfig.from_dict(ITSELF).key}.csv")
    assert len(one) == 1 and one.loc[0, "accuracy"] == table.loc[0, "accuracy"]

    # export again: 1 x 1 is the model itself (same logits), 0.5 x 0.5 is cut further
    again = tmp_path / "again"
    _cli(capsys, "export", run / "teacher", "--width", "1", "--depth", "1", "--format", "hf", "--out", again)
    assert json.loads((again / "subnet.json").read_text()) == ITSELF
    teacher, reloaded = load_model(run / "teacher"), load_model(again)
    feeds = random_ids(teacher, 2, 10)
    with torch.no_grad():
        assert torch.allclose(teacher(**feeds).logits, reloaded(**feeds).logits, atol=1e-6)
    half = tmp_path / "half"
    out = _cli(
        capsys, "export", run / "teacher", "--width", "0.5", "--depth", "0.5", "--format", "hf,onnx", "--out", half
    )
    assert "layers 0 heads 2 ffn 16" in out
    manifest = json.loads((half / "manifest.json").read_text())
    assert manifest["subnet"] == {"layers": [0], "heads": [2], "ffn": [16]}
    assert manifest["backbone"] == EXPORT_SHAPE.to_dict()
    assert model_shape(load_model(half)).num_heads == 2


def test_every_stage_trains_on_a_uniform_export(small, assets, tmp_path, capsys):
    """Rewiring and the width/depth stages take the export as their super-network."""
    from predictors.measure import load_shape

    run = tmp_path / "run"
    _cli(
        capsys,
        "train",
        "--model",
        small,
        "--task",
        "sst2",
        "--data-dir",
        assets["data"],
        "--out",
        run,
        "--max-steps",
        "1",
        *FAST,
    )
    assert load_shape(run / "width_depth") == EXPORT_SHAPE  # what `search RUN` and `measure` read
    assert model_shape(load_model(run / "rewired")) == EXPORT_SHAPE


def test_measure_records_the_exports_shape(small, tmp_path, capsys):
    records = tmp_path / "r.csv"
    _cli(
        capsys,
        "measure",
        small,
        "--out",
        records,
        "--backend",
        "torch",
        "--sampler",
        "grid",
        "--max-runs",
        "4",
        "--min-runs",
        "3",
        "--max-seconds",
        "0.1",
        "--seq-len",
        "8",
        "--no-progress",
    )
    rows = pd.read_csv(records)
    assert {json.loads(s)["num_heads"] for s in rows["shape"]} == {4}
    assert max(max(json.loads(s)["heads"]) for s in rows["subnet"]) == 4
    assert len(rows) == len({s.key for _, _, s in paper_grid(EXPORT_SHAPE)})


def test_tokenizer_of_an_export_loads_without_remote_code(small, capsys):
    from dynabert.data import load_tokenizer

    tok = load_tokenizer(small)  # the fixture's stdin fails when read
    assert tok.convert_tokens_to_ids(["w1"]) == [6]
    assert PROMPT not in capsys.readouterr().err


# ---------------------------------------------------------------------------- non-uniform exports
NON_UNIFORM = {"layers": [0, 3], "heads": [8, 2], "ffn": [64, 16]}


@pytest.fixture(scope="module")
def mixed(assets):
    return make_export(assets["src"], assets["root"] / "mixed", NON_UNIFORM)


def test_non_uniform_export_shape_is_its_widest_layer(mixed):
    model = load_model(mixed)
    assert not uniform_widths(model.config)
    shape = model_shape(model)
    assert (shape.num_layers, shape.num_heads, shape.intermediate_size) == (2, 8, 64)
    with pytest.raises(InvalidSubnetError, match=r"has layers of different widths \(heads 8,2, FFN 64,16 per layer\)"):
        check_uniform(model)
    with pytest.raises(InvalidSubnetError, match=r"layer 1 asks heads=8, ffn=64 .* has heads=2, ffn=16 there"):
        extract_subnet(model, SubnetConfig.full(shape))


def test_info_on_a_non_uniform_export_lists_its_layers_and_no_grid(mixed, capsys):
    out = _cli(capsys, "info", mixed)
    assert "layers     heads 8,2; FFN 64,16" in out and "paper grid: none" in out and "1.00   1.00" not in out


def test_non_uniform_export_teacher_stage_and_fitting_subnets_work(mixed, assets, tmp_path, capsys):
    run, data = tmp_path / "run", assets["data"]
    _cli(
        capsys,
        "train",
        "--model",
        mixed,
        "--task",
        "sst2",
        "--data-dir",
        data,
        "--out",
        run,
        "--stages",
        "teacher",
        "--max-steps",
        "1",
        *FAST,
    )
    fits = tmp_path / "fits.json"
    fits.write_text(json.dumps({"layers": [0, 1], "heads": [4, 2], "ffn": [32, 8]}))
    _cli(capsys, "evaluate", run, "--data-dir", data, "--subnet", fits)
    _cli(capsys, "export", run / "teacher", "--subnet", fits, "--format", "onnx", "--out", tmp_path / "cut")
    assert json.loads((tmp_path / "cut" / "subnet.json").read_text())["heads"] == [4, 2]


# ---------------------------------------------------------------------------- the shape rules
def test_from_config_uses_the_per_layer_widths():
    from dynabert.extract import shape_config

    cfg = shape_config(BackboneShape(num_layers=3, num_heads=12, head_dim=8, hidden_size=96, intermediate_size=384))
    assert BackboneShape.from_config(cfg).num_heads == 12 and uniform_widths(cfg)
    cfg.layer_heads, cfg.layer_ffn = [3, 3, 3], [96, 96, 96]
    shape = BackboneShape.from_config(cfg)
    assert (shape.num_heads, shape.head_dim, shape.intermediate_size) == (3, 8, 96) and uniform_widths(cfg)
    cfg.layer_heads = [3, 0, 3]
    assert BackboneShape.from_config(cfg).num_heads == 3 and not uniform_widths(cfg)


def test_grid_leaves_out_widths_that_keep_no_head():
    two = BackboneShape(num_layers=2, num_heads=2, head_dim=8, hidden_size=32, intermediate_size=32)
    assert grid_widths(two) == (1.0, 0.75, 0.5)
    assert len(paper_grid(two)) == 9
    with pytest.raises(
        InvalidSubnetError, match=r"keeps round\(2 \* 0.25\) = 0 heads; for 2 heads the width must be above 0.25"
    ):
        SubnetConfig.from_grid(two, 0.25, 1.0)
    none = BackboneShape(num_layers=2, num_heads=0, head_dim=8, hidden_size=32, intermediate_size=32)
    with pytest.raises(InvalidSubnetError, match="no attention heads in any layer"):
        SubnetConfig.from_grid(none, 1.0, 1.0)
    assert paper_grid(none) == []
