"""The bounds table (dynasearch_runtime/bounds.py, issue 23) and every file reader that takes a bounded
number through it:

(a) the table itself: describe, violation, check, parse, outside (a bool is not a number, NaN and
    infinities never pass, high= caps a kind's top);
(b) a property test: for EVERY bounded field of EVERY file kind dynasearch writes and reads back (latency
    records, predictor.json, search.json, trials.csv, front.csv, a multi-device search's devices.json, a
    bundle's devices.json, kit.json, run.json, the demo's steps.json), a real freshly written file with that field set to a value drawn from
    `outside(kind)` (and, where the backbone caps the kind, from just above its positions) is refused by
    its reader with the project's error type, in one line naming the field; the Protocol settings and
    the bundle loader's arguments alike;
(c) coverage: every number a fresh file of each kind holds is in its reader's field -> kind map, so a
    new field cannot skip the table;
(d) the issue's bundle examples (threads 10**12, load(threads=10**9), length 10**9).
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "search"))
from searchkit import predictor_records  # noqa: E402

from dynabert.errors import DynasearchError, ModelLoadError  # noqa: E402
from dynasearch_runtime.bounds import BOUNDS, check, describe, outside, parse, violation  # noqa: E402
from dynasearch_runtime.errors import BundleError, MeasurementError  # noqa: E402
from predictors.errors import PredictorError  # noqa: E402
from search.errors import ResultsError  # noqa: E402

pytest_plugins = ["searchkit"]  # sk_base, sk_data, sk_results (session fixtures)

EXAMPLES = 3  # hypothesis examples per file kind; each example draws one value for every field of the kind
POSITIONS = 64  # the tiny backbone's max_positions (tests/tinymodels.py): the cap of its sequence lengths
HYP = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ------------------------------------------------------------------------------------ (a) the table
def test_describe_says_the_range_and_its_unit():
    assert describe("threads") == "an integer in 1..1024"
    assert describe("latency_ms") == "a number in (0, 3.6e+06] ms"
    assert describe("share") == "a number in [0, 1]"
    assert describe("seq_len", high=512) == "an integer in 1..512"
    assert describe("seq_len", high=10**6) == "an integer in 1..8192"  # high= only lowers the top
    assert describe("threads", why=True).endswith(f"({BOUNDS['threads'].why})")


@pytest.mark.parametrize("kind", sorted(BOUNDS))
def test_every_kind_is_well_formed(kind):
    b = BOUNDS[kind]
    assert b.low < b.high and b.why and b.unit in ("", "ms", "s", "%", "/s")
    assert not b.integer or (isinstance(b.low, int) and isinstance(b.high, int))
    # the ends: low is inside unless the kind is open there, high always is
    assert violation(kind, b.high) is None and (violation(kind, b.low) is None) != b.low_open
    assert all(violation(kind, v) is not None for v in outside(kind)), outside(kind)
    assert outside(kind) and all(violation(kind, v, high=b.low + 1) is not None for v in outside(kind, b.low + 1))


@pytest.mark.parametrize("value", [True, False, None, "3", [3], float("nan"), float("inf"), -float("inf")])
def test_violation_refuses_what_is_not_a_finite_number(value):
    assert violation("threads", value) == "an integer in 1..1024"
    assert violation("latency_ms", value) == "a number in (0, 3.6e+06] ms"


def test_violation_at_the_edges_and_under_a_cap():
    assert violation("latency_ms", 0) is not None and violation("latency_ms", 1e-12) is None  # open at 0
    assert violation("share", 0) is None and violation("share", 1.0) is None and violation("share", 1.0001)
    assert violation("threads", 2.0) == "an integer in 1..1024"  # 2.0 is not an integer count
    assert violation("latency_ms", 2) is None  # an int is a number
    assert violation("seq_len", 512, high=512) is None
    assert violation("seq_len", 513, high=512) == "an integer in 1..512"


def test_check_raises_the_callers_error_in_one_line():
    assert check("batch", 8, "batch", BundleError) == 8
    with pytest.raises(BundleError, match=r"^threads must be an integer in 1\.\.1024; got 1000000000$"):
        check("threads", 10**9, "threads", BundleError)
    with pytest.raises(MeasurementError, match=r"^--seq-len must be an integer in 1\.\.64; got 65; cut it$"):
        check("seq_len", 65, "--seq-len", MeasurementError, high=64, hint="cut it")


@pytest.mark.parametrize(
    "kind, text, want",
    [("threads", "4", 4), ("threads", " 4 ", 4), ("latency_ms", "2.5", 2.5), ("latency_ms", "3", 3.0)],
)
def test_parse_reads_a_number_in_range(kind, text, want):
    got = parse(kind, text)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    "kind, text, message",
    [
        ("threads", "5.0", r"^must be an integer in 1\.\.1024; got '5\.0'$"),  # typed as a float: not a count
        ("threads", "0", r"^must be an integer in 1\.\.1024; got 0$"),
        ("threads", "two", r"^must be an integer in 1\.\.1024; got 'two'$"),
        ("latency_ms", "nan", r"^must be a number in \(0, 3\.6e\+06\] ms; got nan$"),
        ("latency_ms", "inf", r"^must be a number in \(0, 3\.6e\+06\] ms; got inf$"),
        ("latency_ms", "0", r"^must be a number in \(0, 3\.6e\+06\] ms; got 0$"),
    ],
)
def test_parse_refuses_in_one_line(kind, text, message):
    with pytest.raises(ValueError, match=message):
        parse(kind, text)
    with pytest.raises(ValueError, match=r"^must be an integer in 1\.\.512; got 513$"):
        parse("seq_len", "513", high=512)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(kind=st.sampled_from(sorted(BOUNDS)), data=st.data())
def test_inside_passes_and_outside_fails(kind, data):
    """A number drawn inside a kind's range passes (also as parse's text); one beyond either end fails."""
    b = BOUNDS[kind]
    if b.integer:
        v = data.draw(st.integers(b.low, b.high))
        beyond = data.draw(st.one_of(st.integers(max_value=b.low - 1), st.integers(min_value=b.high + 1)))
    else:
        v = data.draw(st.floats(b.low, b.high, exclude_min=b.low_open))
        beyond = data.draw(
            st.one_of(
                st.floats(max_value=b.low, exclude_max=not b.low_open, allow_nan=False),
                st.floats(min_value=b.high, exclude_min=True),
            )
        )
    assert violation(kind, v) is None and parse(kind, repr(v)) == v
    assert violation(kind, beyond) is not None


# ------------------------------------------------------------------- fresh files of every kind
def set_path(doc: Any, path: str, value: Any) -> None:
    """Set the value at dotted `path` of a JSON document ('*': the first item of a list or object),
    creating what is absent or null on the way (a field a fresh file leaves null)."""
    parts = path.split(".")
    node = doc
    for part, nxt in zip(parts, [*parts[1:], None]):
        if isinstance(node, list):
            key: Any = 0 if part == "*" else int(part)
            while len(node) <= key:
                node.append(None)
            inner = node[key]
        else:
            key = next(iter(node), "x") if part == "*" else part
            inner = node.get(key)
        if nxt is None:
            node[key] = value
        elif isinstance(inner, (dict, list)):
            node = inner
        else:
            node[key] = [] if nxt == "*" or nxt.isdigit() else {}
            node = node[key]


def numbers(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """The path (a tuple of keys and indices) of every number of a JSON document (bools are not numbers)."""
    if isinstance(doc, bool) or doc is None:
        return []
    if isinstance(doc, (int, float)):
        return [prefix]
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    return [p for k, v in items for p in numbers(v, (*prefix, str(k)))]


def covered(path: tuple, patterns: list[str]) -> bool:
    """`path` matches one of the dotted patterns ('*' matches any one key or index)."""
    return any(
        len(p.split(".")) == len(path) and all(a in ("*", b) for a, b in zip(p.split("."), path)) for p in patterns
    )


def cell(value: Any) -> str:
    """A value as a CSV cell shows it (True as 'True', NaN as 'nan')."""
    return value if isinstance(value, str) else repr(value)


def write_csv_cell(text: str, column: str, value: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    rows[1][rows[0].index(column)] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


@dataclass
class FileKind:
    """A file kind: its bounded fields (path, kind), how to write a fresh copy with one field changed
    into a folder, its reader and the error the reader raises."""

    name: str
    fields: list[tuple[str, str]]
    # (folder, field path, value): the kind's file(s) written into folder with that field set (None: as written)
    damage: Callable[[Path, str | None, Any], None]
    read: Callable[[Path], Any]  # the reader, on that folder
    error: type
    capped: set[str] = field(default_factory=set)  # fields the backbone's positions also cap


def _json_kind(name, fields, fresh: dict, filename: str, read, error, capped=(), extra=()) -> FileKind:
    """A JSON file kind: `fresh` is the freshly written document; `extra` files are copied beside it."""

    def damage(folder: Path, path: str | None, value: Any) -> None:
        doc = json.loads(json.dumps(fresh))
        if path is not None:
            set_path(doc, path, value)
        (folder / filename).write_text(json.dumps(doc))
        for src in extra:
            if not (folder / src.name).exists():
                shutil.copy(src, folder / src.name)

    return FileKind(name, list(fields), damage, read, error, set(capped))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bounds")


@pytest.fixture(scope="module")
def fresh(work, sk_base, sk_data, sk_results) -> dict[str, Any]:
    """Every file kind, freshly written by its own writer: records (append_rows), a hybrid predictor
    (LatencyPredictor.save: every hyper-parameter and parameter kind), a finished search (sk_results), a
    bundle of it (write_bundle), a kit (write_kit), run.json (run_record) and steps.json (the demo's _Steps)."""
    from dynabert.io import write_json
    from dynabert.runs import RunInputs, run_record
    from dynabert.space import SearchSpace, SpaceSpec
    from dynabert.tasks import get_task
    from dynabert.train_config import TrainConfig
    from dynasearch.demo import DemoConfig, _Steps, length_distribution
    from dynasearch_runtime.schema import append_rows
    from predictors import make_predictor, read_records
    from predictors.kit import write_kit
    from predictors.measure import load_shape
    from predictors.samplers import uniform_configs
    from search.bundle import write_bundle

    shape = load_shape(sk_base)
    out: dict[str, Any] = {"shape": shape, "results": sk_results}
    out["records"] = work / "records.csv"
    append_rows(str(out["records"]), predictor_records(sk_base))
    out["predictor"] = make_predictor("hybrid").fit(read_records(out["records"])).save(work / "predictor")
    out["bundle"] = work / "bundle"
    write_bundle(sk_results, out["bundle"], progress=False)
    out["kit"] = work / "kit"
    write_kit(out["kit"], shape, uniform_configs(SearchSpace.default(shape), 1, seed=0), seq_lens=[8], progress=False)
    space = SpaceSpec(head_choices=(1, 2), ffn_choices=(16, 32), min_layers=1).to_dict()
    cfg = TrainConfig(space=space, space_samples=2, stage_learning_rates={"depth": 1e-4}, stage_epochs={"width": 1.0})
    spec = get_task("sst2")
    out["run"] = work / "run"
    write_json(out["run"] / "run.json", run_record(RunInputs(out["run"], spec), spec, cfg, shape, sk_base, 87, 9))
    out["demo"] = work / "demo"
    out["demo"].mkdir()
    steps = _Steps(out["demo"])
    steps.run("train", lambda: None)
    steps.finish("train")
    lengths = length_distribution(DemoConfig(task="sst2", data_dir=sk_data, max_seq_length=32), sk_base)
    steps.finish("score", lengths=lengths)
    fit = dict(best="lut", n_train=40, n_test=18, mape=3.5, within_5=0.75, kendall_tau=0.9, max_ape=12.0)
    steps.finish("fit", predictor=fit)
    steps.finish("search", target_ms=2.5, met=True)
    steps.finish("export", key="0123456789ab")
    int8 = dict(key="0123456789ab", metric_fp32=80.0, metric_int8=79.5, metric_diff=-0.5, metric_diff_95=[-1.0, 0.0],
                examples=48, fp32_ms=2.0, int8_ms=1.2, speedup=1.67, quantise_s=0.4)  # fmt: skip
    steps.finish("int8", result=int8)
    return out


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# What search.devices.run_devices writes per device beside the numbers DEVICES_BOUNDS holds.
DEVICE_ENTRY_WORDS = {"name", "precision", "label", "results", "predictor", "setting", "verified_here", "this_machine",
                      "how_to_verify", "answer", "met", "message", "int8_on_fp32_fronts"}  # fmt: skip


def devices_index(results: Path) -> dict:
    """A multi-device search's devices.json in run_devices' layout, its one device being the search at
    `results` (a real multi-device search costs two searches; test_every_number_a_devices_entry_records_is_bounded
    keeps this layout honest)."""
    from search.devices import DEVICES_FORMAT

    meta = _read_json(results / "search.json")
    entry = dict(name="cpu", precision="fp32", label="cpu", results="cpu", predictor="/p", setting=meta["fingerprint"],
                 target_ms=meta["study"]["target_ms"], verified_here=False, this_machine=False, how_to_verify=None,
                 answer=meta["answer"], met=meta["met"], message=meta["message"], evaluations_new=12,
                 evaluation_calls=12, warm_started_with=0, int8_on_fp32_fronts=False,
                 distinct_configs=meta["summary"]["distinct_configs"])  # fmt: skip
    return {"format": DEVICES_FORMAT, "devices": [entry], "distinct_configs_evaluated": 12, "precision": {}}


@pytest.fixture(scope="module")
def file_kinds(fresh) -> dict[str, FileKind]:
    from dynabert.runs import RUN_BOUNDS, read_run_record
    from dynasearch.demo import STEP_BOUNDS, _Steps
    from dynasearch_runtime.bundle_index import INDEX_FIELDS, NUMBER_FIELDS, read_index
    from dynasearch_runtime.protocol import PROTOCOL_FIELDS
    from dynasearch_runtime.records_check import RECORD_BOUNDS
    from dynasearch_runtime.runner import KIT_FIELDS, KIT_SHAPE_FIELDS, read_kit
    from dynasearch_runtime.schema import read_rows
    from predictors import load_predictor
    from predictors._predictor_file import SECTION_BOUNDS
    from search.devices import read_devices
    from search.results import read_results
    from search.results_bounds import DEVICES_BOUNDS, SEARCH_BOUNDS, TRIAL_BOUNDS

    kinds: dict[str, FileKind] = {}
    # records: a number column, or a setting inside the protocol cell (JSON)
    records_text = fresh["records"].read_text()

    def damage_records(folder: Path, path: str | None, value: Any) -> None:
        if path is None:
            text = records_text
        elif path.startswith("protocol."):
            rows = list(csv.reader(io.StringIO(records_text)))
            proto = json.loads(rows[1][rows[0].index("protocol")])
            set_path(proto, path.split(".", 1)[1], value)
            text = write_csv_cell(records_text, "protocol", json.dumps(proto))
        else:
            text = write_csv_cell(records_text, path, cell(value))
        (folder / "records.csv").write_text(text)

    fields = list(RECORD_BOUNDS.items()) + [(f"protocol.{p}", k) for p, k, _ in PROTOCOL_FIELDS]
    kinds["records"] = FileKind(
        "records", fields, damage_records, lambda d: read_rows(str(d / "records.csv")), MeasurementError, {"seq_len"}
    )
    pred = fresh["predictor"]
    fields = [(f"{section}.{p}", k) for section, fs in SECTION_BOUNDS.items() for p, k, _ in fs]
    kinds["predictor.json"] = _json_kind(
        "predictor.json", fields, _read_json(pred / "predictor.json"), "predictor.json", load_predictor,
        PredictorError, extra=[pred / "arrays.npz"],
    )  # fmt: skip
    res = fresh["results"]
    tables = [res / "trials.csv", res / "front.csv"]
    kinds["search.json"] = _json_kind(
        "search.json", [(p, k) for p, k, _ in SEARCH_BOUNDS], _read_json(res / "search.json"), "search.json",
        read_results, ResultsError, capped={"study.latency.seq_len", "fingerprint.seq_len", "study.max_seq_length"}, extra=tables,
    )  # fmt: skip
    for table in tables:

        def damage_table(folder: Path, path: str | None, value: Any, table: Path = table) -> None:
            for src in (res / "search.json", *tables):
                shutil.copy(src, folder / src.name)
            if path is not None:
                (folder / table.name).write_text(write_csv_cell(table.read_text(), path, cell(value)))

        kinds[table.name] = FileKind(table.name, list(TRIAL_BOUNDS.items()), damage_table, read_results, ResultsError)
    fields = [(f"devices.*.{p}", k) for p, k, _ in NUMBER_FIELDS] + [(p, k) for p, k, _ in INDEX_FIELDS]
    kinds["devices.json"] = _json_kind(
        "devices.json", fields, _read_json(fresh["bundle"] / "devices.json"), "devices.json", read_index,
        BundleError, capped={"devices.*.length"},
    )  # fmt: skip
    kit = _read_json(fresh["kit"] / "kit.json")

    def damage_kit(folder: Path, path: str | None, value: Any) -> None:
        doc = json.loads(json.dumps(kit))
        if path is None:
            pass
        elif path.startswith("shape."):  # the backbone shape, a JSON text inside kit.json
            shape = json.loads(doc["shape"])
            set_path(shape, path.split(".", 1)[1], value)
            doc["shape"] = json.dumps(shape)
        else:
            set_path(doc, path, value)
        (folder / "kit.json").write_text(json.dumps(doc))

    fields = [(p, k) for p, k, _ in KIT_FIELDS] + [(f"shape.{p}", k) for p, k, _ in KIT_SHAPE_FIELDS]
    kinds["kit.json"] = FileKind("kit.json", fields, damage_kit, read_kit, MeasurementError, {"seq_len.*"})
    kinds["run.json"] = _json_kind(
        "run.json", [(p, k) for p, k, _ in RUN_BOUNDS], _read_json(fresh["run"] / "run.json"), "run.json",
        read_run_record, ModelLoadError,
    )  # fmt: skip
    kinds["results devices.json"] = _json_kind(
        "results devices.json", [(p, k) for p, k, _ in DEVICES_BOUNDS], devices_index(fresh["results"]),
        "devices.json", read_devices, ResultsError,
    )  # fmt: skip
    kinds["steps.json"] = _json_kind(
        "steps.json", [(p, k) for p, k, _ in STEP_BOUNDS], _read_json(fresh["demo"] / "steps.json"), "steps.json",
        _Steps, DynasearchError,
    )  # fmt: skip
    return kinds


FILE_KINDS = ["records", "predictor.json", "search.json", "trials.csv", "front.csv", "results devices.json",
              "devices.json", "kit.json", "run.json", "steps.json"]  # fmt: skip


def named(path: str, message: str) -> bool:
    """The message names the field: every part of its path but the '*' items, in order."""
    at = 0
    for part in (p for p in path.split(".") if p != "*"):
        at = message.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def refused(fk: FileKind, folder: Path, path: str, value: Any) -> None:
    for p in folder.iterdir():
        p.unlink()
    fk.damage(folder, path, value)
    with pytest.raises(fk.error) as e:
        fk.read(folder)
    message = str(e.value)
    assert "\n" not in message and named(path, message), f"{fk.name} {path}={value!r}: {message}"


def test_search_json_answer_and_evaluation_length_fit_the_searched_backbone(file_kinds, fresh, work):
    """search.json's answer is a sub-network of the searched backbone and its evaluation length within its
    positions (issue 23 attack: a layer 99, 5 heads of 4, an FFN of 65 of 64, depth 4 of 3 and an evaluation
    length of 999 on 64 positions were read as they were); the backbone's own numbers still read."""
    fk = file_kinds["search.json"]
    shape = fresh["shape"]
    folder = Path(tempfile.mkdtemp(dir=work))
    for path, value in (
        ("answer.subnet.layers.0", shape.num_layers),
        ("answer.subnet.heads.0", shape.num_heads + 1),
        ("answer.subnet.ffn.0", shape.intermediate_size + 1),
        ("answer.depth", shape.num_layers + 1),
        ("study.max_seq_length", POSITIONS + 1),
    ):
        refused(fk, folder, path, value)
        assert "the backbone's" in str(pytest.raises(fk.error, fk.read, folder).value)
    for path, value in (("answer.subnet.heads.0", shape.num_heads), ("study.max_seq_length", POSITIONS)):
        for p in folder.iterdir():
            p.unlink()
        fk.damage(folder, path, value)
        fk.read(folder)


# ------------------------------------------------------------ (b) every bounded field of every kind
@pytest.mark.parametrize("name", FILE_KINDS)
def test_fresh_files_read(file_kinds, name, work):
    """The files as written read: what the property test refuses is the value it sets, not the file."""
    fk = file_kinds[name]
    folder = Path(tempfile.mkdtemp(dir=work))
    fk.damage(folder, None, None)
    fk.read(folder)


@pytest.mark.parametrize("name", FILE_KINDS)
def test_every_bounded_field_refuses_numbers_outside_its_kind(file_kinds, name, work):
    """For every field of the kind, a value drawn from outside(kind) (and, where the backbone caps the
    kind, from just above its positions) in a freshly written file: the reader refuses it, one line
    naming the field, with the project's error type."""
    fk = file_kinds[name]
    folder = Path(tempfile.mkdtemp(dir=work))

    @HYP
    @given(data=st.data())
    def prop(data):
        for path, kind in fk.fields:
            values = outside(kind) + (outside(kind, POSITIONS)[:2] if path in fk.capped else [])
            refused(fk, folder, path, data.draw(st.sampled_from(values), label=path))

    prop()


@pytest.mark.parametrize("name", FILE_KINDS)
def test_both_ends_of_every_field(file_kinds, name, work):
    """The two values just outside every field's range (below its low end, above its top), whatever the
    property test drew, and the backbone's cap."""
    fk = file_kinds[name]
    folder = Path(tempfile.mkdtemp(dir=work))
    for path, kind in fk.fields:
        for value in outside(kind)[:2] + (outside(kind, POSITIONS)[1:2] if path in fk.capped else []):
            refused(fk, folder, path, value)


def test_protocol_settings_are_bounded():
    from dynasearch_runtime.protocol import PROTOCOL_BOUNDS, Protocol

    for name, kind in PROTOCOL_BOUNDS.items():
        base = {"clock": "cpu"} if name == "min_quiet_runs" else {}  # min_quiet_runs needs the cpu clock
        for value in outside(kind):
            with pytest.raises(MeasurementError, match=rf"^protocol setting {name} must be ") as e:
                Protocol(**base, **{name: value})
            assert "\n" not in str(e.value)
    with pytest.raises(MeasurementError, match=r"^protocol setting max_runs must be >= min_runs \(9\); got 8$"):
        Protocol(min_runs=9, max_runs=8)  # how they relate stays Protocol's own check


@pytest.mark.parametrize("arg, kind", [("threads", "threads"), ("batch", "batch")])
def test_load_arguments_are_bounded(tmp_path, arg, kind):
    from dynasearch_runtime.bundle import load

    for value in outside(kind):
        with pytest.raises(BundleError, match=rf"^{arg} must be {describe(kind)}; got "):
            load(tmp_path / "no-bundle", **{arg: value})  # refused before the bundle is read


# ------------------------------------------------------------------------------- (c) coverage
def test_every_number_column_of_the_records_is_bounded():
    from dynasearch_runtime.records_check import RECORD_BOUNDS
    from dynasearch_runtime.schema import RECORD_FIELDS

    numeric = {name for name, typ, _ in RECORD_FIELDS if typ in ("int", "float")}
    assert numeric == set(RECORD_BOUNDS), numeric ^ set(RECORD_BOUNDS)
    assert all(kind in BOUNDS for kind in RECORD_BOUNDS.values())


def test_every_protocol_and_train_config_number_is_bounded():
    from dynabert.train_config import CONFIG_BOUNDS, STAGE_KINDS, TrainConfig
    from dynasearch_runtime.protocol import PROTOCOL_BOUNDS, Protocol

    numeric = {f.name for f in dataclasses.fields(Protocol) if f.type in ("int", "float")}
    assert numeric == set(PROTOCOL_BOUNDS)
    numeric = {f.name for f in dataclasses.fields(TrainConfig) if any(t in f.type for t in ("int", "float"))}
    assert numeric == set(CONFIG_BOUNDS) | set(STAGE_KINDS) | {"widths", "depths"}


# Numbers that are not quantities the bounds table describes: format versions (each reader checks its own),
# the arrays' shapes in predictor.json (checked against arrays.npz itself) and a fit's intercepts (finite,
# of any sign: _predictor_file.PARAM_KEYS).
NOT_BOUNDED = ["version", "kit_version", "format", "study.version", "arrays.*.shape.*", "params.init", "params.base_ms"]


def _patterns(fk: FileKind) -> list[str]:
    return [p for p, _ in fk.fields] + NOT_BOUNDED


@pytest.mark.parametrize("name, file", [
    ("predictor.json", "predictor/predictor.json"), ("devices.json", "bundle/devices.json"),
    ("kit.json", "kit/kit.json"), ("run.json", "run/run.json"), ("steps.json", "demo/steps.json"),
])  # fmt: skip
def test_every_number_of_a_fresh_json_file_is_bounded(file_kinds, work, name, file):
    doc = _read_json(work / file)
    loose = [".".join(p) for p in numbers(doc) if not covered(p, _patterns(file_kinds[name]))]
    assert not loose, f"{name}: numbers without a kind in its reader's map: {loose}"
    if name == "kit.json":  # its shape is a JSON text
        shape = json.loads(doc["shape"])
        assert not [p for p in numbers(shape) if not covered(("shape", *p), _patterns(file_kinds[name]))]


def test_every_number_of_a_fresh_search_is_bounded(file_kinds, fresh):
    doc = _read_json(fresh["results"] / "search.json")
    loose = [".".join(p) for p in numbers(doc) if not covered(p, _patterns(file_kinds["search.json"]))]
    assert not loose, f"search.json: numbers without a kind in results_bounds.SEARCH_BOUNDS: {loose}"
    from search.results import TRIAL_COLUMNS
    from search.results_bounds import TRIAL_BOUNDS

    def is_number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    numeric = set()
    for table in ("trials.csv", "front.csv"):
        rows = list(csv.DictReader(io.StringIO((fresh["results"] / table).read_text())))
        numeric |= {c for c in TRIAL_COLUMNS if all(is_number(r[c]) for r in rows if r[c]) and any(r[c] for r in rows)}
    assert numeric <= set(TRIAL_BOUNDS) <= set(TRIAL_COLUMNS), numeric - set(TRIAL_BOUNDS)


def test_every_number_a_devices_entry_records_is_bounded(file_kinds, fresh):
    """Every key run_devices writes in a device's entry of RESULTS/devices.json is a number DEVICES_BOUNDS
    holds or one of the words it records; the fixture's index holds every one of them."""
    import search.devices as devices
    from search.results_bounds import DEVICES_BOUNDS

    tree = ast.parse(Path(devices.__file__).read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "run_devices")
    dicts = [
        {k.value for k in d.keys if isinstance(k, ast.Constant)} for d in ast.walk(node) if isinstance(d, ast.Dict)
    ]
    keys = next(d for d in dicts if "evaluations_new" in d)  # a device's entry
    mapped = {p.split(".")[2] for p, _, _ in DEVICES_BOUNDS if p.startswith("devices.*.")}
    assert keys - DEVICE_ENTRY_WORDS == mapped - {"setting", "answer"}, keys ^ mapped
    doc = devices_index(fresh["results"])
    assert set(doc["devices"][0]) == keys
    loose = [".".join(p) for p in numbers(doc) if not covered(p, _patterns(file_kinds["results devices.json"]))]
    assert not loose, loose


def test_every_number_the_demo_steps_record_is_bounded():
    """steps.json's fit and int8 entries are what `_fit` and `int8_of_answer` return (too slow to run here):
    every key of the dict they build is in STEP_BOUNDS, or one of their two strings."""
    import dynasearch.demo as demo

    tree = ast.parse(Path(demo.__file__).read_text())
    for fn, prefix in (("_fit", "fit.predictor."), ("int8_of_answer", "int8.result.")):
        node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == fn)
        keys = {
            k.value for d in ast.walk(node) if isinstance(d, ast.Dict) for k in d.keys if isinstance(k, ast.Constant)
        }
        mapped = {p[len(prefix) :].split(".")[0] for p, _, _ in demo.STEP_BOUNDS if p.startswith(prefix)}
        assert keys - {"best", "key"} == mapped, (fn, keys ^ mapped)


