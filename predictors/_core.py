"""The one timing protocol, the records schema and the environment fingerprint.

Standalone on purpose: this file needs only the Python standard library and numpy (onnxruntime is
imported lazily, torch never). `dynasearch kit` copies it verbatim (minus the block marked
`in-package`) into the kit's `runner.py`, so a device without torch times its models with the very
same loop and writes the very same records format. Do not import torch or pandas here.

The protocol (`time_interleaved`), for a chunk of prepared configs:
1. warm-up, each config in turn: run until the median of the last `warmup_window` runs is within
   `warmup_tol` of the window before it (at least `warmup_min`, at most `warmup_max` runs or
   `warmup_max_seconds`);
2. rounds: every round visits the unfinished configs in a fresh random order (machine drift hits
   all of them alike); a visit does `rewarm_runs` untimed runs (caches were evicted by the other
   configs) then `runs_per_visit` timed runs;
3. a config is finished when the distribution-free confidence interval of its median (order
   statistics of the binomial(n, 1/2)) has a half-width within `rel_ci` of the median after at
   least `min_runs` runs taken in at least `min_visits` separate rounds ("converged": a median
   drawn from one moment of the machine can be 10-20% off on a shared host even with a tight
   CI, so it must span several moments), or at the cap: `max_runs` runs or `max_seconds` of timed
   runs (after at least 3 runs).
A timed run during which the process was preempted (an involuntary context switch: another
process took the core) is discarded and counted in `disturbed_runs`, so a shared machine yields
clean medians or says how busy it was. The Python garbage collector is off while timing.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

SCHEMA = "dynasearch-latency-records/1"

# <in-package>
from dynabert.errors import DynasearchError as _ErrorBase  # noqa: E402
# </in-package>


class MeasurementError(_ErrorBase):  # type: ignore[misc,valid-type]
    """A measurement cannot be set up: unknown backend or provider, CUDA without a GPU, bad protocol
    values, a records file of another schema."""


# ----------------------------------------------------------------------------------- records schema
# (column, type, meaning). One row per (config, settings); `key` + `settings_id` identify a row.
RECORD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("schema", "str", f"records format, always '{SCHEMA}'"),
    ("run_id", "str", "id of the measuring run that wrote the row"),
    ("timestamp", "str", "UTC time the config's measurement finished (ISO 8601)"),
    ("sampler", "str", "how the config was chosen: grid, uniform, flops, layer-table, file, kit"),
    ("key", "str", "SubnetConfig.key (12 hex digits); joins every table"),
    ("subnet", "str", "SubnetConfig canonical JSON: layers, heads, ffn"),
    ("depth", "int", "kept layers"),
    ("heads_sum", "int", "attention heads summed over kept layers"),
    ("ffn_sum", "int", "FFN neurons summed over kept layers"),
    ("params", "int", "parameters of the extracted model"),
    ("flops", "int", "encoder FLOPs (2 x MACs) at this batch and sequence length"),
    ("shape_key", "str", "12-hex key of the backbone shape"),
    ("shape", "str", "backbone shape JSON (layers, heads, head_dim, hidden, FFN, vocab, ...)"),
    ("backend", "str", "torch or onnxruntime"),
    ("device", "str", "cpu or cuda"),
    ("provider", "str", "onnxruntime execution provider (empty for torch)"),
    ("threads", "int", "intra-op threads (torch.set_num_threads / intra_op_num_threads)"),
    ("spinning", "bool", "onnxruntime intra-op thread spinning (always False for torch)"),
    ("dtype", "str", "weights and activations dtype"),
    ("batch", "int", "batch size"),
    ("seq_len", "int", "sequence length (all tokens real, no padding)"),
    ("cpu_model", "str", "CPU model name"),
    ("cpu_cores", "int", "CPU cores this process may use"),
    ("gpu_name", "str", "GPU name (empty without a GPU)"),
    ("gpu_driver", "str", "GPU driver version (empty without a GPU)"),
    ("os", "str", "operating system"),
    ("python", "str", "Python version"),
    ("numpy_version", "str", "numpy version"),
    ("torch_version", "str", "torch version (empty where torch is absent, e.g. the kit)"),
    ("onnxruntime_version", "str", "onnxruntime version (empty where absent)"),
    ("fingerprint", "str", "hash of CPU, cores, GPU, driver, backend, its version, device, provider"),
    ("target_id", "str", "hash of fingerprint + threads + spinning + dtype + backbone shape: one predictor's target"),
    ("settings_id", "str", "hash of target_id + batch + seq_len: what a re-run skips"),
    ("status", "str", "ok or failed"),
    ("error", "str", "why a failed config failed (empty when ok)"),
    ("median_ms", "float", "median latency of the timed runs, milliseconds"),
    ("mean_ms", "float", "mean latency"),
    ("p90_ms", "float", "90th percentile"),
    ("p99_ms", "float", "99th percentile"),
    ("iqr_ms", "float", "inter-quartile range"),
    ("cv", "float", "coefficient of variation (std / mean) of the timed runs"),
    ("ci_low_ms", "float", "lower end of the confidence interval of the median"),
    ("ci_high_ms", "float", "upper end of the confidence interval of the median"),
    ("n_runs", "int", "timed runs"),
    ("warmup_runs", "int", "warm-up runs before the first timed round"),
    ("disturbed_runs", "int", "timed runs discarded because another process preempted this one (a busy machine)"),
    ("converged", "bool", "True: the median's CI met rel_ci; False: a cap stopped it"),
    ("measure_s", "float", "wall seconds spent running this config (warm-up, re-warm and timed runs)"),
    ("prepare_s", "float", "wall seconds to prepare it (extraction, export, session creation)"),
    ("protocol", "str", "protocol settings JSON"),
)
RECORD_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in RECORD_FIELDS)
RECORD_TYPES: dict[str, str] = {name: typ for name, typ, _ in RECORD_FIELDS}
STATS_COLUMNS = ("median_ms", "mean_ms", "p90_ms", "p99_ms", "iqr_ms", "cv", "ci_low_ms", "ci_high_ms", "n_runs", "converged")


# ----------------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class Protocol:
    """Settings of the timing loop (see the module docstring for what each one does)."""

    rel_ci: float = 0.01  # stop when the CI half-width of the median is within this fraction of it
    confidence: float = 0.95
    min_runs: int = 5
    min_visits: int = 3  # rounds that contributed timed runs before a config may converge
    max_runs: int = 40
    max_seconds: float = 4.0  # cap on timed seconds per config
    runs_per_visit: int = 3
    rewarm_runs: int = 1
    warmup_min: int = 3
    warmup_max: int = 30
    warmup_window: int = 3
    warmup_tol: float = 0.05
    warmup_max_seconds: float = 3.0
    chunk_size: int = 64  # configs alive (interleaved) at once; bounds memory (one extracted model each)
    discard_disturbed: bool = True  # drop timed runs during which another process preempted this one
    max_disturbed: int = 100  # stop a config after this many discarded runs (the machine is too busy)
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("rel_ci", 0 < self.rel_ci < 1, "in (0, 1)"),
            ("confidence", 0.5 <= self.confidence < 1, "in [0.5, 1)"),
            ("min_runs", self.min_runs >= 1, ">= 1"),
            ("min_visits", self.min_visits >= 1, ">= 1"),
            ("max_runs", self.max_runs >= self.min_runs, f">= min_runs ({self.min_runs})"),
            ("max_seconds", self.max_seconds > 0, "> 0"),
            ("runs_per_visit", self.runs_per_visit >= 1, ">= 1"),
            ("rewarm_runs", self.rewarm_runs >= 0, ">= 0"),
            ("warmup_min", self.warmup_min >= 0, ">= 0"),
            ("warmup_max", self.warmup_max >= self.warmup_min, f">= warmup_min ({self.warmup_min})"),
            ("warmup_window", self.warmup_window >= 1, ">= 1"),
            ("warmup_tol", self.warmup_tol > 0, "> 0"),
            ("warmup_max_seconds", self.warmup_max_seconds >= 0, ">= 0"),
            ("chunk_size", self.chunk_size >= 1, ">= 1"),
            ("max_disturbed", self.max_disturbed >= 1, ">= 1"),
        ]
        for name, ok, rule in checks:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value) or not ok:
                raise MeasurementError(f"protocol setting {name} must be {rule}; got {value!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Protocol":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MeasurementError(f"unknown protocol setting(s) {unknown}; allowed: {sorted(known)}")
        return cls(**data)


def median_ci(sorted_ms: Sequence[float], confidence: float) -> tuple[float, float]:
    """Distribution-free CI of the median: [x_(j), x_(n-j+1)] with the largest j such that
    P(Binomial(n, 1/2) < j) <= (1 - confidence) / 2. Too few runs for the confidence: the full range."""
    n = len(sorted_ms)
    tail = (1.0 - confidence) / 2.0
    cdf, j = 0.0, 0
    for k in range(n + 1):
        cdf += math.comb(n, k) / 2.0**n
        if cdf > tail:
            break
        j = k + 1
    if j == 0 or j > n - j + 1:
        return float(sorted_ms[0]), float(sorted_ms[-1])
    return float(sorted_ms[j - 1]), float(sorted_ms[n - j])


def summarize(times_ms: Sequence[float], confidence: float) -> dict[str, float]:
    """median, mean, p90, p99, IQR, CV and the CI of the median of one config's timed runs (ms)."""
    x = np.sort(np.asarray(times_ms, dtype=float))
    lo, hi = median_ci(x.tolist(), confidence)
    mean = float(x.mean())
    q25, q75 = np.percentile(x, [25, 75])
    return {
        "median_ms": float(np.median(x)),
        "mean_ms": mean,
        "p90_ms": float(np.percentile(x, 90)),
        "p99_ms": float(np.percentile(x, 99)),
        "iqr_ms": float(q75 - q25),
        "cv": float(x.std(ddof=1) / mean) if len(x) > 1 and mean > 0 else 0.0,
        "ci_low_ms": lo,
        "ci_high_ms": hi,
        "n_runs": int(len(x)),
    }


