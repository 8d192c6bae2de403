"""`dynasearch query` (search/results.py, dynasearch/commands/query.py): answers from a results
directory alone, without torch; bad results directories are one-line errors naming the file."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit

from searchkit import REPO, cli, copy_results, subprocess_env  # noqa: E402

from search.errors import NoAnswerError, ResultsError, SearchError
from search.results import VERSION, describe_answer, load_results, query, read_results, reported_on, write_results

pytest_plugins = [
    "searchkit"
]  # its session fixtures, shared by every module (importing them would copy them per module)

NO_TORCH = """
import json, sys
from dynasearch.cli import main
rc = main(["query", sys.argv[1], "--target-latency", "4ms", "--json"])
heavy = sorted(m for m in ("torch", "transformers", "optuna", "onnxruntime") if m in sys.modules)
print(json.dumps({"rc": rc, "heavy": heavy}), file=sys.stderr)
"""


def test_query_answers_without_importing_torch(sk_results):
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(sk_results)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    wall = time.monotonic() - t0
    status = json.loads(p.stderr.strip().splitlines()[-1])
    assert status == {"rc": 0, "heavy": []}, p.stderr
    ans = json.loads(p.stdout)
    assert ans["predicted_ms"] <= 4.0 and ans["verified"] is False and ans["measured_ms"] is None
    assert ans["metric"] == "accuracy" and ans["target_ms"] == 4.0
    assert wall < 10, f"query took {wall:.1f} s (the < 2 s target is the benchmark's)"


def test_query_text_says_not_verified(sk_results, capsys):
    assert cli("query", sk_results, "--target-latency", "4ms") == 0
    out = capsys.readouterr().out
    assert "best config under 4 ms" in out and "not verified" in out


def test_query_json_matches_the_library(sk_results, capsys):
    assert cli("query", sk_results, "--target-latency", "4ms", "--json") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    ans = json.loads(lines[0])
    assert ans == json.loads(json.dumps(query(sk_results, 4.0)))
    _, trials, front = load_results(sk_results)
    assert ans["key"] in set(front["key"])
    feasible = front[front["predicted_ms"] <= 4.0]
    best = feasible["metric_full"].fillna(feasible["metric_search"]).max()
    assert ans["metric_full"] == pytest.approx(best)


def test_query_below_the_fastest_config_exits_1(sk_results, capsys):
    """It ran and found no answer: exit 1 (as `search`), not 2 (bad input); one line on stderr."""
    assert cli("query", sk_results, "--target-latency", "10us") == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("dynasearch query: no answer: no config of the front meets 0.01 ms; the fastest is"), err
    assert "(predicted)" in err
    with pytest.raises(NoAnswerError, match=r"no config of the front meets 0\.01 ms"):
        query(sk_results, 0.01)


def test_device_query_without_answer_names_each_precision_once(sk_results, fast_tmp, capsys):
    """A device with an fp32 and an int8 entry, neither meeting the target (issue 23): one 'no config'
    sentence for the device, then each precision's own fastest config, named by its precision."""
    from search.devices import DEVICES_FORMAT

    out = fast_tmp / "multi"
    copy_results(sk_results, out / "cpu")
    r = read_results(copy_results(sk_results, out / "cpu-int8"))
    front = r.front.assign(predicted_ms=r.front["predicted_ms"] / 2)  # int8's fastest is another latency
    write_results(out / "cpu-int8", r.meta, r.trials, front)
    entries = [{"name": "cpu", "precision": p, "results": f} for p, f in (("fp32", "cpu"), ("int8", "cpu-int8"))]
    (out / "devices.json").write_text(json.dumps({"format": DEVICES_FORMAT, "version": 1, "devices": entries}))
    assert cli("query", out, "--device-name", "cpu", "--target-latency", "10us") == 1
    std, err = capsys.readouterr()
    assert std == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("dynasearch query: no answer: no config of device cpu meets 0.01 ms; the fastest fp32 ")
    assert err.count("no config") == 1, err
    assert err.count("fastest fp32 config") == err.count("fastest int8 config") == 1, err
    fp32_ms, int8_ms = (float(m) for m in re.findall(r"config is \S+ \([^)]*\) at ([\d.e-]+) ms", err))
    assert int8_ms == pytest.approx(fp32_ms / 2, rel=0.01), err


