"""The README's bad-input table is true: each row, run in-process exactly as written, prints its message on stderr
and exits with its code, and a refused command writes nothing (issue 14)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gvlab import cli

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| `(gvlab [^`]+)` \| `(.+)` \| (\d+) \|$")


def _rows() -> list[tuple[str, str, int]]:
    text = README.read_text()
    table = text.split("<!-- bad-input:start -->")[1].split("<!-- bad-input:end -->")[0]
    rows = [ROW.match(line) for line in table.strip().splitlines()[2:]]
    assert all(rows), "a row of the README's bad-input table does not have the form | `gvlab ...` | `...` | N |"
    return [(m.group(1), m.group(2), int(m.group(3))) for m in rows]


def _check(command: str, message: str, code: int, tmp_path: Path, capsys) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    places = {"W": tmp_path / "w", "FILE": tmp_path / "file", "BROKEN": tmp_path / "broken"}
    places["FILE"].write_text("x")
    places["BROKEN"].mkdir()
    (places["BROKEN"] / "config.json").write_text("{broken")
    argv = [str(places.get(word, word)) for word in shlex.split(command)[1:]]
    capsys.readouterr()
    assert cli.main(argv) == code, command
    err = capsys.readouterr().err
    assert message in err, f"{command}: expected {message!r} on stderr, got:\n{err[-2000:]}"
    if code == cli.EXIT_BAD_INPUT:  # a refused command writes nothing
        assert not places["W"].exists() or not any(places["W"].iterdir()), command


def test_the_table_has_the_cases_the_issue_names():
    commands = " ".join(command for command, _, _ in _rows())
    for case in ("--workdir FILE", "resume BROKEN", "model.latent_dim=0", "train.lr=1e9"):
        assert case in commands


@pytest.mark.parametrize("command, message, code", _rows())
def test_each_row_of_the_readme_table_holds(command, message, code, tmp_path, capsys):
    _check(command, message, code, tmp_path, capsys)


def test_a_row_with_the_wrong_message_or_code_fails(tmp_path, capsys):
    # Negative control: the checker is not vacuous.
    command, message, code = _rows()[0]
    with pytest.raises(AssertionError):
        _check(command, message + " (not what gvlab says)", code, tmp_path / "a", capsys)
    with pytest.raises(AssertionError):
        _check(command, message, code + 1, tmp_path / "b", capsys)