def ci_half_width(times_ms: Sequence[float], confidence: float) -> float:
    """Half-width of the median's CI relative to the median."""
    x = sorted(times_ms)
    lo, hi = median_ci(x, confidence)
    med = float(np.median(x))
    return (hi - lo) / 2.0 / med if med > 0 else math.inf


def _time_ms(run: Callable[[], Any]) -> float:
    t0 = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - t0) / 1e6


try:
    import resource

    def _preemptions() -> int:
        """Involuntary context switches of this process so far (all its threads): the kernel took
        a core away from it, i.e. another process competed for the CPU."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
except ImportError:  # Windows: no detection, every run counts as undisturbed

    def _preemptions() -> int:
        return 0


def _time_checked(run: Callable[[], Any]) -> tuple[float, bool]:
    """(milliseconds, disturbed): disturbed when the process was preempted during the run."""
    before = _preemptions()
    ms = _time_ms(run)
    return ms, _preemptions() != before


@dataclass
class _State:
    key: str
    run: Callable[[], Any]
    times: list
    warmup_runs: int = 0
    busy_s: float = 0.0
    disturbed: int = 0
    visits: int = 0  # visits that added at least one clean timed run
    disturbed_times: list = field(default_factory=list)
    done: bool = False
    converged: bool = False
    error: str = ""


def _warm_up(st: _State, p: Protocol) -> None:
    times: list[float] = []
    t_start = time.perf_counter()
    w = p.warmup_window
    while len(times) < p.warmup_max:
        times.append(_time_ms(st.run))
        n = len(times)
        if n >= max(p.warmup_min, 2 * w):
            prev, last = float(np.median(times[-2 * w:-w])), float(np.median(times[-w:]))
            if abs(last - prev) <= p.warmup_tol * prev:
                break
        if n >= p.warmup_min and time.perf_counter() - t_start >= p.warmup_max_seconds:
            break
    st.warmup_runs = len(times)
    st.busy_s += time.perf_counter() - t_start


def _visit(st: _State, p: Protocol) -> None:
    t_start = time.perf_counter()
    for _ in range(p.rewarm_runs):
        st.run()
    n_before = len(st.times)
    for _ in range(min(p.runs_per_visit, p.max_runs - len(st.times))):
        ms, disturbed = _time_checked(st.run)
        if disturbed and p.discard_disturbed:
            st.disturbed += 1  # another process took the CPU: not this model's latency
            st.disturbed_times.append(ms)
        else:
            st.times.append(ms)
    st.busy_s += time.perf_counter() - t_start
    n = len(st.times)
    st.visits += n > n_before
    timed_s = (sum(st.times) + sum(st.disturbed_times)) / 1e3
    if n >= p.min_runs and st.visits >= p.min_visits and ci_half_width(st.times, p.confidence) <= p.rel_ci:
        st.done, st.converged = True, True
    elif n >= p.max_runs or (n >= 3 and timed_s >= p.max_seconds) or st.disturbed >= p.max_disturbed or timed_s >= 3 * p.max_seconds:
        st.done = True
        if n < 3:  # a machine this busy leaves too few clean runs: keep the disturbed ones, flagged by the count
            st.times.extend(st.disturbed_times)


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ").replace("\r", " ")
    return text[:500]


def time_interleaved(runs: Sequence[tuple[str, Callable[[], Any]]], protocol: Protocol, rng: random.Random) -> dict[str, dict[str, Any]]:
    """Time every (key, run_once) with the protocol, interleaved in random order across rounds.

    Returns key -> stats (see `summarize`) plus warmup_runs, converged, measure_s, or key -> {"error": ...}
    for a config whose run raised (it is dropped; the others go on)."""
    states = [_State(key, run, []) for key, run in runs]
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        order = list(states)
        rng.shuffle(order)
        for st in order:
            try:
                _warm_up(st, protocol)
            except Exception as e:  # a crash or out-of-memory is recorded, the run goes on
                st.done, st.error = True, _error_text(e)
        while True:
            active = [st for st in states if not st.done]
            if not active:
                break
            rng.shuffle(active)
            for st in active:
                try:
                    _visit(st, protocol)
                except Exception as e:
                    st.done, st.error = True, _error_text(e)
    finally:
        if gc_was_enabled:
            gc.enable()
    out: dict[str, dict[str, Any]] = {}
    for st in states:
        if st.error:
            out[st.key] = {"error": st.error, "measure_s": st.busy_s, "warmup_runs": st.warmup_runs, "disturbed_runs": st.disturbed}
        else:
            stats = summarize(st.times, protocol.confidence)
            stats.update(warmup_runs=st.warmup_runs, converged=st.converged, measure_s=st.busy_s, disturbed_runs=st.disturbed)
            out[st.key] = stats
    return out


# ----------------------------------------------------------------------------------- driver
@dataclass
class Item:
    """One config to measure: its static record columns and how to prepare its run-once callable."""

    key: str
    row: dict  # every record column except the measured ones
    prepare: Callable[[], Callable[[], Any]]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def measure_items(
    items: Sequence[Item],
    protocol: Protocol,
    on_rows: Callable[[list[dict]], None],
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Prepare and time items chunk by chunk (`protocol.chunk_size` alive at once), calling
    `on_rows(rows)` after each chunk so a killed run keeps what it finished. A config whose
    preparation or run raises (crash, out of memory) becomes a row with status 'failed'."""
    rng = random.Random(protocol.seed)
    order = list(items)
    rng.shuffle(order)
    all_rows: list[dict] = []
    for start in range(0, len(order), protocol.chunk_size):
        chunk = order[start:start + protocol.chunk_size]
        rows: dict[str, dict] = {}
        runs: list[tuple[str, Callable[[], Any]]] = []
        prep_s: dict[str, float] = {}
        for it in chunk:
            t0 = time.perf_counter()
            try:
                runs.append((it.key, it.prepare()))
            except Exception as e:  # MemoryError included: record it, keep going
                rows[it.key] = _row(it, {"error": _error_text(e)}, time.perf_counter() - t0, protocol)
            prep_s[it.key] = time.perf_counter() - t0
        results = time_interleaved(runs, protocol, rng) if runs else {}
        del runs
        gc.collect()
        for it in chunk:
            if it.key not in rows:
                rows[it.key] = _row(it, results[it.key], prep_s[it.key], protocol)
        chunk_rows = [rows[it.key] for it in chunk]
        on_rows(chunk_rows)
        all_rows.extend(chunk_rows)
        if progress is not None:
            progress(len(chunk))
    return all_rows