def test_export_results_below_the_fastest_config_exits_1(sk_results, fast_tmp, capsys):
    out = fast_tmp / "deploy"
    assert cli("export", "--results", sk_results, "--target-latency", "10us", "--format", "hf", "--out", out) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("dynasearch export: no answer: no config of the front meets 0.01 ms; the fastest is"), err
    assert not out.exists() and not [p for p in fast_tmp.iterdir() if p.name.startswith(".")]


def test_query_after_a_measured_miss_exits_1(sk_results, fast_tmp, capsys):
    """A front whose every config is measured slower than the target: no answer, exit 1."""
    d = copy_results(sk_results, fast_tmp / "r")
    r = read_results(d)
    trials, front = r.trials.copy(), r.front.copy()
    for df in (trials, front):
        df["measured_ms"] = df["predicted_ms"] * 10
        df["measured_raw_ms"] = df["predicted_ms"] * 10
    write_results(d, r.meta, trials, front)
    target = f"{float(front['predicted_ms'].max()) * 2:.6f}ms"
    assert cli("query", d, "--target-latency", target) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("dynasearch query: no answer: ") and "(measured)" in err and len(err.strip().splitlines()) == 1
    ), err


@pytest.mark.parametrize(
    "target, message", [("4", "has no unit"), ("4 parsecs", "unknown unit"), ("-4ms", "is negative")]
)
def test_query_bad_target(target, message, sk_results, capsys):
    assert cli("query", sk_results, f"--target-latency={target}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and repr(target) in err


def corrupt_search_json(d: Path):
    (d / "search.json").write_text('{"format": "dynasearch-search", "version": 1, "stu')
    return "search.json"


def foreign_search_json(d: Path):
    (d / "search.json").write_text(json.dumps({"format": "something-else"}))
    return "search.json"


def corrupt_trials(d: Path):
    (d / "trials.csv").write_bytes(b"trial,key\n\xff\xfe\x00garbage\n1,2,3,4,5\n")
    return "trials.csv"


def foreign_front(d: Path):
    (d / "front.csv").write_text("a,b,c\n1,2,3\n")
    return "front.csv"


def missing_front(d: Path):
    (d / "front.csv").unlink()
    return "front.csv"


def empty_trials(d: Path):
    (d / "trials.csv").write_text("")
    return "trials.csv"


@pytest.mark.parametrize(
    "damage", [corrupt_search_json, foreign_search_json, corrupt_trials, foreign_front, missing_front, empty_trials]
)
def test_query_damaged_results(damage, sk_results, fast_tmp, capsys):
    d = copy_results(sk_results, fast_tmp / "r")
    name = damage(d)
    with pytest.raises(ResultsError, match=name.replace(".", r"\.")):
        query(d, 4.0)
    assert cli("query", d, "--target-latency", "4ms") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err, err


def test_query_foreign_and_missing_directories(tmp_path, capsys):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    for d, message in (
        (tmp_path / "foreign", "not a dynasearch search results directory (no search.json)"),
        (tmp_path / "missing", "does not exist"),
    ):
        assert cli("query", d, "--target-latency", "4ms") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and str(d) in err
    assert not (tmp_path / "missing").exists()


def test_query_library_errors():
    with pytest.raises(SearchError, match=r"target latency must be a number in \(0, 3\.6e\+06\] ms; got 0"):
        query("anywhere", 0)


# ------------------------------------------------------------------ issue 15: the one results reader
def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(d.rglob("*"))}


