"""The loader of a deployment bundle: one folder serving every device of a search.

`dynasearch export --results RESULTS --bundle --out BUNDLE` writes

    BUNDLE/devices.json          the index: one entry per device (name, precision, backend, threads,
                                 batch, length, fingerprint, the model file, sub-network key, metric,
                                 predicted and measured latency, when and where it was measured,
                                 check_ms: what --check's own loop gave at export on the exporting
                                 machine's entries) and the sha256 of every other file of the bundle
    BUNDLE/models/<key>-<prec>/  a model per distinct config and precision (model.onnx, model.int8.onnx
                                 or a Hugging Face directory), shared by the devices that picked it
    BUNDLE/tokenizer.json ...    the tokenizer files, once
    BUNDLE/dynasearch_bundle.py  a few lines that put BUNDLE on the import path and re-export this module
    BUNDLE/dynasearch_runtime/   the folder dynasearch_runtime copied as it is (this module among it)

and this module reads it: `load(BUNDLE, device=None, threads=None, batch=None)` checks every file's
sha256, picks the entry for this machine (its fingerprint, as the latency predictors compute it)
and returns a `BundleModel` whose `predict(texts)` gives (label, scores) per text;
`python BUNDLE/dynasearch_bundle.py BUNDLE --check` (from any working directory; `python -m dynasearch_bundle
. --check` from inside BUNDLE) times the chosen model here, at the entry's own threads and batch, against its
recorded latency (check_ms, recorded at export with this very loop; else the search's measured, else
predicted latency).

Its index (devices.json: reading and checking it) is `bundle_index`, its command line and `--check`
`bundle_cli`.

A version-2 bundle (`export --bundle --front K`) also carries each device's front: `front(index, device)` lists
its configs (key, precision, file, metric on the report examples, predicted and measured latency), fastest
first, and `load_front(BUNDLE, device, key)` loads one of them at the device's setting; a version-1 bundle (or
one exported with --front 0) has none, and `no_front` says so.

Part of the device runtime (standard library and numpy; onnxruntime and `tokenizers` imported
lazily; relative imports only, Python 3.8 syntax). It never imports torch or transformers for an
onnxruntime entry; a torch entry (a Hugging Face directory) imports them when it is loaded and says so
when they are missing. The optional libraries are imported through `importlib` (`_optional`): the
kit ships this folder too, and the kit's runner needs only numpy and onnxruntime.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import statistics
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import bounds
from .bundle_index import (  # noqa: F401  (re-exported: the loader's public names, as before the split)
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    ENTRY_DTYPES,
    ENTRY_FIELDS,
    INDEX,
    NUMBER_FIELDS,
    inside,
    read_index,
    verify_files,
)
from .errors import BundleError
from .fingerprint import CUDA_PROVIDERS, has_gpu, machine_info, ort_feeds, ort_run_once, ort_session, setting_columns

CHECK_RUNS = 20  # --check: timed runs (after CHECK_WARMUP untimed ones); the median is reported
CHECK_WARMUP = 3
CHECK_TOLERANCE = 0.10  # --check exits 1 when the time here is more than 10% off the recorded latency


# ----------------------------------------------------------------------- this machine and the entries
def _dist_version(name: str) -> str:
    """A library's installed version without importing it (torch is never imported to fingerprint)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return ""
    try:
        return version(name)
    except PackageNotFoundError:
        return ""


def this_machine() -> Dict[str, Any]:
    """The fingerprint columns of this machine that do not depend on the settings (torch not imported)."""
    return machine_info(with_torch=False)


def fingerprint_here(entry: Dict[str, Any], machine: Dict[str, Any], shape_key: str) -> Dict[str, Any]:
    """This machine's setting columns (fingerprint, target_id, ...) under the entry's setting, as the
    latency predictors compute them (`setting_columns`)."""
    m = dict(machine)
    if entry["backend"] == "torch" and not m.get("torch_version"):
        m["torch_version"] = _dist_version("torch")
    return setting_columns(
        m,
        entry["backend"],
        entry["device"],
        entry["provider"],
        int(entry["threads"]),
        bool(entry["spinning"]),
        entry["dtype"],
        int(entry["batch"]),
        int(entry["length"]),
        shape_key,
    )