def _row(item: Item, result: Mapping[str, Any], prepare_s: float, protocol: Protocol) -> dict:
    row = {c: "" for c in RECORD_COLUMNS}
    row.update(item.row)
    row.update(schema=SCHEMA, timestamp=utc_now(), prepare_s=round(prepare_s, 4), protocol=protocol.to_json())
    row["measure_s"] = round(float(result.get("measure_s", 0.0)), 4)
    row["warmup_runs"] = int(result.get("warmup_runs", 0))
    row["disturbed_runs"] = int(result.get("disturbed_runs", 0))
    if "error" in result:
        row.update(status="failed", error=result["error"], converged=False, n_runs=0)
        for c in STATS_COLUMNS:
            if c not in ("n_runs", "converged"):
                row[c] = ""
    else:
        row.update(status="ok", error="")
        for c in STATS_COLUMNS:
            row[c] = result[c]
    return row


# ----------------------------------------------------------------------------------- fingerprint
def short_hash(*parts: Any) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_info() -> tuple[str, str]:
    """(name, driver) of the first NVIDIA GPU via nvidia-smi; ("", "") without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "", ""
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return "", ""
    if not out or "," not in out[0]:
        return "", ""
    name, driver = out[0].rsplit(",", 1)
    return name.strip(), driver.strip()


def has_gpu() -> bool:
    return bool(gpu_info()[0]) or os.path.exists("/dev/nvidia0")


def _version(module: str) -> str:
    if module not in sys.modules:
        try:
            __import__(module)
        except Exception:
            return ""
    return str(getattr(sys.modules[module], "__version__", ""))


def machine_info(with_torch: bool) -> dict[str, Any]:
    """Fingerprint columns that do not depend on the settings. torch is only asked for its
    version when the caller already uses it (the kit runner never imports it)."""
    gpu_name, gpu_driver = gpu_info()
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": _cpu_cores(),
        "gpu_name": gpu_name,
        "gpu_driver": gpu_driver,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy_version": np.__version__,
        "torch_version": _version("torch") if with_torch else "",
        "onnxruntime_version": _version("onnxruntime"),
    }


def setting_columns(
    machine: Mapping[str, Any], backend: str, device: str, provider: str, threads: int, spinning: bool,
    dtype: str, batch: int, seq_len: int, shape_key: str,
) -> dict[str, Any]:
    """Settings + fingerprint columns and the three hashes that group and resume records."""
    backend_version = machine["torch_version"] if backend == "torch" else machine["onnxruntime_version"]
    fingerprint = short_hash(
        machine["cpu_model"], machine["cpu_cores"], machine["gpu_name"], machine["gpu_driver"],
        backend, backend_version, device, provider,
    )
    target_id = short_hash(fingerprint, threads, bool(spinning), dtype, shape_key)
    settings_id = short_hash(target_id, batch, seq_len)
    return dict(
        machine, backend=backend, device=device, provider=provider, threads=threads, spinning=bool(spinning),
        dtype=dtype, batch=batch, seq_len=seq_len, shape_key=shape_key,
        fingerprint=fingerprint, target_id=target_id, settings_id=settings_id,
    )


# ----------------------------------------------------------------------------------- CSV records
def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def read_rows(path: str) -> list[dict[str, str]]:
    """Rows of a records CSV as strings; MeasurementError if its columns are not this schema's."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = tuple(reader.fieldnames or ())
        if header != RECORD_COLUMNS:
            missing = [c for c in RECORD_COLUMNS if c not in header]
            extra = [c for c in header if c not in RECORD_COLUMNS]
            raise MeasurementError(
                f"records file '{path}' has another schema (expected {SCHEMA}): "
                f"missing columns {missing[:6]}, unknown columns {extra[:6]}"
            )
        rows = list(reader)
    bad = sorted({r.get("schema") for r in rows} - {SCHEMA})
    if bad:
        raise MeasurementError(f"records file '{path}' holds rows of schema {bad}; this version reads {SCHEMA}")
    return rows