# ------------------------------------------------------------------------------ (d) the examples
@pytest.fixture
def bundle_copy(fresh, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(fresh["bundle"], copy)
    return copy


def _edit_entry(bundle: Path, **values) -> None:
    index = _read_json(bundle / "devices.json")
    index["devices"][0].update(values)
    (bundle / "devices.json").write_text(json.dumps(index))


def test_bundle_threads_beyond_any_machine_is_one_line(bundle_copy, capsys):
    """devices.json's "threads": 10**12 ended in onnxruntime's TypeError traceback: now the loader refuses it."""
    from dynasearch_runtime.bundle import load
    from dynasearch_runtime.bundle_cli import main

    _edit_entry(bundle_copy, threads=10**12)
    with pytest.raises(BundleError, match=r"has threads 1000000000000; it must be an integer in 1\.\.1024 ") as e:
        load(bundle_copy)
    assert "\n" not in str(e.value) and "devices[0]" in str(e.value)
    assert main([str(bundle_copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dynasearch_bundle: error: ") and "threads 1000000000000" in err[0]


@pytest.mark.parametrize("arg", ["threads", "batch"])
def test_load_with_a_billion_threads_or_texts_is_refused(fresh, arg):
    """load(BUNDLE, threads=10**9) ended in MemoryError (std::bad_alloc): now BundleError before any session."""
    from dynasearch_runtime.bundle import load

    with pytest.raises(BundleError, match=rf"^{arg} must be an integer in 1\.\.\d+; got 1000000000$"):
        load(fresh["bundle"], **{arg: 10**9})


@pytest.mark.parametrize("length", [10**9, POSITIONS + 1])
def test_bundle_length_beyond_the_backbones_positions_is_refused(bundle_copy, length):
    """ "length": 10**9 loaded and predicted (the tokenizer cut the texts); the backbone has 64 positions."""
    from dynasearch_runtime.bundle import load

    _edit_entry(bundle_copy, length=length)
    with pytest.raises(
        BundleError,
        match=rf"has length {length}; it must be an integer in 1\.\.{POSITIONS} \(the backbone's positions\)",
    ) as e:
        load(bundle_copy)
    assert "\n" not in str(e.value)
    _edit_entry(bundle_copy, length=POSITIONS)  # the positions themselves are fine
    from dynasearch_runtime.bundle_index import read_index

    assert read_index(str(bundle_copy))["devices"][0]["length"] == POSITIONS


def test_a_negative_value_after_an_option_reaches_the_options_own_check(tmp_path, capsys):
    """'--slo -5ms' got argparse's "expected one argument"; glued to '--slo=-5ms' it gets the latency check."""
    from dynasearch_runtime.bounds import glue_negative_values
    from dynasearch_runtime.bundle_cli import main

    assert glue_negative_values(["b", "--slo", "-5ms", "--serve", "-v", "--x=1", "-.5"]) == [
        "b",
        "--slo=-5ms",
        "--serve",
        "-v",
        "--x=1",
        "-.5",
    ]
    assert main([str(tmp_path), "--serve", "--slo", "-5ms"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dynasearch_bundle: error: latency '-5ms' is negative; a target is a positive time, e.g. 5ms"], err
