"""Files the project cannot ship: read from a folder the user gives, checked against known SHA-256 digests.

Real datasets whose licence forbids redistribution (the ETH/UCY trajectories, for instance) are never committed
and never downloaded. An experiment takes their folder as a config value (`data_dir=...`) or from the
environment variable `GVLAB_DATA_DIR`; `checked_files` resolves every expected file in it and compares its
SHA-256 with the digest the loader was written against. A missing folder or file, or a file whose digest differs
(another preprocessing, a truncated copy), is a `DataError` that says which file and what to do, before any
number is computed from it.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp()); _ = (folder / "a.txt").write_text("1 2\\n")
    >>> digest = sha256(folder / "a.txt")
    >>> checked_files(folder, {"a.txt": digest})["a.txt"].name
    'a.txt'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

from gvlab.errors import GvlabError

ENV_VAR = "GVLAB_DATA_DIR"


class DataError(GvlabError, FileNotFoundError):
    """An external data folder or file that is missing or differs from the one the loader expects."""


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_dir(data_dir: str | os.PathLike | None, what: str) -> Path:
    """The folder to read: `data_dir` if given, else `$GVLAB_DATA_DIR`; a clear error if neither exists."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(ENV_VAR)
    if chosen in (None, ""):
        raise DataError(f"{what}: no data folder given; pass data_dir=PATH (CLI: --set data_dir=PATH) or set "
                        f"{ENV_VAR}. The files are not shipped with gvlab.")
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        raise DataError(f"{what}: data folder {folder} does not exist")
    return folder


def checked_files(data_dir: str | os.PathLike | None, digests: Mapping[str, str | None],
                  what: str = "external data") -> dict[str, Path]:
    """Paths of the expected files in the user's folder, each verified against its SHA-256.

    Args:
        data_dir: the folder (None: `$GVLAB_DATA_DIR`).
        digests: file name (relative to the folder) -> expected hex SHA-256; None skips the check for that file.
        what: the dataset's name, for messages.

    Raises:
        DataError: the folder or a file is missing, or a digest differs (the message lists every bad file).
    """
    folder = resolve_dir(data_dir, what)
    paths, problems = {}, []
    for name, expected in digests.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif expected is not None and (actual := sha256(path)) != expected:
            problems.append(f"{name}: sha256 {actual[:12]}... differs from the expected {expected[:12]}...")
        paths[name] = path
    if problems:
        raise DataError(f"{what} in {folder} is not the expected version: " + "; ".join(problems))
    return paths