def append_rows(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows to a records CSV by rewriting it atomically (temp file + rename): a kill at any
    moment leaves either the old or the new file, never half a row."""
    old = read_rows(path) if os.path.exists(path) and os.path.getsize(path) > 0 else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RECORD_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in old:
        writer.writerow(r)
    for r in rows:
        writer.writerow({c: _cell(r.get(c, "")) for c in RECORD_COLUMNS})
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def done_keys(path: str, settings_id: str, retry_failed: bool) -> set[str]:
    """Keys already measured under `settings_id` (failed ones too unless retry_failed)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return set()
    return {
        r["key"] for r in read_rows(path)
        if r["settings_id"] == settings_id and (r["status"] == "ok" or not retry_failed)
    }


# ----------------------------------------------------------------------------------- onnxruntime
ORT_DEVICE_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def check_ort_provider(provider: str) -> None:
    """Unknown provider, CUDA without a GPU, or a provider this onnxruntime build lacks: raise."""
    import onnxruntime as ort

    known = ort.get_all_providers()
    if provider not in known:
        raise MeasurementError(
            f"unknown onnxruntime execution provider {provider!r}; known: {', '.join(known)} "
            f"(available in this build: {', '.join(ort.get_available_providers())})"
        )
    available = ort.get_available_providers()
    if provider in CUDA_PROVIDERS and not has_gpu():
        raise MeasurementError(f"CUDA asked for on a machine without a GPU (provider {provider}); use the CPU provider")
    if provider not in available:
        raise MeasurementError(
            f"onnxruntime {ort.__version__} has no {provider} in this build; available: {', '.join(available)}"
            + (" (install onnxruntime-gpu for CUDA)" if provider in CUDA_PROVIDERS else "")
        )


def ort_session(path: str, provider: str, threads: int, spinning: bool):
    """An InferenceSession with the thread settings the records claim (spinning off by default:
    on few shared cores onnxruntime's spinning threads make timings useless)."""
    import onnxruntime as ort

    check_ort_provider(provider)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    flag = "1" if spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", flag)
    opts.add_session_config_entry("session.inter_op.allow_spinning", flag)
    sess = ort.InferenceSession(str(path), opts, providers=[provider])
    if sess.get_providers()[0] != provider:
        # onnxruntime falls back to the CPU silently when a provider fails to load.
        raise MeasurementError(f"onnxruntime could not use {provider} (session runs on {sess.get_providers()}); not timing a fallback")
    return sess


def ort_feeds(input_names: Sequence[str], batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids, every token real (no padding): the cost of a full batch of this length."""
    rng = np.random.default_rng(seed)
    low = min(1000, vocab_size // 2)
    feeds = {"input_ids": rng.integers(low, vocab_size, size=(batch, seq_len), dtype=np.int64)}
    if "attention_mask" in input_names:
        feeds["attention_mask"] = np.ones((batch, seq_len), dtype=np.int64)
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros((batch, seq_len), dtype=np.int64)
    return feeds


def ort_run_once(sess, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    """session.run returns host numpy arrays, so a CUDA run is complete (synchronised) when it returns."""
    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise MeasurementError(f"model inputs {missing} have no feed; feeds: {sorted(feeds)}")
    inputs = {n: feeds[n] for n in names}
    return lambda: sess.run(None, inputs)