def describe_machine(m: Dict[str, Any], fingerprint: Optional[str] = None) -> str:
    gpu = f", GPU {m['gpu_name']}" if m.get("gpu_name") else ""
    fp = f", fingerprint {fingerprint}" if fingerprint else ""
    return f"{m.get('cpu_model') or 'unknown CPU'}, {m.get('cpu_cores')} core(s){gpu}{fp}"


def describe_entry(e: Dict[str, Any]) -> str:
    how = f"onnxruntime {e['provider']}" if e["backend"] == "onnxruntime" else f"torch on {e['device']}"
    return (
        f"device {e['name']} ({e['precision']}, {how}, {e['threads']} thread(s), batch {e['batch']}, "
        f"length {e['length']}): {e['file']}"
    )


def _usable(entry: Dict[str, Any]) -> bool:
    """An onnxruntime entry whose provider this machine can run."""
    try:
        import onnxruntime as ort  # imported lazily, as everywhere in the runtime (a kit may not need it)
    except ImportError:
        return False
    p = entry["provider"]
    return p in ort.get_available_providers() and (p not in CUDA_PROVIDERS or has_gpu())


def _closest(pool: List[Dict[str, Any]], field: str, want: Optional[int]) -> List[Dict[str, Any]]:
    if want is None:
        return pool
    exact = [e for e in pool if int(e[field]) == want]
    if exact:
        return exact
    gap = min(abs(int(e[field]) - want) for e in pool)
    return [e for e in pool if abs(int(e[field]) - want) == gap]


def choose(
    index: Dict[str, Any],
    device: Optional[str] = None,
    threads: Optional[int] = None,
    batch: Optional[int] = None,
    machine: Optional[Dict[str, Any]] = None,
    bundle: str = "the bundle",
) -> Tuple[Dict[str, Any], Optional[str]]:
    """(the entry, a warning or None). This machine's fingerprint narrows to its entries; device=NAME,
    then threads= and batch= (equal, else nearest) choose among them; among ties the precision the
    search's verdict gave the device, then onnxruntime before torch, then the index's order. With no
    entry for this machine: the named device (warned), else the nearest onnxruntime entry (a provider
    this machine runs, same cpu_model, same core count, any; warned)."""
    entries = index["devices"]
    machine = this_machine() if machine is None else machine
    names = sorted({e["name"] for e in entries})
    pool = entries
    if device is not None:
        pool = [e for e in entries if e["name"] == device]
        if not pool:
            raise BundleError(f"no device {device!r} in {bundle}; devices: {', '.join(names)}")
    shape_key = index.get("shape_key", "")
    here = [e for e in pool if fingerprint_here(e, machine, shape_key)["fingerprint"] == e["fingerprint"]]
    foreign = not here
    if here:
        pool = here
    elif device is None:
        ort = [e for e in pool if e["backend"] == "onnxruntime"]
        if not ort:
            raise BundleError(
                f"no entry of {bundle} was measured on this machine ({describe_machine(machine)}) and none runs "
                f"with onnxruntime; name one with device=NAME (--device NAME) on a machine that has torch "
                f"(devices: {', '.join(names)})"
            )

        def rank(e: Dict[str, Any]) -> Tuple[bool, bool, bool]:
            return (_usable(e), e.get("cpu_model") == machine["cpu_model"], e.get("cpu_cores") == machine["cpu_cores"])

        best = max(rank(e) for e in ort)
        pool = [e for e in ort if rank(e) == best]
    pool = _closest(_closest(pool, "threads", threads), "batch", batch)
    verdicts = index.get("precision") or {}

    def order(e: Dict[str, Any]) -> Tuple[bool, bool, int]:
        verdict = str(verdicts.get(e["name"], "")).split(":")[0]
        return (bool(verdict) and verdict != e["precision"], e["backend"] != "onnxruntime", entries.index(e))

    entry = sorted(pool, key=order)[0]
    note = None
    if foreign:
        there = {k: entry.get(k) for k in ("cpu_model", "cpu_cores", "gpu_name")}
        mine = fingerprint_here(entry, machine, shape_key)["fingerprint"]
        note = (
            f"no entry of {bundle} was measured on this machine: using device {entry['name']} ({entry['precision']}), "
            f"measured on {describe_machine(there, entry['fingerprint'])}; this machine is "
            f"{describe_machine(machine, mine)}; its latency here may differ ({check_command(bundle)} times it)"
        )
    return entry, note


