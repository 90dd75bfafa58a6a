"""Members over anything: one program of R = M x S runs equals a Python loop of single fits.

The members differ in an optimiser hyperparameter (`Spec.hyperparams`), a model hyperparameter handed to the loss
(`Spec.args`) and their own dataset (`DataSource(per_member=True)`), with `clip_by_global_norm` in the optimiser
chain. The negative control is the trick the members replace: variants stacked inside one parameter pytree with
their losses summed, which global-norm clipping couples, so it does not equal the loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gvlab import Method, Spec, TrainConfig, fit
from gvlab.data import epoch_batches
from gvlab.errors import ConfigError

DIM, N = 3, 48
BETAS = np.array([0.5, 1.0, 3.0], np.float32)
LRS = np.array([0.05, 0.1, 0.2], np.float32)
TRAIN = TrainConfig(steps=12, batch_size=8, log_every=6, num_seeds=2, seed=5)


def _datasets():
    """One regression dataset per member: y = x . w_m with member-specific true weights."""
    x = jax.random.normal(jax.random.key(0), (len(BETAS), N, DIM))
    w = jnp.stack([jnp.arange(1.0, DIM + 1.0) * (m + 1) for m in range(len(BETAS))])
    return {"x": x, "y": jnp.einsum("mnd,md->mn", x, w)}


def _init(key, batch):
    return {"w": 0.1 * jax.random.normal(key, (batch["x"].shape[-1],)), "b": jnp.zeros(())}


def _loss(params, batch, key, step, args):
    pred = batch["x"] @ params["w"] + params["b"] + 0.01 * jax.random.normal(key, batch["y"].shape)
    mse = jnp.mean((pred - batch["y"]) ** 2)
    return args["beta"] * mse, {"toy/mse": mse}


def _optimizer():
    # Global-norm clipping at a norm the gradients exceed, so that clipping is active in every run.
    return optax.chain(optax.clip_by_global_norm(0.5), optax.inject_hyperparams(optax.sgd)(learning_rate=0.1))


def _member_spec() -> Spec:
    return Spec(method=Method(init=_init, loss=_loss), optimizer=_optimizer(),
                data=epoch_batches(_datasets(), TRAIN.batch_size, per_member=True),
                hyperparams={"learning_rate": LRS}, args={"beta": BETAS})


def _single_spec(member: int) -> Spec:
    spec = _member_spec()
    one = jax.tree.map(lambda x: x[member: member + 1], spec.data.arrays)
    return spec._replace(data=spec.data._replace(arrays=one), hyperparams={"learning_rate": LRS[member: member + 1]},
                         args={"beta": BETAS[member: member + 1]})


@pytest.fixture(scope="module")
def loop_of_single_fits():
    """Run r = m S + s as its own fit: member m's data, beta and learning rate, seed TRAIN.seed + s."""
    out = []
    for member in range(len(BETAS)):
        for s in range(TRAIN.num_seeds):
            train = TrainConfig(**{**TRAIN.__dict__, "num_seeds": 1, "seed": TRAIN.seed + s})
            out.append(fit(_single_spec(member), train, progress=False))
    return out


@pytest.mark.parametrize("mode", ["vmap", "sequential"])
def test_members_equal_a_python_loop_with_global_norm_clipping(mode, loop_of_single_fits):
    result = fit(_member_spec(), TrainConfig(**{**TRAIN.__dict__, "members": mode}), progress=False)
    assert result.members == (0, 0, 1, 1, 2, 2) and result.seeds == (5, 6, 5, 6, 5, 6)
    assert result.params["w"].shape == (6, DIM)
    for run, single in enumerate(loop_of_single_fits):
        for got, want in zip(jax.tree.leaves(result.params_of(run)), jax.tree.leaves(single.params_of(0))):
            if mode == "sequential":  # the same per-run computation inside a loop: equal to float32 rounding
                # (bitwise on jaxlib 0.10; 0.12 fuses the loop body differently from the standalone step)
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
            else:  # batched matmuls round differently
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Rows name their member; the per-run gradient norm is each run's own.
    rows = [r for r in result.history.rows if r["step"] == TRAIN.steps]
    assert [r["member"] for r in rows] == list(result.members)
    single_norms = [s.history.rows[-1]["norm/grads"] for s in loop_of_single_fits]
    np.testing.assert_allclose([r["norm/grads"] for r in rows], single_norms, rtol=1e-5)


@pytest.mark.parametrize("clip", [False, True])
def test_negative_control_stacked_variants_with_summed_losses(clip):
    """The replaced trick: the members' parameters stacked in one pytree, their losses summed, one optimiser.

    With plain SGD the summed loss separates, so the trick equals single fits (the control that the comparison is
    fair); with `clip_by_global_norm` in the chain the clip couples the variants and it no longer does.
    """
    datasets = _datasets()
    lr = float(LRS[1])
    tx = optax.chain(optax.clip_by_global_norm(0.5) if clip else optax.identity(), optax.sgd(lr))
    train = TrainConfig(**{**TRAIN.__dict__, "num_seeds": 1})

    def init(key, batch):
        return jax.vmap(lambda k: _init(k, {"x": batch["x"][:, 0]}))(jnp.stack([key] * len(BETAS)))

    def loss(params, batch, key, step):
        per_variant = jax.vmap(lambda p, x, y, beta: _loss(p, {"x": x, "y": y}, key, step, {"beta": beta})[0],
                               in_axes=(0, 1, 1, 0))
        return per_variant(params, batch["x"], batch["y"], jnp.asarray(BETAS)).sum(), {}

    source = epoch_batches({"x": jnp.moveaxis(datasets["x"], 0, 1), "y": jnp.moveaxis(datasets["y"], 0, 1)},
                           TRAIN.batch_size)
    stacked = fit(Spec(method=Method(init=init, loss=loss), optimizer=tx, data=source), train, progress=False)
    single_spec = _single_spec(0)._replace(optimizer=tx, hyperparams={})
    single = fit(single_spec, train, progress=False)
    got, want = stacked.params_of(0)["w"][0], single.params_of(0)["w"]
    if clip:
        assert not np.allclose(got, want, rtol=1e-3), "global-norm clipping should couple the stacked variants"
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_member_inputs_must_agree_on_their_count():
    spec = _member_spec()
    with pytest.raises(ConfigError, match="one leading member axis"):
        fit(spec._replace(args={"beta": BETAS[:2]}), TRAIN, progress=False)
    with pytest.raises(ConfigError, match="one leading member axis"):
        fit(spec._replace(args={"beta": jnp.float32(1.0)}), TRAIN, progress=False)