def table_rows(d: Path, name: str) -> list[list[str]]:
    import csv
    import io

    return list(csv.reader(io.StringIO((d / name).read_text(), newline="")))


def put_rows(d: Path, name: str, rows: list[list[str]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    (d / name).write_text(buf.getvalue())


def set_cell(name: str, column: str, value: str, row: int = 1):
    def damage(d: Path):
        rows = table_rows(d, name)
        rows[row][rows[0].index(column)] = value
        put_rows(d, name, rows)

    return damage


def edit_meta(edit):
    def damage(d: Path):
        meta = json.loads((d / "search.json").read_text())
        edit(meta)
        (d / "search.json").write_text(json.dumps(meta))

    return damage


def drop_column(name: str, column: str):
    def damage(d: Path):
        rows = table_rows(d, name)
        i = rows[0].index(column)
        put_rows(d, name, [r[:i] + r[i + 1 :] for r in rows])

    return damage


def as_version_1(d: Path):
    """What a version-1 writer left: no tables digests."""
    edit_meta(lambda m: (m.update(version=1), m.pop("tables")))(d)


HEADS_99 = json.dumps({"layers": [0], "heads": [99], "ffn": [16]})
READER_DAMAGE = [
    # search.json: keys present with their types
    (
        "no-study",
        edit_meta(lambda m: m.pop("study")),
        r"search\.json lacks key 'study' \(a JSON object with key 'study\.task'",
    ),
    (
        "no-metric",
        edit_meta(lambda m: m["study"].pop("metric")),
        r"search\.json lacks key 'study\.metric' \(a non-empty string\)",
    ),
    (
        "empty-metric",
        edit_meta(lambda m: m["study"].update(metric="")),
        r"key 'study\.metric' must be a non-empty string; got \"\"",
    ),
    ("no-model-dir", edit_meta(lambda m: m["study"].pop("model_dir")), r"lacks key 'study\.model_dir'"),
    (
        "latency-a-list",
        edit_meta(lambda m: m["study"].update(latency=[1, 16])),
        r"key 'study\.latency' must be a JSON object; got \[1, 16\]",
    ),
    (
        "seq-len-zero",
        edit_meta(lambda m: m["study"]["latency"].update(seq_len=0)),
        r"'study\.latency\.seq_len' must be an integer in 1\.\.8192; got 0",
    ),
    (
        "target-inf",
        edit_meta(lambda m: m["study"].update(target_ms=float("inf"))),
        r"'study\.target_ms' must be null or a number in \(0, 3\.6e\+06\] ms; got inf",
    ),
    (
        "percentile",
        edit_meta(lambda m: m["study"].update(percentile="p99")),
        r"'study\.percentile' must be one of p50, p90; got \"p99\"",
    ),
    ("raw-a-word", edit_meta(lambda m: m.update(raw="no")), r"key 'raw' must be true or false; got \"no\""),
    (
        "summary-trials-a-float",
        edit_meta(lambda m: m["summary"].update(trials=30.0)),
        r"'summary\.trials' must be an integer in 1\.\.1000000000; got 30\.0",
    ),
    (
        "shape-unknown-key",
        edit_meta(lambda m: m["study"]["space"]["shape"].update(color=1)),
        r"'study\.space\.shape' has unknown key\(s\) \['color'\]",
    ),
    (
        "shape-flavor",
        edit_meta(lambda m: m["study"]["space"]["shape"].update(flavor="gpt2")),
        r"'study\.space\.shape\.flavor' must be one of bert, roberta; got \"gpt2\"",
    ),
    (
        "shape-bool-layers",
        edit_meta(lambda m: m["study"]["space"]["shape"].update(num_layers=True)),
        r"'study\.space\.shape\.num_layers' must be an integer in 1\.\.1024; got true",
    ),
    (
        "ffn-choice-beyond",
        edit_meta(lambda m: m["study"]["space"].update(ffn_choices=[16, 9999])),
        r"'study\.space' is not a valid search space: FFN choices \[9999\] outside 0\.\.64",
    ),
    ("answer-without-key", edit_meta(lambda m: m.update(answer={"subnet": {}})), r"lacks key 'answer\.key'"),
    (
        "digest-not-hex",
        edit_meta(lambda m: m["tables"].update({"front.csv": "abc"})),
        r"key 'tables\.front\.csv' must be a sha256 digest \(64 hexadecimal digits\); got \"abc\"",
    ),
    # versions
    (
        "newer-version",
        edit_meta(lambda m: m.update(version=VERSION + 1)),
        rf"results format version {VERSION + 1}, newer than this dynasearch reads \(1\.\.{VERSION}\): upgrade dynasearch",
    ),
    (
        "version-zero",
        edit_meta(lambda m: m.update(version=0)),
        r"results format version 0, older than this dynasearch reads",
    ),
    ("version-missing", edit_meta(lambda m: m.pop("version")), r"lacks key 'version' \(an integer"),
    # cells: numbers that are numbers and finite, latencies present and positive
    (
        "measured-a-word",
        set_cell("front.csv", "measured_ms", "abc"),
        r"front\.csv: row 1, column 'measured_ms': expected a number in \(0, 3\.6e\+06\] ms or an empty cell; got 'abc'$",
    ),
    (
        "measured-inf",
        set_cell("front.csv", "measured_ms", "inf"),
        r"row 1, column 'measured_ms': expected a number in \(0, 3\.6e\+06\] ms or an empty cell; got 'inf'",
    ),
    (
        "measured-zero",
        set_cell("front.csv", "measured_ms", "0"),
        r"row 1, column 'measured_ms': expected a number in \(0, 3\.6e\+06\] ms or an empty cell; got '0'",
    ),
    (
        "measured-without-raw",
        set_cell("front.csv", "measured_ms", "1.5"),
        r"row 1, column 'measured_raw_ms': expected a number, as measured_ms is given; got an empty cell",
    ),
    (
        "predicted-empty",
        set_cell("trials.csv", "predicted_ms", "", row=5),
        r"trials\.csv: row 5, column 'predicted_ms': expected a number in \(0, 3\.6e\+06\] ms; got an empty cell",
    ),
    (
        "predicted-nan",
        set_cell("trials.csv", "predicted_ms", "NaN", row=2),
        r"row 2, column 'predicted_ms': expected a number in \(0, 3\.6e\+06\] ms; got 'NaN'",
    ),
    (
        "predicted-underscore",
        set_cell("trials.csv", "predicted_ms", "1_000", row=2),
        r"row 2, column 'predicted_ms': expected a number in \(0, 3\.6e\+06\] ms; got '1_000'",
    ),
    (
        "metric-empty",
        set_cell("front.csv", "metric_search", ""),
        r"row 1, column 'metric_search': expected a number in \[-1e\+06, 1e\+06\]; got an empty cell",
    ),
    (
        "width-above-one",
        set_cell("trials.csv", "width", "1.5"),
        r"row 1, column 'width': expected a number in \[0, 1\]; got '1\.5'",
    ),
    (
        "trial-a-float",
        set_cell("trials.csv", "trial", "0.5"),
        r"trials\.csv: row 1, column 'trial': expected an integer in 0\.\.1000000000; got '0\.5'",
    ),
    (
        "bool-lowercase",
        set_cell("trials.csv", "cache_hit", "false", row=7),
        r"row 7, column 'cache_hit': expected True or False; got 'false'",
    ),
    (
        "grid-word",
        set_cell("trials.csv", "grid", "full"),
        r"row 1, column 'grid': expected empty or a grid point 'WxD'",
    ),
    (
        "duplicate-of-word",
        set_cell("trials.csv", "duplicate_of", "x"),
        r"column 'duplicate_of': expected an integer in 0\.\.1000000000 or an empty cell",
    ),
    # JSON cells that parse, sub-networks inside the backbone, keys and depths that match them
    (
        "subnet-empty",
        set_cell("front.csv", "subnet", ""),
        r"row 1, column 'subnet': expected a sub-network as JSON .*got an empty cell",
    ),
    (
        "subnet-cut",
        set_cell("front.csv", "subnet", '{"layers":[0],"he'),
        r"row 1, column 'subnet': .*it is not valid JSON",
    ),
    (
        "subnet-heads-99",
        set_cell("front.csv", "subnet", HEADS_99),
        r"column 'subnet': expected a sub-network inside the searched backbone \(4 layers, 4 heads, FFN 64\): .*'heads' asks 99",
    ),
    ("subnet-a-list", set_cell("trials.csv", "subnet", "[0, 1]"), r"column 'subnet': .*must be a JSON object"),
    (
        "key-mismatch",
        set_cell("trials.csv", "key", "000000000000", row=3),
        r"trials\.csv: row 3, column 'key': expected the key of its subnet",
    ),
    (
        "depth-mismatch",
        set_cell("trials.csv", "depth", "2", row=1),
        r"row 1, column 'depth': expected 4, the number of layers of its subnet",
    ),
    # columns, rows, files
    (
        "drop-subnet",
        drop_column("front.csv", "subnet"),
        r"front\.csv is not a dynasearch trials table: header line missing columns \['subnet'\]",
    ),
    (
        "extra-column",
        lambda d: put_rows(d, "trials.csv", [r + ["x"] for r in table_rows(d, "trials.csv")]),
        r"trials\.csv is not a dynasearch trials table: header line unknown columns \['x'\]",
    ),
    (
        "repeated-column",
        lambda d: put_rows(
            d, "front.csv", [r[:-1] + [r[0]] if i == 0 else r for i, r in enumerate(table_rows(d, "front.csv"))]
        ),
        r"front\.csv is not a dynasearch trials table: header line missing columns \['cache_hit'\]; repeated columns \['trial'\]",
    ),
    (
        "short-row",
        lambda d: put_rows(
            d, "trials.csv", [r[:-2] if i == 4 else r for i, r in enumerate(table_rows(d, "trials.csv"))]
        ),
        r"trials\.csv: row 4 has 14 cell\(s\); expected 16, one per column$",
    ),
    (
        "cut-mid-row",
        lambda d: (d / "trials.csv").write_bytes((d / "trials.csv").read_bytes()[:-3]),
        r"trials\.csv: row 30, column 'cache_hit': expected True or False; got '(Fa|Tr)' \(the file ends in this row without a line end: truncated\)",
    ),
    (
        "cut-in-quotes",
        lambda d: (d / "front.csv").write_bytes((d / "front.csv").read_bytes().split(b'"{')[0] + b'"{""lay'),
        r"front\.csv is not well-formed CSV \(line 2: unexpected end of data\): truncated",
    ),
    (
        "cut-whole-row",
        lambda d: (d / "trials.csv").write_text("".join((d / "trials.csv").read_text().splitlines(True)[:-1])),
        r"trials\.csv holds 29 row\(s\); search\.json's summary\.trials says 30: rows were cut",
    ),
    (
        "no-line-end",
        lambda d: (d / "front.csv").write_text((d / "front.csv").read_text().rstrip("\n")),
        r"front\.csv is truncated: its last row \(row \d+\) has no line end",
    ),
    (
        "not-utf8",
        lambda d: (d / "trials.csv").write_bytes((d / "trials.csv").read_bytes().replace(b"True", b"Tr\xe9e", 1)),
        r"trials\.csv is not UTF-8 text \(byte 0xe9 at offset \d+\): corrupted",
    ),
    ("repeated-trial", set_cell("trials.csv", "trial", "0", row=2), r"trials\.csv: row 2 repeats trial number 0"),
    (
        "front-off-front",
        set_cell("front.csv", "on_front", "False"),
        r"front\.csv: row 1, column 'on_front': expected True",
    ),
    (
        "digit-changed",
        set_cell("trials.csv", "metric_search", "99.5", row=6),
        r"trials\.csv is not the table the search wrote \(its sha256 differs from search\.json's tables\.trials\.csv\)",
    ),
    (
        "trials-a-directory",
        lambda d: ((d / "trials.csv").unlink(), (d / "trials.csv").mkdir()),
        r"trials\.csv is not a regular file",
    ),
    (
        "search-json-a-directory",
        lambda d: ((d / "search.json").unlink(), (d / "search.json").mkdir()),
        r"cannot read search results file .*search\.json: Is a directory",
    ),
    (
        "older-version-damaged",
        lambda d: (as_version_1(d), set_cell("front.csv", "predicted_ms", "x")(d)),
        r"front\.csv: row 1, column 'predicted_ms': expected a number in \(0, 3\.6e\+06\] ms; got 'x' \(results format version 1, written by an older dynasearch\)$",
    ),
]


@pytest.mark.parametrize("damage, message", [(d, m) for _, d, m in READER_DAMAGE], ids=[i for i, _, _ in READER_DAMAGE])
def test_reader_names_the_damage(damage, message, sk_results, fast_tmp, capsys):
    """Each damage: ResultsError from the reader; query and export --results exit 2 with that one
    line on stderr and write nothing (the results directory byte for byte as before, no export)."""
    d = copy_results(sk_results, fast_tmp / "r")
    damage(d)
    with pytest.raises(ResultsError, match=message):
        read_results(d)
    before = snapshot(d)
    out = fast_tmp / "deploy"
    for argv in (
        ["query", d, "--target-latency", "4ms"],
        ["export", "--results", d, "--key", "abc", "--format", "hf", "--out", out],
    ):
        capsys.readouterr()
        assert cli(*argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith(f"dynasearch {argv[0]}: error: ") and re.search(message, err.strip()), err
    assert snapshot(d) == before and not out.exists()
    assert sorted(p.name for p in fast_tmp.iterdir()) == ["r"]


def test_reader_types_what_it_reads(sk_results):
    r = read_results(sk_results)
    assert (
        r.version == VERSION
        and len(r.trials) == r.meta["summary"]["trials"]
        and len(r.front) == r.meta["summary"]["front_size"]
    )
    assert set(r.meta["tables"]) == {"trials.csv", "front.csv"}
    t = r.trials
    assert t["trial"].dtype.kind == "i" and t["predicted_ms"].dtype.kind == "f" and t["on_front"].dtype == bool
    assert t["measured_ms"].isna().all() and isinstance(t["key"].iloc[0], str) and set(t["grid"].map(type)) == {str}
    assert r.space.shape.num_layers == 4 and r.front["on_front"].all()
    meta, trials, front = load_results(sk_results)  # the older entry point: the same reader
    assert meta == r.meta and trials.equals(r.trials) and front.equals(r.front)


def test_written_results_read_back_the_same(sk_results, fast_tmp):
    """write_results -> read_results is exact (what query --verify does when it records a measurement)."""
    d = copy_results(sk_results, fast_tmp / "r")
    r = read_results(d)
    trials, front = r.trials.copy(), r.front.copy()
    key = front["key"].iloc[0]
    for df in (trials, front):
        df.loc[df["key"] == key, ["measured_ms", "measured_raw_ms"]] = [1.25, 1.5]
    write_results(d, r.meta, trials, front)
    again = read_results(d)
    assert again.trials.equals(trials) and again.front.equals(front)
    assert again.meta["tables"] != r.meta["tables"] and query(d, 1.3)["measured_ms"] == 1.25


def test_older_version_is_read_with_a_warning(sk_results, fast_tmp, capsys):
    d = copy_results(sk_results, fast_tmp / "r")
    as_version_1(d)
    with pytest.warns(
        UserWarning,
        match=r"search\.json has results format version 1, older than this dynasearch's 2: read without "
        r"checking the tables' digests",
    ):
        r = read_results(d)
    assert r.version == 1 and r.trials.equals(read_results(sk_results).trials)
    set_cell("trials.csv", "metric_search", "99.5", row=6)(d)  # undetectable without digests: still read
    with pytest.warns(UserWarning):
        read_results(d)
    assert cli("query", d, "--target-latency", "4ms", "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["predicted_ms"] <= 4.0
    assert err.startswith("warning: ") and "results format version 1" in err and len(err.strip().splitlines()) == 1, err


def test_reader_rereads_when_a_search_rewrites_it_meanwhile(sk_results, fast_tmp, monkeypatch):
    """A search finishing while query reads rewrites the tables, then search.json: tables that do not
    match an older search.json are read again, not reported; damage that stays is reported once."""
    import search.results as results

    d = copy_results(sk_results, fast_tmp / "r")
    real, calls = results._read_once, []

    def racing(dd, meta_path):
        calls.append(1)
        if len(calls) == 1:  # the writer lands its search.json just after we read the stale one
            (meta_path).write_text(meta_path.read_text() + " ")
            raise ResultsError("trials.csv holds 31 row(s); search.json's summary.trials says 30")
        return real(dd, meta_path)

    monkeypatch.setattr(results, "_read_once", racing)
    assert read_results(d).version == VERSION and len(calls) == 2
    set_cell("front.csv", "measured_ms", "abc")(d)
    calls.clear()
    monkeypatch.setattr(results, "_read_once", lambda dd, mp: (calls.append(1), real(dd, mp))[1])
    with pytest.raises(ResultsError, match="measured_ms"):
        read_results(d)
    assert len(calls) == 1


def test_query_a_regular_file_is_not_a_directory(tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("x")
    with pytest.raises(ResultsError, match=r"results path .*results\.txt is not a directory"):
        read_results(f)
    assert cli("query", f, "--target-latency", "4ms") == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and "does not exist" not in err


@pytest.mark.parametrize(
    "text, message",
    [
        ("1e400ms", r"latency '1e400ms' is too large: not a finite number of milliseconds"),
        ("1e308s", r"latency '1e308s' is too large"),  # finite as a number, not once in milliseconds
        ("0ms", r"latency '0ms' must be positive; it is zero"),
        ("0.000s", r"must be positive; it is zero"),
        ("1e-400ms", r"latency '1e-400ms' must be positive; it is too small \(rounds to 0 ms\)"),
    ],
)
def test_latency_beyond_a_float(text, message):
    from search.units import parse_latency

    with pytest.raises(SearchError, match=message):
        parse_latency(text)


def test_latency_still_parses():
    from search.units import parse_latency

    assert (
        parse_latency("12ms") == 12.0
        and parse_latency("0.5s") == 500.0
        and parse_latency("800us") == pytest.approx(0.8)
    )
    assert parse_latency("1e3ms") == 1000.0


def test_an_answer_says_where_its_metric_was_scored():
    assert reported_on("all") == reported_on(None) == "whole dev split"
    assert reported_on("rest-572") == "572 dev examples held out from the ranking"
    assert reported_on("subset-500-seed1") == "500 dev examples, seed 1"
    a = {"key": "k", "subnet": {"layers": [0], "heads": [1], "ffn": [8]}, "metric": "accuracy", "metric_full": 77.27,
         "predicted_ms": 3.4, "verified": False, "metric_on": "rest-572"}  # fmt: skip
    assert "accuracy 77.27 (572 dev examples held out from the ranking)" in describe_answer(a)
    assert "(whole dev split)" in describe_answer({**a, "metric_on": "all"})