def check_command(bundle: str = "BUNDLE") -> str:
    """The command that runs --check on `bundle` from any working directory: the bundle's dynasearch_bundle.py
    run as a script (which puts the bundle folder on the import path itself)."""
    bundle = "BUNDLE" if bundle == "the bundle" else str(bundle)
    return f"python {_quote(os.path.join(bundle, 'dynasearch_bundle.py'))} {_quote(bundle)} --check"


def _quote(arg: str) -> str:
    return arg if arg == "BUNDLE" else shlex.quote(arg)


# ------------------------------------------------------------------------------------- the model
def _optional(name: str, who: str):
    """An optional library, imported only when an entry needs it (BundleError naming `who` without it)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise BundleError(f"{who} needs the {name} package, which this Python cannot import ({e})") from None


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _token_text(tok: Any) -> Optional[str]:
    if isinstance(tok, dict):  # {"content": "[PAD]", ...} in older tokenizer configs
        tok = tok.get("content")
    return tok if isinstance(tok, str) and tok else None


def load_tokenizer(bundle: str, length: int):
    """The bundle's tokenizer (tokenizer.json; else vocab.txt as a BERT WordPiece tokenizer),
    truncating at `length` tokens and padding to the longest text of a batch."""
    tk = _optional("tokenizers", "the bundle's tokenizer")
    cfg = _read_json(os.path.join(str(bundle), "tokenizer_config.json"))
    special = _read_json(os.path.join(str(bundle), "special_tokens_map.json"))
    tj, vocab = os.path.join(str(bundle), "tokenizer.json"), os.path.join(str(bundle), "vocab.txt")
    if os.path.isfile(tj):
        tok = tk.Tokenizer.from_file(tj)
    elif os.path.isfile(vocab):
        tok = tk.BertWordPieceTokenizer(vocab, lowercase=bool(cfg.get("do_lower_case", True)))
    else:
        raise BundleError(f"bundle {bundle} has no tokenizer (tokenizer.json or vocab.txt)")
    tok.enable_truncation(max_length=int(length))
    pad = _token_text(cfg.get("pad_token")) or _token_text(special.get("pad_token"))
    for candidate in (pad, "[PAD]", "<pad>"):
        if candidate is not None and tok.token_to_id(candidate) is not None:
            tok.enable_padding(pad_id=tok.token_to_id(candidate), pad_token=candidate)
            break
    else:
        tok.enable_padding(pad_id=0)
    return tok


class BundleModel:
    """The chosen entry of a bundle, ready to predict: `predict(texts)` -> [(label, scores)]."""

    def __init__(
        self,
        bundle: str,
        index: Dict[str, Any],
        entry: Dict[str, Any],
        threads: Optional[int] = None,
        batch: Optional[int] = None,
    ) -> None:
        self.bundle = str(bundle)
        self.index = index
        self.entry = entry
        self.threads = int(threads or entry["threads"])
        self.batch = int(batch or entry["batch"])
        self.length = int(entry["length"])
        self.path = inside(self.bundle, entry["file"])
        self._session = None
        self._torch = None
        self._model = None
        if entry["backend"] == "onnxruntime":
            _optional("onnxruntime", f"device {entry['name']} (an onnxruntime entry)")
            self._session = ort_session(self.path, entry["provider"], self.threads, bool(entry["spinning"]))
            self.inputs = [i.name for i in self._session.get_inputs()]
        elif entry["backend"] == "torch":
            who = f"device {entry['name']} (a torch entry: the Hugging Face directory {entry['file']})"
            self._torch = _optional("torch", who)
            transformers = _optional("transformers", who)
            self._torch.set_num_threads(self.threads)
            self._model = (
                transformers.AutoModelForSequenceClassification.from_pretrained(self.path, trust_remote_code=True)
                .to(entry["device"])
                .eval()
            )
            self.inputs = ["input_ids", "attention_mask", "token_type_ids"]
        else:
            raise BundleError(f"device {entry['name']}: unknown backend {entry['backend']!r} (onnxruntime, torch)")
        self.labels = self._labels()
        self.tokenizer = load_tokenizer(self.bundle, self.length)

    def _labels(self) -> Dict[int, str]:
        folder = self.path if os.path.isdir(self.path) else os.path.dirname(self.path)
        cfg = _read_json(os.path.join(folder, "config.json"))
        raw = cfg.get("id2label") or self.index.get("labels") or {}
        try:
            return {int(k): str(v) for k, v in raw.items()}
        except (AttributeError, ValueError):
            return {}

    def _run(self, feeds: Dict[str, Any]):
        if self._session is not None:
            return np.asarray(self._session.run(None, {n: feeds[n] for n in self.inputs if n in feeds})[0])
        torch = self._torch
        with torch.no_grad():
            t = {k: torch.from_numpy(v).to(self.entry["device"]) for k, v in feeds.items()}
            return self._model(**t).logits.float().cpu().numpy()

    def logits(self, texts: Sequence[Any]):
        """The model's outputs for `texts` (strings, or (text, pair) tuples), in batches of `batch`."""
        items = [tuple(t) if isinstance(t, (tuple, list)) else t for t in texts]
        out = []
        for i in range(0, len(items), self.batch):
            enc = self.tokenizer.encode_batch(items[i : i + self.batch])
            feeds = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
            }
            out.append(self._run(feeds))
        return np.concatenate(out) if out else np.zeros((0, max(len(self.labels), 1)), dtype=np.float32)

    def predict_batch(
        self, texts: Sequence[Any], pad_to: Optional[int] = None
    ) -> List[Tuple[Optional[str], List[float]]]:
        """`predict` of `texts` as ONE batch (whatever the entry's batch), padded to `pad_to` tokens when the
        longest is shorter (a server pads each batch to its length bucket, so that its time is the
        bucket's); truncated at the model's length as always."""
        items = [tuple(t) if isinstance(t, (tuple, list)) else t for t in texts]
        enc = self.tokenizer.encode_batch(items)
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        extra = min(int(pad_to or 0), self.length) - feeds["input_ids"].shape[1]
        if extra > 0:
            pad_id = int((self.tokenizer.padding or {}).get("pad_id", 0))
            for name, value in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
                feeds[name] = np.pad(feeds[name], ((0, 0), (0, extra)), constant_values=value)
        return self._label_scores(self._run(feeds))

    def predict(self, texts: Any) -> List[Tuple[Optional[str], List[float]]]:
        """(label, scores) per text: the softmax over the labels (names from the exported config's
        id2label, else LABEL_<i>); a regression head (one output) gives (None, [value])."""
        items = [texts] if isinstance(texts, str) else list(texts)
        return self._label_scores(self.logits(items))

    def _label_scores(self, logits) -> List[Tuple[Optional[str], List[float]]]:
        result = []
        for row in logits:
            row = np.asarray(row, dtype=np.float64)
            if row.size == 1:
                result.append((None, [float(row[0])]))
                continue
            p = np.exp(row - row.max())
            p = p / p.sum()
            i = int(p.argmax())
            result.append((self.labels.get(i, f"LABEL_{i}"), [float(v) for v in p]))
        return result

    def time_ms(self, runs: int = CHECK_RUNS, warmup: int = CHECK_WARMUP) -> float:
        """The median wall time (ms) of `runs` runs at this model's batch (load's batch=, else the entry's),
        threads and the entry's length (random tokens, no padding)."""
        vocab = int(self.index.get("vocab_size") or 1000)
        feeds = ort_feeds(self.inputs, self.batch, self.length, vocab)
        if self._session is not None:
            once = ort_run_once(self._session, feeds)
        else:
            cuda = str(self.entry["device"]).startswith("cuda")
            torch = self._torch

            def once():
                self._run(feeds)
                if cuda:
                    torch.cuda.synchronize()

        for _ in range(warmup):
            once()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            once()
            times.append((time.perf_counter() - t0) * 1000.0)
        return float(statistics.median(times))


