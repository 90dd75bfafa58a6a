"""Every method obeys the same contract, checked over `gvlab.models.catalogue.CATALOGUE`.

For each tiny method instance, through `gvlab.fit`: it compiles once (the loss is traced a fixed number of times,
never once per step), the loss decreases on its toy batch, the same seed gives the same numbers and another seed
other ones, gradients reach every parameter leaf, and vmapped seeds (`num_seeds=2`) equal two single fits. The
four fits of a method are shared by its tests (`_fits`); a new method is one line in the catalogue.
"""

from __future__ import annotations

import doctest
import functools
import importlib
import pkgutil
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gvlab.models
from gvlab import DataSource, Method, Spec, TrainConfig, fit
from gvlab.models import catalogue
from gvlab.models.catalogue import CATALOGUE, Toy
from gvlab.train.parallel import data_mesh

STEPS, LOG_EVERY = 30, 3
# Entries too slow for the default run (why), checked only when asked for with `pytest -m slow`.
SLOW = {"video_sde": "diffrax solves: ~45 s of CPU to trace and compile its four fits"}
NAMES = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in sorted(CATALOGUE)]


@pytest.fixture(autouse=True)
def _slow_only_when_selected(request):
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow catalogue entry: run with `pytest -m slow tests/test_conformance.py`")


def _whole(arrays, key, step):
    """The toy's data source: its one batch at every step."""
    return arrays


def _counting(method: Method, traces: list) -> Method:
    """`method` whose step (a custom one, or one built by `make_step`) or loss appends to `traces` each time it
    is traced."""

    def counting(inner):
        def counted(*args, **kwargs):
            traces.append(1)
            return inner(*args, **kwargs)

        return counted

    if method.make_step is not None:
        return method._replace(make_step=lambda tx: counting(method.make_step(tx)))
    name = "step" if method.step is not None else "loss"
    return method._replace(**{name: counting(getattr(method, name))})


class GradientsSeen(NamedTuple):
    seen: Any  # per parameter leaf, where a non-zero (finite) gradient has arrived at some step


def _record_gradients() -> optax.GradientTransformation:
    """An identity transformation whose state marks every gradient entry that was ever non-zero.

    Chained before the toy's optimiser, it checks "gradients reach every parameter" inside the fits themselves,
    over all their steps, without compiling a separate gradient program.
    """

    def init(params):
        return GradientsSeen(jax.tree.map(lambda p: jnp.zeros(p.shape, bool), params))

    def update(updates, state, params=None):
        del params
        seen = jax.tree.map(lambda s, g: s | ((g != 0) & jnp.isfinite(g)), state.seen, updates)
        return updates, GradientsSeen(seen)

    return optax.GradientTransformation(init, update)


class _Fits:
    def __init__(self, name: str):
        self.toy: Toy = CATALOGUE[name]()
        self.traces: dict[str, int] = {}
        mesh = data_mesh(1)  # one device: the contract, not the sharding, is under test (tests/test_train.py)

        def run(label: str, seed: int, num_seeds: int = 1):
            traces: list = []
            optimizer = optax.chain(_record_gradients(), self.toy.optimizer)
            spec = Spec(method=_counting(self.toy.method, traces), optimizer=optimizer,
                        data=DataSource(self.toy.batch, _whole))
            sizes = {x.shape[0] for x in jax.tree.leaves(self.toy.batch) if x.ndim}
            batch_size = sizes.pop() if len(sizes) == 1 else TrainConfig.batch_size  # as `fit` reads it
            train = TrainConfig(steps=STEPS, batch_size=batch_size, log_every=LOG_EVERY, seed=seed,
                                num_seeds=num_seeds)
            result = fit(spec, train, mesh=mesh, progress=False)
            self.traces[label] = len(traces)
            return result

        self.first = run("first", seed=0)
        self.again = run("again", seed=0)
        self.other = run("other", seed=1)
        self.pair = run("pair", seed=0, num_seeds=2)  # seeds 0 and 1 vmapped in one program


@functools.cache
def _fits(name: str) -> _Fits:
    return _Fits(name)


def _rows(result):
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in result.history.rows]


def test_the_catalogue_holds_every_model_family_and_each_makes_a_method():
    families = {m.name for m in pkgutil.iter_modules(gvlab.models.__path__)} - {"catalogue"}
    with_make = {name for name in families if hasattr(importlib.import_module(f"gvlab.models.{name}"), "make")}
    assert with_make <= set(CATALOGUE), f"methods missing from gvlab.models.catalogue: {with_make - set(CATALOGUE)}"
    for name in CATALOGUE:
        assert isinstance(CATALOGUE[name]().method, Method), name
    failures, tried = doctest.testmod(catalogue, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def test_the_gradient_record_marks_exactly_the_leaves_that_received_gradients():
    # Negative control of the gradient check: a leaf whose gradients are always zero stays unmarked.
    record = _record_gradients()
    params = {"used": jnp.ones((2,)), "dead": jnp.ones((3,))}
    state = record.init(params)
    for grads in ({"used": jnp.array([0.0, 2.0]), "dead": jnp.zeros((3,))},
                  {"used": jnp.array([0.0, 0.0]), "dead": jnp.zeros((3,))}):
        _, state = record.update(grads, state)
    assert np.array_equal(state.seen["used"], [False, True]) and not np.any(state.seen["dead"])


@pytest.mark.parametrize("name", NAMES)
def test_compiles_once(name):
    # One trace for STEPS steps: the shape pass (eval_shape of the step) and the compiled step share it; the vmapped
    # fit traces the per-run function once as well. A second fit builds new functions, so it traces again.
    fits = _fits(name)
    assert fits.traces == {"first": 1, "again": 1, "other": 1, "pair": 1}, fits.traces


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases(name):
    steps, loss = _fits(name).first.history.column("loss")
    assert list(steps) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY)) and np.all(np.isfinite(loss))
    start, end = np.mean(loss[:2]), np.mean(loss[-2:])
    assert end < start - 0.02 * abs(start), f"loss did not decrease over {STEPS} steps: {np.round(loss, 4)}"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_numbers_other_seed_differs(name):
    fits = _fits(name)
    for a, b in zip(jax.tree.leaves(fits.first.params), jax.tree.leaves(fits.again.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _rows(fits.first) == _rows(fits.again)
    differs = [not np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(fits.first.params), jax.tree.leaves(fits.other.params), strict=True)]
    assert any(differs), "seed 1 trained the same parameters as seed 0"
    assert fits.first.history.rows[-1]["loss"] != fits.other.history.rows[-1]["loss"]


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    # Recorded during the fit by `_record_gradients` (zero-initialised layers, e.g. a control's output layer, pass
    # no gradient to the layers before them at the first step, so one gradient at the start would not do).
    fits = _fits(name)
    seen = fits.first.state.opt_state[0].seen
    for path, mask in jax.tree_util.tree_leaves_with_path(seen):
        assert np.any(np.asarray(mask)), f"no gradient reaches {jax.tree_util.keystr(path)}"
    assert jax.tree.structure(seen) == jax.tree.structure(fits.first.params)


@pytest.mark.parametrize("name", NAMES)
def test_vmapped_seeds_equal_single_fits(name):
    fits = _fits(name)
    assert fits.pair.seeds == (0, 1)
    for run, single in ((0, fits.first), (1, fits.other)):
        for a, b in zip(jax.tree.leaves(fits.pair.params_of(run)), jax.tree.leaves(single.params_of(0)),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
        rows = [r for r in fits.pair.history.rows if r["seed"] == run]
        np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in single.history.rows],
                                   rtol=1e-3, atol=1e-4)
