"""Measure sub-networks on this machine: extract each one, prepare it on a backend, time it with
the one protocol, append the rows to a records CSV. Re-running skips what is already measured
under the same fingerprint and settings; a config that crashes is recorded as failed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from dynabert.subnet import BackboneShape, SubnetConfig, count_flops, count_params

from ._core import Item, Protocol, append_rows, done_keys, machine_info, measure_items, setting_columns, short_hash
from .backends import BackendSettings, make_backend
from .errors import MeasurementError
from .records import read_records
from .samplers import labels_by_key


def shape_key(shape: BackboneShape) -> str:
    return short_hash(shape.to_dict())


def load_shape(model_dir: str | Path | None) -> BackboneShape:
    """The backbone shape of a model directory from its config.json alone (no weights read), so
    users can measure before training. Falls back to loading the model when the config does not
    say its architecture (old reference checkpoints)."""
    from dynabert.backbone import read_config, resolve_model_dir
    from dynabert.errors import ModelLoadError

    d = resolve_model_dir(model_dir)
    cfg = read_config(d)
    model_type = cfg.get("model_type")
    if model_type in ("bert", "roberta", "xlm-roberta", "camembert", "dynabert"):
        try:
            heads = cfg["num_attention_heads"]
            return BackboneShape(
                num_layers=cfg["num_hidden_layers"], num_heads=heads,
                head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, hidden_size=cfg["hidden_size"],
                intermediate_size=cfg["intermediate_size"], vocab_size=cfg.get("vocab_size", 30522),
                max_positions=cfg.get("max_position_embeddings", 512), type_vocab_size=cfg.get("type_vocab_size", 2),
                num_labels=cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2,
                flavor=cfg.get("flavor") or ("bert" if model_type == "bert" else "roberta"),
            )
        except KeyError as e:
            raise ModelLoadError(f"{d / 'config.json'} lacks {e.args[0]!r}, needed for the backbone shape") from None
    from dynabert.backbone import load_model
    from dynabert.extract import model_shape

    return model_shape(load_model(d))


def static_row(shape: BackboneShape, subnet: SubnetConfig, sampler: str, columns: dict[str, Any], run_id: str) -> dict[str, Any]:
    return dict(
        columns, run_id=run_id, sampler=sampler, key=subnet.key, subnet=subnet.to_json(), depth=subnet.depth,
        heads_sum=sum(subnet.heads), ffn_sum=sum(subnet.ffn), params=count_params(shape, subnet)["total"],
        flops=count_flops(shape, subnet, columns["batch"], columns["seq_len"]),
        shape=json.dumps(shape.to_dict(), sort_keys=True),
    )


def measure(
    shape: BackboneShape,
    subnets: Sequence[SubnetConfig],
    settings: BackendSettings | Sequence[BackendSettings],
    records_path: str | Path,
    protocol: Protocol = Protocol(),
    *,
    model: Any = None,
    sampler: str | Sequence[str] = "file",
    onnx_cache: str | Path | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Measure `subnets` under each settings (e.g. several batch sizes) and append to `records_path`.

    model: a super-network to extract from; None builds a random-weight one of `shape` once (latency
    does not depend on weights). sampler: one label for all, or one per sub-network (so configs of
    several samplers are interleaved in one run and see the same machine). Returns the rows this
    call wrote (a DataFrame in records format)."""
    from tqdm import tqdm

    from dynabert.extract import extract_subnet, random_like

    settings_list = [settings] if isinstance(settings, BackendSettings) else list(settings)
    if not settings_list:
        raise MeasurementError("no settings to measure under")
    subnets = [s.validate(shape) for s in subnets]
    label_of = labels_by_key(subnets, sampler)
    if len(label_of) != len(subnets):
        subnets = list({s.key: s for s in subnets}.values())
    records_path = str(records_path)
    if Path(records_path).exists():
        read_records(records_path)  # another schema: refuse before measuring anything
    run_id = uuid.uuid4().hex[:12]
    skey = shape_key(shape)
    written: list[dict] = []
    full = None
    for st in settings_list:
        backend = make_backend(st, onnx_cache)
        try:
            backend.configure()
            machine = machine_info(with_torch=True)
            columns = setting_columns(machine, st.backend, st.device, st.provider, st.threads, st.spinning, st.dtype, st.batch, st.seq_len, skey)
            done = done_keys(records_path, columns["settings_id"], retry_failed) if resume else set()
            todo = [s for s in subnets if s.key not in done]
            if not todo:
                continue
            if full is None:
                full = model if model is not None else random_like(shape)

            def prepare_fn(subnet: SubnetConfig, backend=backend, st=st):
                def prepare():
                    small = extract_subnet(full, subnet)
                    # Every extracted model reads the same (unsliced) word-embedding rows: share the
                    # tensor instead of one 47 MB copy per model (MiniLM), so a whole setting's configs
                    # fit in memory at once and are interleaved together. Timing is unchanged. Only where
                    # the backend converts nothing (Module.to would convert the shared tensor in place).
                    if st.device == "cpu" and st.dtype == "float32":
                        small.embeddings.word_embeddings.weight = full.embeddings.word_embeddings.weight
                    return backend.prepare(small, subnet.key)
                return prepare

            items = [Item(s.key, static_row(shape, s, label_of[s.key], columns, run_id), prepare_fn(s)) for s in todo]
            desc = f"{st.backend}/{st.device} t{st.threads} b{st.batch} s{st.seq_len}"
            with tqdm(total=len(items), desc=desc, unit="config", disable=not progress, leave=False) as bar:
                written += measure_items(items, protocol, lambda rows: append_rows(records_path, rows), bar.update)
        finally:
            backend.close()
    if not written:
        return pd.DataFrame(columns=list(read_records(records_path).columns)) if Path(records_path).exists() else pd.DataFrame()
    all_rows = read_records(records_path)
    return all_rows[all_rows["run_id"] == run_id].reset_index(drop=True)
