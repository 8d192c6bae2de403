"""Test helper: a Hugging Face export of a sub-network written fast (no reload check), optionally
with its config.json edited, for the tests of exported sub-networks used as inputs (issue 15)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def make_export(
    src: str | Path, out: str | Path, subnet: dict[str, list[int]], edit: Callable[[dict[str, Any]], None] | None = None
) -> Path:
    """`dynasearch export SRC --subnet ... --format hf --out OUT` without its checks; `edit` may
    change the written config.json in place (e.g. to make an older-style or a damaged export)."""
    from dynabert.backbone import load_model, tokenizer_files
    from dynabert.export import save_hf
    from dynabert.extract import extract_subnet
    from dynabert.subnet import SubnetConfig

    out = Path(out)
    out.mkdir(parents=True)
    save_hf(extract_subnet(load_model(src), SubnetConfig.from_dict(subnet)).eval(), out)
    for f in tokenizer_files(src):
        shutil.copyfile(f, out / f.name)
    if edit is not None:
        cfg = json.loads((out / "config.json").read_text())
        edit(cfg)
        (out / "config.json").write_text(json.dumps(cfg))
    return out
