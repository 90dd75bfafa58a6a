"""Lazy re-exports for packages (PEP 562): a name is imported from its module on first use.

`gvlab`, `gvlab.diffusion` and `gvlab.sde` export their public names this way, so `import gvlab.dists` or the data
generators' `gvlab.sde.fractional` do not load diffrax, orbax or flax's training stack (and no import cycle forms).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(namespace: dict[str, Any], table: Mapping[str, str],
                 fallback: Callable[[str], Any] | None = None) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for a package whose `table` maps each exported name to the module defining it.

    A name is imported on first access and stored in `namespace` (the package's `globals()`), so later lookups skip
    `__getattr__`. Other names go to `fallback(name)` if given, else raise AttributeError.
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
