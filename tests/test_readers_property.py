"""Property test of every reader of a file dynasearch writes and later reads back (issue 15): a
results directory (`query`, `export --results`), latency records (`fit-predictor`) and a predictor
directory (`search --predictor`). Hypothesis damages one file of a real, freshly written copy at
random (truncate it, flip bytes, drop a CSV column, put a word in a number cell, drop a JSON key)
and runs the command in-process through the CLI's `main`. Whatever the damage:

- the command ends with exit 0 (the damage left a valid file: a changed digit is still a number),
  1 (valid, but no configuration meets the target) or 2 (refused); never an exception (the suite
  sets DYNASEARCH_RAISE_INTERNAL, so an internal error propagates and fails here with its traceback);
- refused: ONE line on stderr, `dynasearch CMD: error: ...`, and nothing written: the inputs are
  byte for byte as before and the output path does not exist.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "search"))
from searchkit import cli, fit_predictor_dir, predictor_records, search_args  # noqa: E402

from dynasearch.cli import main  # noqa: E402

pytest_plugins = ["searchkit"]  # sk_run, sk_base, sk_results (session fixtures)

EXAMPLES = 25  # per reader; each example is one in-process command (well under a second on the tiny model)
WORDS = ["abc", "", "nan", "inf", "-1", "1e400", "[99]", '{"layers": [0]', "null", "0"]


# ------------------------------------------------------------------------------------------- damage
@st.composite
def damage(draw, kind: str):
    """(description, function bytes -> bytes) for a file of `kind` ("csv", "json" or "bin")."""
    ops = (
        ["truncate", "flip"]
        + (["drop-column", "word-in-cell", "cut-last-row"] if kind == "csv" else [])
        + (["drop-key", "word-in-value"] if kind == "json" else [])
    )
    op = draw(st.sampled_from(ops))
    frac = draw(st.floats(0.0, 1.0))
    seed = draw(st.integers(0, 2**31 - 1))
    word = draw(st.sampled_from(WORDS))

    def apply(data: bytes) -> bytes:
        import random

        rng = random.Random(seed)
        if op == "truncate":
            return data[: int(len(data) * frac)]
        if op == "flip":
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                if b:
                    b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            return bytes(b)
        if op == "cut-last-row":
            text = data.decode()
            return text[: len(text.rstrip("\n")) - rng.randint(1, 20)].encode()
        if op in ("drop-column", "word-in-cell"):
            rows = list(csv.reader(io.StringIO(data.decode())))
            col = rng.randrange(len(rows[0]))
            if op == "drop-column":
                rows = [r[:col] + r[col + 1 :] for r in rows]
            else:
                r = rng.randrange(1, len(rows)) if len(rows) > 1 else 0
                rows[r][col] = word
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(rows)
            return buf.getvalue().encode()
        doc = json.loads(data)
        paths = list(_json_paths(doc))
        path = paths[rng.randrange(len(paths))]
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if op == "drop-key" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = word
        return json.dumps(doc).encode()

    return f"{op} (frac {frac:.3f}, seed {seed}, word {word!r})", apply


def _json_paths(doc, prefix=()):
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for k, v in items:
        yield (*prefix, k)
        if len(prefix) < 3:  # deep enough to reach study.metric, meta.threads, shape fields
            yield from _json_paths(v, (*prefix, k))


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def check(argv: list, inputs: Path, out: Path | None, how: str, capsys, allowed=(0, 2)) -> None:
    before = snapshot(inputs)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code in allowed, f"{how}: exit {code}\n{err}"
    if code == 2:
        lines = err.strip("\n").split("\n")
        assert len(lines) == 1 and lines[0].startswith(f"dynasearch {argv[0]}: error: "), f"{how}:\n{err}"
        assert snapshot(inputs) == before, f"{how}: the refused command changed its inputs"
        assert out is None or not out.exists(), f"{how}: the refused command wrote {out}"


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="dynasearch-property-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fresh(workdir: Path, src: Path, name: str) -> Path:
    dst = Path(tempfile.mkdtemp(dir=workdir)) / name
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


HYP = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ------------------------------------------------------------------------------------------- readers
@HYP
@given(file=st.sampled_from(["search.json", "trials.csv", "front.csv"]), data=st.data())
def test_results_directory_damage(sk_results, workdir, capsys, file, data):
    how, apply = data.draw(damage("json" if file.endswith(".json") else "csv"))
    res = fresh(workdir, sk_results, "res")
    (res / file).write_bytes(apply((res / file).read_bytes()))
    how = f"{file}: {how}"
    check(["query", res, "--target-latency", "4ms"], res, None, how, capsys, allowed=(0, 1, 2))
    out = res.parent / "export"
    check(
        ["export", "--results", res, "--target-latency", "4ms", "--format", "hf", "--out", out],
        res,
        out,
        how,
        capsys,
        allowed=(0, 1, 2),
    )


@pytest.fixture(scope="module")
def records_file(sk_base, workdir) -> Path:
    from dynasearch_runtime.schema import append_rows

    path = workdir / "records.csv"
    append_rows(str(path), predictor_records(sk_base))
    return path


@HYP
@given(data=st.data())
def test_records_damage(records_file, workdir, capsys, data):
    how, apply = data.draw(damage("csv"))
    rec = fresh(workdir, records_file, "records.csv")
    rec.write_bytes(apply(rec.read_bytes()))
    out = rec.parent / "fit"
    check(
        ["fit-predictor", rec, "--out", out, "--no-plots", "--kind", "lut"],
        rec.parent,
        out,
        f"records.csv: {how}",
        capsys,
    )


@pytest.fixture(scope="module")
def predictor_dir(sk_base, workdir) -> Path:
    return fit_predictor_dir(sk_base, workdir / "pred")


@HYP
@given(file=st.sampled_from(["predictor.json", "arrays.npz"]), data=st.data())
def test_predictor_directory_damage(sk_run, predictor_dir, workdir, capsys, file, data):
    how, apply = data.draw(damage("json" if file.endswith(".json") else "bin"))
    pred = fresh(workdir, predictor_dir, "pred")
    (pred / file).write_bytes(apply((pred / file).read_bytes()))
    out = pred.parent / "res"
    # A target below any sub-network's latency: an intact predictor is read, priced and refused in one line
    # before anything is written, so every example stays fast; a damaged one must be refused as such.
    check(
        search_args(sk_run, pred, out, "--trials", 12, "--no-verify", "--target-latency", "1e-9ms"),
        pred.parent,
        out,
        f"{file}: {how}",
        capsys,
        allowed=(2,),
    )


def test_the_damage_is_real(sk_results, workdir):
    """Guard against a property that holds by construction: some damage must be refused."""
    res = fresh(workdir, sk_results, "res")
    text = (res / "trials.csv").read_text().splitlines()
    (res / "trials.csv").write_text("\n".join(text[:-1]) + "\n" + text[-1][: len(text[-1]) // 2] + "\n")
    assert cli("query", res, "--target-latency", "4ms") == 2
