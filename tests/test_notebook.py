"""notebooks/nst_jax.ipynb, executed top to bottom on the CPU (nbclient, an IPython kernel) at 32 px with the
tests' random VGG-19 weights (not pretrained): its parameter cell is followed by one that overrides it, as
papermill does, so the notebook cannot silently rot. The committed file must carry no outputs."""

from __future__ import annotations

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "nst_jax.ipynb")

nbformat = pytest.importorskip("nbformat")


def read():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_committed_notebook_is_valid_with_outputs_cleared():
    nb = read()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "REPO_URL" in params[0].source and "WEIGHTS" in params[0].source


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_the_cpu(random_weights, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = read()
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        f'WEIGHTS = {random_weights!r}\nCONFIG = "test"\nSIZE = 32\nSTEPS = 4\nMETHODS = "gaussian"\n'
        f'UPLOAD = False\nimport os\nos.environ["JAX_PLATFORMS"] = "cpu"'))
    # The kernel (a subprocess, working in tmp_path) imports this checkout's nst_jax and configs.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                     if o.output_type == "stream")
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert "nst_jax is already installed" in text  # no pip install where the package is importable
    assert "not a published pretrained file" in text  # it says which weights made the images
    # The comparison (one method here: the main run's, so its compiled step is reused).
    assert re.search(r"^gaussian: [\d.]+ s, final style", text, re.M)
    assert "saved result.png" in text
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
                 if "image/png" in o.get("data", {}))
    assert images >= 6  # inputs, result, loss curves, comparison, its curves, the batch
    assert os.path.isfile(tmp_path / "result.png")
    outs = sorted(os.listdir(tmp_path / "batch_out"))
    assert [n for n in outs if n.endswith(".png")] == ["content_00__batch_style__gaussian.png",
                                                       "content_01__batch_style__gaussian.png"]
    assert "2 jobs on 1 cpu device(s)" in text
