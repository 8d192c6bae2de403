"""Backends: each only PREPARES an extracted sub-network and returns a callable that runs it once.

Timing is not done here: one protocol (`dynasearch_runtime.protocol.time_interleaved`) times every backend.
Backends never see the super-network: `prepare` takes the extracted, physically small model, so what
is timed is what is shipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynabert.checks import one_of, positive_int
from dynabert.io import process_dead, process_tag
from dynasearch_runtime.errors import MeasurementError
from dynasearch_runtime.fingerprint import ORT_DEVICE_PROVIDERS, has_gpu, ort_feeds, ort_run_once, ort_session

BACKENDS = ("torch", "onnxruntime")
DEVICES = ("cpu", "cuda")
TORCH_DTYPES = ("float32", "float16", "bfloat16")
ORT_DTYPES = ("float32", "int8")  # int8: the fp32 export quantised by onnxruntime (dynabert.quantize, dynamic)


@dataclass(frozen=True)
class BackendSettings:
    """Where and how a sub-network runs. `provider` (onnxruntime only) defaults from the device."""

    backend: str = "onnxruntime"
    device: str = "cpu"
    threads: int = 1  # intra-op threads: the notes show 1 thread is the stable setting on 2 vCPUs
    spinning: bool = False  # onnxruntime intra-op spinning; recorded, and off by default
    dtype: str = "float32"
    batch: int = 1
    seq_len: int = 128
    provider: str = ""

    def __post_init__(self) -> None:
        one_of("backend", self.backend, BACKENDS, MeasurementError)
        one_of("device", self.device, DEVICES, MeasurementError)
        for name in ("threads", "batch", "seq_len"):
            positive_int(name, getattr(self, name), MeasurementError)
        if self.backend == "torch":
            if self.provider:
                raise MeasurementError(
                    f"execution provider {self.provider!r} is an onnxruntime option; the torch backend takes --device"
                )
            if self.spinning:
                raise MeasurementError("thread spinning is an onnxruntime option; torch has no such setting")
            if self.dtype not in TORCH_DTYPES:
                raise MeasurementError(f"unknown dtype {self.dtype!r} for torch; allowed: {', '.join(TORCH_DTYPES)}")
        else:
            if self.dtype not in ORT_DTYPES:
                raise MeasurementError(
                    f"dtype {self.dtype!r} is not supported with onnxruntime; allowed: {', '.join(ORT_DTYPES)}"
                )
            if not self.provider:
                object.__setattr__(self, "provider", ORT_DEVICE_PROVIDERS[self.device])
            elif self.device == "cpu" and self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                object.__setattr__(self, "device", "cuda")

    def with_shape(self, batch: int, seq_len: int) -> BackendSettings:
        return BackendSettings(
            self.backend, self.device, self.threads, self.spinning, self.dtype, batch, seq_len, self.provider
        )


class Backend(ABC):
    """Contract: `check()` raises MeasurementError if the backend cannot run here; `configure()`
    applies process-wide settings (threads); `prepare(model)` returns a zero-argument callable that
    runs the model once on a fixed input and returns only when the result is complete."""

    def __init__(self, settings: BackendSettings):
        self.settings = settings

    @abstractmethod
    def check(self) -> None: ...

    def configure(self) -> None:  # noqa: B027 - optional hook: most backends set nothing
        """Process-wide settings (thread pools)."""

    @abstractmethod
    def prepare(self, model: Any, key: str) -> Callable[[], Any]: ...

    def close(self) -> None:
        """Release files the backend made and give torch back the threads it had before configure()."""
        threads = getattr(self, "_torch_threads_before", None)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
            self._torch_threads_before = None

    def _set_torch_threads(self, n: int) -> None:
        import torch

        # Process-wide: every later torch op in this process uses this many intra-op threads, so close()
        # restores the count (a measure of --threads 999 must not leave a library user's process at 999).
        if getattr(self, "_torch_threads_before", None) is None:
            self._torch_threads_before = torch.get_num_threads()
        torch.set_num_threads(n)


class TorchBackend(Backend):
    def check(self) -> None:
        import torch

        if self.settings.device == "cuda" and not torch.cuda.is_available():
            raise MeasurementError(
                "CUDA asked for on a machine without a GPU (torch.cuda.is_available() is False); use --device cpu"
            )

    def configure(self) -> None:
        self._set_torch_threads(self.settings.threads)

    def prepare(self, model: Any, key: str) -> Callable[[], Any]:
        import torch

        from dynabert.onnx_export import input_names

        s = self.settings
        dtype = getattr(torch, s.dtype)
        device = torch.device(s.device)
        model = model.to(device=device, dtype=dtype).eval()
        cfg = model.config
        feeds = {
            k: torch.from_numpy(v).to(device)
            for k, v in ort_feeds(input_names(model), s.batch, s.seq_len, cfg.vocab_size).items()
        }
        cuda = device.type == "cuda"

        def run_once() -> Any:
            with torch.inference_mode():
                out = model(**feeds).logits
            if cuda:
                torch.cuda.synchronize()  # kernels are asynchronous: the run ends when the GPU is done
            return out

        return run_once


ONNX_TMP_PREFIX = "dynasearch-onnx-"  # + process_tag() + "-" + random: whose exports a temporary folder holds


def remove_dead_onnx_folders(root: str | Path | None = None) -> list[Path]:
    """Remove the temporary ONNX folders (in `root`, default the system temp directory) of runs that
    were killed: made on this host by a process that no longer runs. A live worker's stay, and so
    do folders of other hosts (a shared /tmp) and untagged ones of older versions."""
    gone = []
    for p in Path(root or tempfile.gettempdir()).glob(ONNX_TMP_PREFIX + "*"):
        host, _, rest = p.name[len(ONNX_TMP_PREFIX) :].partition("-")
        if p.is_dir() and process_dead(f"{host}-{rest.partition('-')[0]}"):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


class OrtBackend(Backend):
    """Exports each extracted model to ONNX (cached by sub-network and backbone shape: the file does
    not depend on batch, sequence length or threads) and runs it in an InferenceSession. dtype int8:
    the fp32 export quantised (`dynabert.quantize.quantize_onnx`, dynamic) and the int8 file timed."""

    def __init__(self, settings: BackendSettings, cache_dir: str | Path | None = None):
        super().__init__(settings)
        self._tmp = None
        if cache_dir is None:
            remove_dead_onnx_folders()  # a killed run's exports (~60 MB each) would stay in /tmp for ever
            self._tmp = tempfile.TemporaryDirectory(prefix=f"{ONNX_TMP_PREFIX}{process_tag()}-")
            cache_dir = self._tmp.name
        self.cache_dir = Path(cache_dir)

    def check(self) -> None:
        from dynasearch_runtime.fingerprint import check_ort_provider

        if self.settings.device == "cuda" and not has_gpu():
            raise MeasurementError("CUDA asked for on a machine without a GPU; use --device cpu")
        check_ort_provider(self.settings.provider)

    def configure(self) -> None:
        # Extraction and export run on torch in this process: with one torch thread no idle OpenMP
        # worker spins on the cores onnxruntime is being timed on.
        self._set_torch_threads(1)

    def onnx_path(self, model: Any, key: str) -> Path:
        from dynabert.extract import model_shape
        from dynabert.onnx_export import export_onnx
        from dynasearch_runtime.fingerprint import short_hash

        shape_key = short_hash(model_shape(model).to_dict())
        path = self.cache_dir / f"{shape_key}-{key}.onnx"
        int8 = path.with_suffix(".int8.onnx")
        if self.settings.dtype == "int8" and int8.exists():
            return int8
        exported = not path.exists()
        if exported:
            # Weights are random: latency does not depend on them, so no numeric verification here.
            export_onnx(model, path, verify=False)
        if self.settings.dtype != "int8":
            return path
        from dynabert.quantize import quantize_onnx

        try:
            quantize_onnx(path, int8)  # an ExportError, as export_onnx's: the config is recorded as failed
        finally:
            # In this run's own temporary cache an export made only to be quantised goes (one file per
            # config, as for float32); a shared --onnx-cache keeps it for other runs (and their readers).
            if exported and self._tmp is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
        return int8

    def prepare(self, model: Any, key: str) -> Callable[[], Any]:
        from dynabert.onnx_export import input_names

        s = self.settings
        path = self.onnx_path(model, key)
        sess = ort_session(str(path), s.provider, s.threads, s.spinning)
        return ort_run_once(sess, ort_feeds(input_names(model), s.batch, s.seq_len, model.config.vocab_size))

    def close(self) -> None:
        super().close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()


def make_backend(settings: BackendSettings, onnx_cache: str | Path | None = None) -> Backend:
    backend: Backend = TorchBackend(settings) if settings.backend == "torch" else OrtBackend(settings, onnx_cache)
    backend.check()
    return backend


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