def check_argument(kind: str, name: str, v: Any) -> None:
    """An argument of load() or --check (None: the entry's own) within its kind's bounds (`bounds`): a
    thread count of 10**9 is one BundleError line, not onnxruntime's bad_alloc."""
    if v is not None:
        bounds.check(kind, v, name, BundleError)


def load(
    bundle: str, device: Optional[str] = None, threads: Optional[int] = None, batch: Optional[int] = None
) -> BundleModel:
    """The model of `bundle` for this machine (see `choose`), after checking every file's sha256.
    threads: the onnxruntime/torch threads to run with (default: the entry's); batch: texts per run
    (default: the entry's); both also choose among this machine's entries."""
    check_argument("threads", "threads", threads)
    check_argument("batch", "batch", batch)
    bundle = str(bundle)
    index = read_index(bundle)
    verify_files(bundle, index)
    entry, note = choose(index, device, threads, batch, bundle=bundle)
    if note:
        warnings.warn(note, stacklevel=2)
    return BundleModel(bundle, index, entry, threads, batch)


# ------------------------------------------------------------------------------------- the front
# What `front` gives per config (the entry's own fields of that name, for the answer's config).
FRONT_KEYS = (
    "key",
    "precision",
    "format",
    "file",
    "model_dir",
    "subnet",
    "grid",
    "metric_value",
    "metric_full",
    "metric_search",
    "predicted_ms",
    "measured_ms",
    "measured_raw_ms",
    "answer",
)


