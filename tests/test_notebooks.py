"""The notebooks (issue 10 item 5) run top to bottom on the tiny model: their parameters cell (tag
'parameters') is replaced, then they are executed with nbclient on an ipykernel kernel."""

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

sys.path.insert(0, str(Path(__file__).resolve().parent / "search"))

from searchkit import FAKE_MACHINE, REPO, predictor_records  # noqa: E402

pytest_plugins = [
    "searchkit"
]  # its session fixtures, shared by every module (importing them would copy them per module)

NOTEBOOKS = REPO / "notebooks"


def execute(name: str, params: dict, cwd: Path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    cells[0].source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def outputs_text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            parts.append(o.get("text", "") or json.dumps(o.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_new_hardware.ipynb"])
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None


def test_quickstart_notebook(sk_results, tmp_path):
    nb = execute(
        "01_quickstart.ipynb",
        {"RESULTS": str(sk_results), "TARGET_MS": 4.0, "EXPORT_DIR": str(tmp_path / "deploy"), "EXPORT_FORMATS": "hf"},
        tmp_path,
    )
    text = outputs_text(nb)
    assert "not verified" in text
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))  # the front plot
    assert (tmp_path / "deploy" / "manifest.json").is_file()


def test_new_hardware_notebook(sk_base, sk_run, tmp_path, fast_tmp):
    from dynasearch_runtime.schema import append_rows

    records = tmp_path / "records.csv"
    append_rows(
        str(records), predictor_records(sk_base)
    )  # another device's records (fake fingerprint): no verification
    nb = execute(
        "02_new_hardware.ipynb",
        {
            "MODEL_DIR": str(sk_base),
            "RUN": str(sk_run),
            "RECORDS": str(records),
            "WORK": str(fast_tmp / "work"),
            "SEQ_LEN": 16,
            "N_CONFIGS": 8,
            "TRIALS": 14,
            "TARGET_MS": 4.0,
            "VERIFY": False,
            "FAST": True,
        },
        tmp_path,
    )
    text = outputs_text(nb)
    assert "held-out metrics" in text and FAKE_MACHINE["cpu_model"] in text
    meta = json.loads((fast_tmp / "work" / "results" / "search.json").read_text())
    assert meta["summary"]["trials"] == 14 and meta["answer"] is not None
