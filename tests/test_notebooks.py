"""Every notebook executes top to bottom with the smoke profile (as a user would run it, in a fresh kernel)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from gvlab import compile_cache

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_is_a_quickstart():
    assert any(p.name.startswith("00_quickstart") for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch):
    monkeypatch.setenv("GVLAB_NOTEBOOK_PROFILE", "smoke")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if os.environ.get("GVLAB_COMPILE_CACHE", "0") != "0":  # share the tests' compilation cache with the kernel
        for name, value in compile_cache.env_for_subprocess(os.environ["GVLAB_COMPILE_CACHE"]).items():
            monkeypatch.setenv(name, value)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def _readme_cell() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- colab-cell:start -->")[1].split("<!-- colab-cell:end -->")[0]
    return block.strip().removeprefix("```python").removesuffix("```").strip()


def _run_first_cell(source: str, cwd: Path, colab: bool, monkeypatch) -> list[list[str]]:
    """Execute a notebook's first cell as a kernel would, in `cwd`, on Colab or not; return the commands it ran."""
    import subprocess
    import sys
    import types

    calls: list[list[str]] = []
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(list(command)))
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "first-cell", "exec"), {})
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_first_cell_installs_on_colab_and_nothing_elsewhere(path, tmp_path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "code" and first.source.strip() == _readme_cell(), \
        "every notebook starts with the README's install cell"
    monkeypatch.delenv("GVLAB_REPO", raising=False)
    # Elsewhere (this machine, a Jupyter server): nothing is installed.
    assert _run_first_cell(first.source, ROOT, colab=False, monkeypatch=monkeypatch) == []
    # Colab, in a clone (`git clone` makes a gvlab/ folder beside the notebook's; the old cell skipped then).
    clone = tmp_path / "gvlab"
    (clone / "gvlab").mkdir(parents=True)
    (clone / "gvlab" / "__init__.py").write_text("")
    (clone / "pyproject.toml").write_text("[project]\nname = 'gvlab'\n")
    (clone / "notebooks").mkdir()
    calls = _run_first_cell(first.source, clone / "notebooks", colab=True, monkeypatch=monkeypatch)
    assert len(calls) == 1 and calls[0][-1] == str(clone) and calls[0][1:4] == ["-m", "pip", "install"]
    # Colab without a clone: from GVLAB_REPO, and a clear error without it.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(RuntimeError, match="git clone"):
        _run_first_cell(first.source, outside, colab=True, monkeypatch=monkeypatch)
    monkeypatch.setenv("GVLAB_REPO", "https://example.org/gvlab.git")
    calls = _run_first_cell(first.source, outside, colab=True, monkeypatch=monkeypatch)
    assert calls[0][-1] == "git+https://example.org/gvlab.git"
