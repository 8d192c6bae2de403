"""Argument checks, one home each: a named value and its rule, the message as the CLI prints it.

Each raises the caller's error class (SearchError, MeasurementError, DataError, ...) so the CLI maps
it to its exit code; the value is returned so a check can stand in an assignment."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def is_positive_int(value: Any) -> bool:
    """An int >= 1 (a bool is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def positive_int(name: str, value: Any, error: type[Exception], *, rule: str = "a positive integer") -> int:
    """`value` when it is an int >= 1; else error("NAME must be RULE; got VALUE")."""
    if not is_positive_int(value):
        raise error(f"{name} must be {rule}; got {value!r}")
    return value


def one_of(what: str, value: Any, allowed: Iterable[str], error: type[Exception]) -> Any:
    """`value` when it is in `allowed`; else error("unknown WHAT VALUE; allowed: A, B, C")."""
    allowed = list(allowed)
    if value not in allowed:
        raise error(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return value


_ABSENT = object()  # a field one side of a difference does not have: shown as (absent)


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """'field: old -> new' for every field whose value differs, for mismatch errors on resume (the
    saved value first, the asked one second). Nested objects are walked, so a field is named by its
    path (space.ffn_choices) and each value is whole, never a dict or JSON cut short; a field one
    side lacks shows as (absent)."""
    out = []
    for k in list(old) + [k for k in new if k not in old]:
        a, b = old.get(k, _ABSENT), new.get(k, _ABSENT)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}: {_shown(a)} -> {_shown(b)}")
    return out


def _shown(value: Any) -> str:
    """A value as a message shows it: text bare, anything else as JSON (lists [4, 2], null, true)."""
    if value is _ABSENT:
        return "(absent)"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


# ---- native bfloat16 (issue 25): the one place that says where bf16 autocast pays (`dynasearch train --bf16`)


def cpu_bf16_flags() -> tuple[str, ...]:
    """This CPU's native bfloat16 features: 'avx512_bf16' (AVX512-BF16 dot products) and/or 'amx_bf16' (AMX
    tiles; every AMX CPU has AMX-BF16); () when it has neither. Read through torch's cpuinfo, which checks that
    the OS enables the registers too; /proc/cpuinfo's flags where this torch lacks the probes.
    Not torch.ops.mkldnn._is_mkldnn_bf16_supported(): it is true on any AVX512BW/VL/DQ CPU, where oneDNN
    emulates bf16 more slowly than it runs float32. Tests monkeypatch this function."""
    import torch

    probes = (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_bf16", "_is_amx_tile_supported"))
    cpu = getattr(torch, "cpu", None)
    if cpu is not None and all(callable(getattr(cpu, fn, None)) for _, fn in probes):
        return tuple(name for name, fn in probes if getattr(cpu, fn)())
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        flags = set()
    return tuple(name for name, _ in probes if name in flags)


def bf16_unsupported(device: Any) -> str | None:
    """None where bfloat16 autocast runs natively on `device` (a torch.device or 'cpu', 'cuda:0'): a CPU with
    AVX512-BF16 or AMX, a CUDA GPU with bf16 (compute capability 8.0 or newer). Else why not, naming the CPU
    or GPU and what is needed, for the caller's message."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        if cpu_bf16_flags():
            return None
        from dynasearch_runtime.fingerprint import _cpu_model  # the name measurements record

        cpu = _cpu_model()
        return f"the CPU '{cpu}' has neither AVX512-BF16 nor AMX, so bf16 would be emulated (slower than float32)"
    if device.type == "cuda":
        try:
            ok = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.3 has no including_emulation (and does not emulate)
            ok = torch.cuda.is_bf16_supported()
        if ok:
            return None
        major, minor = torch.cuda.get_device_capability(device)
        gpu = torch.cuda.get_device_name(device)
        return f"the GPU '{gpu}' (compute capability {major}.{minor}) has no native bf16 (needs 8.0 or newer)"
    return f"bf16 autocast is supported on CPU and CUDA devices only, not {device.type}"


def require_native_bf16(what: str, device: Any, error: type[Exception], remedy: str) -> None:
    """error("WHAT needs native bfloat16: WHY; REMEDY") unless bf16 autocast runs natively on `device`."""
    reason = bf16_unsupported(device)
    if reason is not None:
        raise error(f"{what} needs native bfloat16: {reason}; {remedy}")
