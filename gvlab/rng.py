"""Key conventions.

* Typed keys only: `jax.random.key(seed)`.
* One root key per run, split once into keys named by purpose (`split_named`); never reuse a key after splitting.
* Per-step randomness is `fold_in(train_key, step)` (`step_key`); no key is stored in state, so resuming needs
  nothing but the step number.
"""

from __future__ import annotations

import jax

# The purposes every run splits its root key into; `fit` relies on this order being stable across versions,
# because changing it changes every number a seed produces.
RUN_KEY_NAMES = ("init", "data", "train", "eval")


def root_key(seed: int) -> jax.Array:
    """The typed root key of a run."""
    return jax.random.key(seed)


def split_named(key: jax.Array, *names: str) -> dict[str, jax.Array]:
    """Split `key` into one key per name: `split_named(key, "eps", "t")["eps"]`.

    Names must be distinct; the result is a dict so that a purpose cannot be silently swapped for another.
    """
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate key names: {names}")
    keys = jax.random.split(key, len(names))
    return {name: keys[i] for i, name in enumerate(names)}


def run_keys(seed: int) -> dict[str, jax.Array]:
    """The named keys of a run: init, data, train and eval (see `RUN_KEY_NAMES`)."""
    return split_named(root_key(seed), *RUN_KEY_NAMES)


def step_key(key: jax.Array, step: jax.Array | int) -> jax.Array:
    """The key of one step: `fold_in(key, step)`. Pure in (key, step), so resumed runs draw the same numbers."""
    return jax.random.fold_in(key, step)
