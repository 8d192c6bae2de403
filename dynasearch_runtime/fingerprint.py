"""The environment fingerprint (CPU, cores, GPU, library versions, settings hashes) and the
onnxruntime session every onnxruntime timing uses. Part of the device runtime (standard library +
numpy; onnxruntime imported lazily; see `dynasearch_runtime`)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import bounds
from .errors import MeasurementError


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
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_warning(threads: Sequence[int]) -> str:
    """A warning line when a thread count exceeds the cores this process may use ('' otherwise)."""
    cores = _cpu_cores()
    over = sorted({t for t in threads if t > cores})
    if not over:
        return ""
    return (
        f"warning: --threads {' '.join(map(str, over))} is more than this machine has: this machine has {cores} "
        f"core(s) usable; the threads will share cores and the timings measure the contention"
    )


def max_seq_len(shape: Mapping[str, Any]) -> int:
    """The longest sequence the backbone's position table holds (RoBERTa numbers positions from pad_id + 1)."""
    n = int(shape.get("max_positions", 512))
    return n - 2 if shape.get("flavor") == "roberta" else n


def check_seq_lens(seq_lens: Sequence[int], shape: Mapping[str, Any]) -> None:
    limit = max_seq_len(shape)
    bad = [s for s in seq_lens if bounds.violation("seq_len", s, high=limit) is not None]
    if bad:
        raise MeasurementError(
            f"--seq-len {bad[0]} is longer than the backbone's {limit} positions (max_position_embeddings); "
            f"use a sequence length of at most {limit}"
        )


def gpu_info() -> tuple[str, str]:
    """(name, driver) of the first NVIDIA GPU via nvidia-smi; ("", "") without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "", ""
    try:
        out = (
            subprocess.run(
                [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            .stdout.strip()
            .splitlines()
        )
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
    machine: Mapping[str, Any],
    backend: str,
    device: str,
    provider: str,
    threads: int,
    spinning: bool,
    dtype: str,
    batch: int,
    seq_len: int,
    shape_key: str,
) -> dict[str, Any]:
    """Settings + fingerprint columns and the three hashes that group and resume records."""
    backend_version = machine["torch_version"] if backend == "torch" else machine["onnxruntime_version"]
    fingerprint = short_hash(
        machine["cpu_model"],
        machine["cpu_cores"],
        machine["gpu_name"],
        machine["gpu_driver"],
        backend,
        backend_version,
        device,
        provider,
    )
    target_id = short_hash(fingerprint, threads, bool(spinning), dtype, shape_key)
    settings_id = short_hash(target_id, batch, seq_len)
    return dict(
        machine,
        backend=backend,
        device=device,
        provider=provider,
        threads=threads,
        spinning=bool(spinning),
        dtype=dtype,
        batch=batch,
        seq_len=seq_len,
        shape_key=shape_key,
        fingerprint=fingerprint,
        target_id=target_id,
        settings_id=settings_id,
    )


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
        raise MeasurementError(
            f"onnxruntime could not use {provider} (session runs on {sess.get_providers()}); not timing a fallback"
        )
    return sess


def ort_feeds(
    input_names: Sequence[str], batch: int, seq_len: int, vocab_size: int, seed: int = 0
) -> dict[str, np.ndarray]:
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
