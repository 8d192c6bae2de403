"""`dynasearch query` (search/results.py, search/commands/query.py): answers from a results
directory alone, without torch; bad results directories are one-line errors naming the file."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # searchkit

from search.errors import ResultsError, SearchError
from search.results import load_results, query
from searchkit import REPO, cli, copy_results, subprocess_env  # noqa: E402

pytest_plugins = ["searchkit"]  # its session fixtures, shared by every module (importing them would copy them per module)

NO_TORCH = """
import json, sys
from search.cli import main
rc = main(["query", sys.argv[1], "--target-latency", "4ms", "--json"])
heavy = sorted(m for m in ("torch", "transformers", "optuna", "onnxruntime") if m in sys.modules)
print(json.dumps({"rc": rc, "heavy": heavy}), file=sys.stderr)
"""


def test_query_answers_without_importing_torch(sk_results):
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", NO_TORCH, str(sk_results)], cwd=REPO, env=subprocess_env(), capture_output=True,
                       text=True, timeout=60)
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


def test_query_below_the_fastest_config(sk_results, capsys):
    assert cli("query", sk_results, "--target-latency", "10us") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no config of the front meets 0.01 ms; the fastest is" in err and "(predicted)" in err


@pytest.mark.parametrize("target, message", [("4", "has no unit"), ("4 parsecs", "unknown unit"), ("-4ms", "not a number with a unit")])
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


@pytest.mark.parametrize("damage", [corrupt_search_json, foreign_search_json, corrupt_trials, foreign_front, missing_front, empty_trials])
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
    for d, message in ((tmp_path / "foreign", "not a dynasearch search results directory (no search.json)"),
                       (tmp_path / "missing", "does not exist")):
        assert cli("query", d, "--target-latency", "4ms") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and str(d) in err
    assert not (tmp_path / "missing").exists()


def test_query_library_errors():
    with pytest.raises(SearchError, match="positive number of milliseconds"):
        query("anywhere", 0)
