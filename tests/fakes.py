"""Fakes shared by the test packages, one home each: the fake machine fingerprint of synthetic
records and the known latency functions that synthetic predictors are fitted on."""

from __future__ import annotations

FAKE_MACHINE = {
    "cpu_model": "Test CPU",
    "cpu_cores": 2,
    "gpu_name": "",
    "gpu_driver": "",
    "os": "test-os",
    "python": "3.11",
    "numpy_version": "2",
    "torch_version": "2.13",
    "onnxruntime_version": "1.32",
}


def additive_ms(s, batch: int = 1, seq: int = 16) -> float:
    """Known answer: base + per attention block (0.3 + 0.05 per head) + per FFN block (0.2 + 0.01 per neuron),
    every term scaled by tokens the way layer-regression's features are (layer-regression fits it exactly)."""
    t = batch * seq / 16
    v = 1.0 + 0.1 * t
    for h, f in zip(s.heads, s.ffn):
        if h:
            v += 0.3 + 0.05 * h * t + 0.001 * h * t * seq
        if f:
            v += 0.2 + 0.01 * f * t
    return v


def synthetic_latency_ms(s, batch: int, seq: int) -> float:
    """A known, additive latency (ms) that does not depend on the input shape (the search tests' predictor)."""
    v = 1.0
    for h, f in zip(s.heads, s.ffn):
        v += (0.3 + 0.05 * h if h else 0.0) + (0.2 + 0.01 * f if f else 0.0)
    return v


def fake_rows(
    shape,
    subnets,
    fn,
    batch: int = 1,
    seq: int = 16,
    threads: int = 1,
    sampler: str = "uniform",
    machine: dict | None = None,
    backend: str = "onnxruntime",
    dtype: str = "float32",
) -> list[dict]:
    """Records rows (as `dynasearch measure` writes them) for `subnets` of `shape`, measured on a fake
    machine (FAKE_MACHINE unless given) at `dtype` with latency fn(subnet, batch, seq), every percentile equal."""
    from dynasearch_runtime.fingerprint import setting_columns
    from dynasearch_runtime.schema import RECORD_COLUMNS, SCHEMA
    from predictors.measure import shape_key, static_row

    provider = "CPUExecutionProvider" if backend == "onnxruntime" else ""
    cols = setting_columns(
        machine or FAKE_MACHINE, backend, "cpu", provider, threads, False, dtype, batch, seq, shape_key(shape)
    )
    out = []
    for s in subnets:
        r = {c: "" for c in RECORD_COLUMNS}
        r.update(static_row(shape, s, sampler, cols, "test"))
        ms = fn(s, batch, seq)
        r.update(
            schema=SCHEMA,
            timestamp="2026-01-01T00:00:00Z",
            status="ok",
            median_ms=ms,
            mean_ms=ms,
            p90_ms=ms,
            p99_ms=ms,
            iqr_ms=0.0,
            cv=0.0,
            ci_low_ms=ms,
            ci_high_ms=ms,
            n_runs=5,
            warmup_runs=3,
            converged=True,
            measure_s=0.1,
            prepare_s=0.1,
            protocol="{}",
        )
        out.append(r)
    return out
