"""The imports a user copies from the documentation work, and the package surfaces are what they say.

Every `from gvlab... import ...` / `import gvlab...` line of README.md, of the notebooks' code cells and of the
docstrings under gvlab/ (doctest `>>>` lines or plain example text) is executed in a fresh namespace. The
`gvlab.diffusion`, `gvlab.sde` and `gvlab.inverse` packages export their main names, and `import gvlab.dists` stays
light (no orbax, no flax training stack), checked in a fresh interpreter. Nothing here compiles.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*(?:>>> )?(from gvlab[\w.]* import .+|import gvlab[\w.]*.*)$")
PROMPT = re.compile(r"^\s*(?:>>> |\.\.\. ?)?")


def _statements(lines: list[str], where: str, first_line: int = 1) -> list[tuple[str, str]]:
    """(location, statement) for every gvlab import in `lines`, parenthesised or backslash-continued ones joined
    with their continuation lines (doctest `...` prompts stripped)."""
    found = []
    for i, line in enumerate(lines):
        match = IMPORT.match(line)
        if not match:
            continue
        parts, j = [match.group(1)], i
        while (parts[-1].count("(") > parts[-1].count(")") or parts[-1].rstrip().endswith("\\")) and j + 1 < len(lines):
            j += 1
            parts[-1] = parts[-1].rstrip().removesuffix("\\")
            parts.append(PROMPT.sub("", lines[j], count=1).strip())
            parts = [" ".join(parts)]
        found.append((f"{where}:{first_line + i}", parts[0].strip()))
    return found


def _readme() -> list[tuple[str, str]]:
    return _statements((ROOT / "README.md").read_text().splitlines(), "README.md")


def _notebooks() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for n, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                source = cell["source"]
                text = "".join(source) if isinstance(source, list) else source
                found += _statements(text.splitlines(), f"{path.relative_to(ROOT)} cell {n} line")
    return found


def _docstrings() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "gvlab").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:  # its first line is on the line of the opening quotes
                    found += _statements(doc.splitlines(), str(path.relative_to(ROOT)), node.body[0].lineno)
    return found


def _failures(statements: list[tuple[str, str]]) -> list[str]:
    failed = []
    for where, statement in statements:
        try:
            exec(compile(statement, where, "exec"), {})  # a fresh namespace per statement
        except Exception as e:  # noqa: BLE001 - every failure is reported with its source
            failed.append(f"{where}: {statement!r} -> {type(e).__name__}: {e}")
    return failed


def test_documented_imports_work():
    statements = _readme() + _notebooks() + _docstrings()
    failed = _failures(statements)
    assert not failed, "documented imports that fail:\n" + "\n".join(failed)


def test_extraction_finds_the_documented_imports_and_reports_failures():
    """Negative controls: the extractor sees known lines in each kind of source, joins a parenthesised import, and a
    broken import is reported with where it came from."""
    assert ("from gvlab.sde.solve import brownian_increments, solve_sde" in {s for _, s in _readme()})
    assert "from gvlab.inverse import gaussian, metrics, operators" in {s for _, s in _notebooks()}
    assert "from gvlab.inverse.operators import make_convolution" in {s for _, s in _docstrings()}
    assert any(s.startswith("from gvlab.diffusion import") for _, s in _docstrings())  # the package docstring
    joined = _statements([">>> from gvlab.sde import (gamma_grid,", "...                     solve_sde)"], "doc")
    assert joined == [("doc:1", "from gvlab.sde import (gamma_grid, solve_sde)")]
    failed = _failures([("doc:1", "from gvlab.inverse import NoSuchName"), ("doc:2", "import gvlab.dists")])
    assert len(failed) == 1 and failed[0].startswith("doc:1:") and "ImportError" in failed[0]


# The main names a user reaches for; the full lists are the packages' `__all__`.
EXPECTED = {
    "gvlab.diffusion": {"Schedule", "Model", "sample", "time_grid", "convert", "make_method", "flow_matching_loss",
                        "log_likelihood", "sliced_wasserstein", "guided", "initial_noise"},
    "gvlab.sde": {"solve_sde", "solve_sde_reference", "brownian_increments", "SDESolution", "gamma_grid",
                  "optimal_coefficients", "sample_fbm", "solve_fractional", "solve_fractional_observed"},
    "gvlab.inverse": {"Model", "Inpainting", "AveragePool", "Convolution", "dps", "red_diff", "flair", "psnr",
                      "gaussian_posterior", "make_random_inpainting"},
    "gvlab.attacks": {"fgsm", "pgd", "bpda", "per_example_loss"},
    "gvlab.unlearning": {"classifier", "evaluate", "forget", "laf"},
    "gvlab.mi": {"generator", "infonce", "views"},
    "gvlab.ib": {"make", "Config", "stack_args", "information_plane"},
    "gvlab.defenses": {"lsq", "make_classifier", "quantise", "quantise_straight_through", "squeeze_bits"},
}


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_packages_export_their_main_names(package):
    module = importlib.import_module(package)
    exported = set(getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")])
    assert EXPECTED[package] <= exported
    for name in sorted(exported):
        namespace = {}
        exec(f"from {package} import {name}", namespace)
        assert namespace[name] is getattr(module, name)
        assert f"`{name}`" in module.__doc__, f"{package}.{name} is exported but not listed in the package docstring"
    with pytest.raises(ImportError):  # negative control: a name that is not exported
        exec(f"from {package} import no_such_name", {})


def test_model_is_one_class_everywhere():
    from gvlab.diffusion import Model as from_diffusion
    from gvlab.diffusion.samplers import Model as defined
    from gvlab.inverse import Model as from_inverse
    from gvlab.inverse.solvers import Model as used_by_solvers

    assert from_inverse is from_diffusion is defined is used_by_solvers


@pytest.mark.parametrize("package", ["gvlab.diffusion", "gvlab.sde"])
def test_lazy_exports_match_the_static_imports(package):
    """The `_EXPORTS` table that serves attribute access and the `TYPE_CHECKING` imports IDEs read agree."""
    module = importlib.import_module(package)
    tree = ast.parse(Path(module.__file__).read_text())
    static = {alias.asname or alias.name: node.module for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package)
              for alias in node.names}
    assert static == module._EXPORTS


def _loaded(statement: str, prefixes: tuple[str, ...]) -> list[str]:
    """Modules starting with `prefixes` that `statement` loads in a fresh interpreter."""
    code = f"import sys\n{statement}\nprint(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


HEAVY = ("orbax", "flax.training")


def test_importing_dists_does_not_load_the_training_stack():
    assert _loaded("import gvlab.dists", HEAVY) == []
    # Negative control: the training package does load orbax, so the check can fail.
    assert any(m.startswith("orbax") for m in _loaded("import gvlab.train", HEAVY))


def test_importing_one_sde_module_does_not_load_the_others():
    """`gvlab.sde` and `gvlab.diffusion` load their exports on first use: `gvlab.sde.fractional` (used by the data
    generators) does not import diffrax; `from gvlab.sde import solve_sde` does (negative control)."""
    assert _loaded("import gvlab.sde.fractional", ("diffrax",)) == []
    assert "diffrax" in _loaded("from gvlab.sde import solve_sde", ("diffrax",))
