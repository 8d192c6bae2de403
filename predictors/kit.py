"""`dynasearch kit`: ONNX files of sampled configs plus a self-contained runner for devices that
cannot run the full tool (a phone-class board, a server without torch).

The kit holds the device runtime, the folder `dynasearch_runtime` copied as it is to
`runtime/` (the very code the library times with: records schema and files, fingerprint and
onnxruntime session, speed correction, protocol, driver, the runner's command line), and a
runner.py of a few lines that puts the kit folder on the import path and calls
`runtime.runner.main`. It needs only Python 3.8+, numpy and onnxruntime, and writes the same records
format as `dynasearch measure`. A folder, not a zipapp: `python runner.py` stays the command, and
the code can be read (and a traceback followed) on the device.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynabert.subnet import BackboneShape, SubnetConfig, count_flops, count_params
from dynasearch_runtime import bounds
from dynasearch_runtime.errors import MeasurementError
from dynasearch_runtime.fingerprint import ORT_DEVICE_PROVIDERS, check_seq_lens
from dynasearch_runtime.protocol import Protocol
from dynasearch_runtime.runner import KIT_VERSION

from .measure import resolve_anchor, shape_key
from .samplers import labels_by_key

RUNTIME = Path(__file__).resolve().parent.parent / "dynasearch_runtime"

RUNNER = """#!/usr/bin/env python3
# dynasearch measurement kit runner: runs runtime/ (a copy of dynasearch_runtime) on this kit.
# Needs only Python, numpy and onnxruntime. Usage: python runner.py [--threads 1] [--out records.csv]
import os
import sys

if __name__ == "__main__":
    kit = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, kit)
    from runtime.runner import main

    sys.exit(main(kit))
"""


def copy_runtime(dest: Path) -> None:
    """The device runtime's modules, as they are, into dest (no caches)."""
    shutil.copytree(RUNTIME, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def write_kit(
    out_dir: str | Path,
    shape: BackboneShape,
    subnets: Sequence[SubnetConfig],
    *,
    sampler: str | Sequence[str] = "file",
    batches: Sequence[int] = (1,),
    seq_lens: Sequence[int] = (128,),
    threads: Sequence[int] = (1,),
    provider: str = "CPUExecutionProvider",
    spinning: bool = False,
    protocol: Protocol = Protocol(),
    anchor: SubnetConfig | str | None = "full",
    model: Any = None,
    verify: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write out_dir/{models/<key>.onnx, kit.json, runtime/, runner.py, README.txt} atomically. sampler: one
    label for all configs or one per config (recorded in the records' sampler column). anchor: the
    config the runner times in every round ("full": the whole backbone; None: none), for its
    per-round speed correction and speed index (see `measure`)."""
    from tqdm import tqdm

    from dynabert.extract import extract_subnet, random_like
    from dynabert.io import atomic_dir, check_output_dir, write_json, write_text
    from dynabert.onnx_export import export_onnx, input_names

    if provider in ORT_DEVICE_PROVIDERS:  # accept "cpu" / "cuda" for convenience
        provider = ORT_DEVICE_PROVIDERS[provider]
    if not provider.endswith("ExecutionProvider"):
        raise MeasurementError(
            f"unknown onnxruntime execution provider {provider!r}; e.g. CPUExecutionProvider, CUDAExecutionProvider"
        )
    for name, values in (("batch", batches), ("seq_len", seq_lens), ("threads", threads)):  # kind = name
        if not values:
            raise MeasurementError(f"{name} values must be given; got {list(values)}")
        for v in values:  # what the kit's runner accepts from kit.json (runner.KIT_FIELDS)
            bounds.check(name, v, f"each of the {name} values", MeasurementError, hint=f"{name} {list(values)}")
    label_of = labels_by_key(subnets, sampler)
    subnets = list({s.key: s.validate(shape) for s in subnets}.values())
    if not subnets:
        raise MeasurementError("a kit needs at least one config")
    check_seq_lens(seq_lens, shape.to_dict())
    anchor_cfg = resolve_anchor(shape, anchor)
    check_output_dir(out_dir, overwrite)  # also refuses a folder that cannot take files (/proc, read-only)
    full = model if model is not None else random_like(shape)
    configs = []
    todo = subnets + ([anchor_cfg] if anchor_cfg is not None and anchor_cfg.key not in label_of else [])
    with atomic_dir(out_dir, overwrite) as tmp:
        (tmp / "models").mkdir()
        for s in tqdm(todo, desc="exporting ONNX", unit="config", disable=not progress, leave=False):
            small = extract_subnet(full, s)
            export_onnx(small, tmp / "models" / f"{s.key}.onnx", verify=verify)
            configs.append(
                {
                    "key": s.key,
                    "subnet": s.to_json(),
                    "sampler": label_of.get(s.key, "anchor"),
                    "depth": s.depth,
                    "heads_sum": sum(s.heads),
                    "ffn_sum": sum(s.ffn),
                    "params": count_params(shape, s)["total"],
                    "inputs": input_names(small),
                    "flops": {f"{b}x{t}": count_flops(shape, s, b, t) for b in batches for t in seq_lens},
                }
            )
        anchor_entry = next((c for c in configs if anchor_cfg is not None and c["key"] == anchor_cfg.key), None)
        configs = [c for c in configs if c["key"] in label_of]
        write_json(
            tmp / "kit.json",
            {
                "kit_version": KIT_VERSION,
                "anchor": anchor_entry,
                "shape": json.dumps(shape.to_dict(), sort_keys=True),
                "shape_key": shape_key(shape),
                "vocab_size": shape.vocab_size,
                "batch": list(batches),
                "seq_len": list(seq_lens),
                "threads": list(threads),
                "provider": provider,
                "spinning": spinning,
                "protocol": json.loads(protocol.to_json()),
                "configs": configs,
            },
        )
        copy_runtime(tmp / "runtime")
        write_text(tmp / "runner.py", RUNNER)
        write_text(
            tmp / "README.txt",
            _README.format(
                n=len(configs), provider=provider, threads=list(threads), batch=list(batches), seq=list(seq_lens)
            ),
        )
    return Path(out_dir)


_README = """dynasearch measurement kit: {n} sub-networks as ONNX files (models/<key>.onnx).

On the target device (needs only Python 3.8+, numpy and onnxruntime):
    pip install numpy onnxruntime          # or the device's onnxruntime build
    python runner.py                       # writes records.csv here; re-run to resume after a stop
    python runner.py --threads 1 2 --batch 1 8 --seq-len 128 --provider {provider}

Defaults: provider {provider}, threads {threads}, batch {batch}, sequence length {seq}, thread
spinning off. records.csv has the same format as `dynasearch measure`; bring it back and run
    dynasearch fit-predictor records.csv --out predictor-dir
"""