def no_front(index: Dict[str, Any], bundle: str = "the bundle") -> Optional[str]:
    """None when the bundle carries its devices' fronts; else why not, in one line (a version-1 bundle, or
    one exported with --front 0)."""
    if int(index.get("version", 1)) < 2:
        return (
            f"{bundle} is a version-1 bundle (written before bundles carried a front): it holds each device's "
            "answer alone, no front; export it again with `dynasearch export --results RESULTS --bundle --front K`"
        )
    if not int((index.get("front") or {}).get("configs") or 0):
        return (
            f"{bundle} was exported with --front 0: it holds each device's answer alone, no front; export it again "
            "with --front K"
        )
    return None


def _device_entry(index: Dict[str, Any], device: str, precision: Optional[str], bundle: str) -> Dict[str, Any]:
    """The entry of `device` (at `precision`; None: the precision the search's verdict gave the device, else
    its first entry)."""
    pool = [e for e in index["devices"] if e["name"] == device]
    if not pool:
        names = sorted({e["name"] for e in index["devices"]})
        raise BundleError(f"no device {device!r} in {bundle}; devices: {', '.join(names)}")
    if precision is not None:
        at = [e for e in pool if e["precision"] == precision]
        if not at:
            have = ", ".join(sorted({e["precision"] for e in pool}))
            raise BundleError(f"device {device!r} of {bundle} has no {precision} entry; it has {have}")
        return at[0]
    verdict = str((index.get("precision") or {}).get(device, "")).split(":")[0]
    return next((e for e in pool if e["precision"] == verdict), pool[0])


def front(
    index: Dict[str, Any], device: str, precision: Optional[str] = None, bundle: str = "the bundle"
) -> List[Dict[str, Any]]:
    """The front configs the bundle carries for `device` (see `_device_entry` for `precision`), fastest first:
    each with FRONT_KEYS (key, precision, file, metric_value: the metric on the bundle's report examples, index
    `report`; predicted_ms and measured_ms where known; answer: the device's own answer). BundleError in one
    line when the bundle has no front (`no_front`) or no such device."""
    why = no_front(index, bundle)
    if why:
        raise BundleError(why)
    entry = _device_entry(index, device, precision, bundle)
    return [{k: c.get(k) for k in FRONT_KEYS} for c in entry.get("front") or []]


def front_entry(
    index: Dict[str, Any], device: str, key: str, precision: Optional[str] = None, bundle: str = "the bundle"
) -> Dict[str, Any]:
    """The device's entry with its front config `key` in place of its answer (file, key, metrics and
    latencies are that config's; the setting is the device's): what `BundleModel` loads. check_ms and its
    companions stay only for the answer's config (they timed that model)."""
    configs = front(index, device, precision, bundle)
    entry = _device_entry(index, device, precision, bundle)
    config = next((c for c in configs if c["key"] == key), None)
    if config is None:
        raise BundleError(
            f"device {device!r} of {bundle} has no front config {key!r}; its front: "
            f"{', '.join(c['key'] for c in configs)}"
        )
    out = dict(entry)
    out.update({k: config.get(k) for k in FRONT_KEYS if k != "answer"})
    if not config["answer"]:
        out.update(check_ms=None, check_runs=None, check_when=None, check_repeats_ms=None)
    out.pop("front", None)
    return out


def load_front(
    bundle: str,
    device: str,
    key: str,
    precision: Optional[str] = None,
    threads: Optional[int] = None,
    batch: Optional[int] = None,
) -> BundleModel:
    """The model of front config `key` of `device` (after checking every file's sha256), at the device's
    setting (threads, batch: as in `load`)."""
    check_argument("threads", "threads", threads)
    check_argument("batch", "batch", batch)
    bundle = str(bundle)
    index = read_index(bundle)
    verify_files(bundle, index)
    return BundleModel(bundle, index, front_entry(index, device, key, precision, bundle), threads, batch)
