"""Transformer (causality, qk-layernorm bound, RoPE), independent AdamW, and learning-rate members in `fit`.

Each oracle has a negative control that the same check rejects.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gvlab import TrainConfig, fit
from gvlab.errors import CheckpointError, ConfigError
from gvlab.nn.transformer import Transformer, TransformerConfig, attention_logit_bound, rope
from gvlab.train.optimizers import independent_adamw, set_hyperparams, warmup_cosine_multiplier
from tests.toys import regression_spec

TINY = TransformerConfig(vocab_size=32, width=16, depth=2, num_heads=2, mlp_width=32)


def _apply(config: TransformerConfig):
    model = Transformer(config)
    tokens = jnp.zeros((1, 8), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), tokens)  # jitted: eager init compiles op by op
    return params, jax.jit(model.apply)


@pytest.mark.parametrize("causal", [True, False])
def test_future_tokens_do_not_change_past_outputs(causal):
    params, apply = _apply(TransformerConfig(**{**TINY.__dict__, "causal": causal}))
    tokens = np.random.default_rng(0).integers(0, 32, (1, 8)).astype(np.int32)
    changed = tokens.copy()
    changed[:, 5:] = (changed[:, 5:] + 7) % 32
    both = np.asarray(apply(params, np.concatenate([tokens, changed]))[0])  # one call, two sequences
    past = np.max(np.abs(both[0, :5] - both[1, :5]))
    future = np.max(np.abs(both[0, 5:] - both[1, 5:]))
    assert future > 1e-3  # the change is visible where it may be
    if causal:
        assert past < 1e-6, past
    else:  # negative control: without the mask the past sees the future
        assert past > 1e-3, past


def _blown_up(params, gain: float, kernel_scale: float):
    """Large LN gains (where present) and q/k kernels scaled up: the regime where logits grow."""
    def scale(path, x):
        name = jax.tree_util.keystr(path)
        if "query_norm" in name or "key_norm" in name:
            return jnp.full_like(x, gain)
        if "'query'" in name or "'key'" in name:
            return x * kernel_scale
        return x
    return jax.tree_util.tree_map_with_path(scale, params)


def test_qk_layernorm_bounds_attention_logits(key):
    # |z| = |<LN(q), LN(k)>| / sqrt(Dh) <= ||LN(q)|| ||LN(k)|| / sqrt(Dh) <= sqrt(Dh) max|g_q| max|g_k|
    gain, head = 3.0, TINY.head_width
    bound = np.sqrt(head) * gain**2
    tokens = jax.random.randint(key, (2, 8), 0, 32)
    params, apply = _apply(TINY)
    params = _blown_up(params, gain, kernel_scale=100.0)
    max_logits = np.asarray(apply(params, tokens)[1]["attention_logit_max"])
    for layer in range(TINY.depth):
        np.testing.assert_allclose(attention_logit_bound(params, layer), bound, rtol=1e-6)
        assert max_logits[layer] <= bound * (1 + 1e-5), (max_logits, bound)
    assert max_logits.max() > 0.1 * bound  # the bound is not vacuous at this scale
    # Negative control: the same weights without qk-layernorm break the bound by far.
    params_off, apply_off = _apply(TransformerConfig(**{**TINY.__dict__, "qk_layernorm": False}))
    max_off = np.asarray(apply_off(_blown_up(params_off, gain, kernel_scale=100.0), tokens)[1]["attention_logit_max"])
    assert max_off.max() > 10 * bound, (max_off, bound)


def test_rope_scores_depend_on_position_differences_only():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(6, 1, 8)).astype(np.float32), rng.normal(size=(6, 1, 8)).astype(np.float32)
    positions = np.arange(6)

    @jax.jit
    def scores_and_norms(offset):
        rotated_q, rotated_k = rope(q, positions + offset), rope(k, positions + offset)
        return jnp.einsum("thd,shd->ts", rotated_q, rotated_k), jnp.linalg.norm(rotated_q, axis=-1)

    def scores(encode, offset):
        if encode is rope:
            return np.asarray(scores_and_norms(offset)[0])
        return np.einsum("thd,shd->ts", encode(q, positions + offset), encode(k, positions + offset))

    np.testing.assert_allclose(scores(rope, 0), scores(rope, 37), atol=1e-4)
    np.testing.assert_allclose(scores_and_norms(0)[1], np.linalg.norm(q, axis=-1), rtol=1e-5)  # a rotation

    # Negative control: an additive (absolute) position code fails the same check.
    def additive(x, pos):
        return x + np.sin(pos[:, None, None] * np.ones((1, 1, 8)))

    assert not np.allclose(scores(additive, 0), scores(additive, 37), atol=1e-4)


def test_independent_weight_decay_matches_closed_form_on_zero_gradients():
    # Zero gradients: Delta_t = 0, so theta_T = theta_0 prod_t (1 - s_t lambda), whatever the learning rate.
    steps, warmup, lr, decay = 20, 5, 0.3, 0.05
    theta0 = {"w": jnp.linspace(-2.0, 2.0, 5)}
    zeros = jax.tree.map(jnp.zeros_like, theta0)

    @jax.jit
    def run(state, params):
        def body(carry, _):
            params, state = carry
            updates, state = tx.update(zeros, state, params)
            return (optax.apply_updates(params, updates), state), None
        return jax.lax.scan(body, (params, state), None, length=steps)[0][0]

    tx = independent_adamw(lr, total_steps=steps, warmup_steps=warmup, weight_decay=decay, min_learning_rate=1e-5)
    s = warmup_cosine_multiplier(jnp.arange(steps), warmup, steps, 1e-5 / lr)
    expected = theta0["w"] * jnp.prod(1.0 - s * decay)
    np.testing.assert_allclose(run(tx.init(theta0), theta0)["w"], expected, rtol=1e-5)
    assert float(jnp.prod(1.0 - s * decay)) < 0.7  # the decay is visible
    # Negative control: optax's coupled AdamW (decay multiplied by the learning rate) misses the closed form.
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps, 1e-5), weight_decay=decay)
    assert not np.allclose(run(tx.init(theta0), theta0)["w"], expected, rtol=1e-3)


def _members_spec(learning_rates=None):
    spec = regression_spec(finite_data=True)
    optimizer = independent_adamw(0.01 if learning_rates is None else learning_rates[0], total_steps=12,
                                  warmup_steps=2)
    hyperparams = {} if learning_rates is None else {"learning_rate": np.asarray(learning_rates, np.float32)}
    return spec._replace(optimizer=optimizer, hyperparams=hyperparams)


def test_learning_rate_members_equal_sequential_runs():
    learning_rates = (0.01, 0.2)
    train = TrainConfig(steps=12, batch_size=16, log_every=4, seed=1, num_seeds=1)
    swept = fit(_members_spec(learning_rates), train, progress=False)
    assert swept.members == (0, 1) and swept.seeds == (1, 1)
    xent = swept.history.column("loss")[1]
    assert xent.shape == (3, 2)
    for run, (member, seed) in enumerate(zip(swept.members, swept.seeds)):
        single_train = TrainConfig(**{**train.__dict__, "seed": seed, "num_seeds": 1, "lr": learning_rates[member]})
        single = fit(_members_spec()._replace(optimizer=independent_adamw(
            learning_rates[member], total_steps=12, warmup_steps=2)), single_train, progress=False)
        for x, y in zip(jax.tree.leaves(swept.params_of(run)), jax.tree.leaves(single.params_of(0)), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(xent[:, run], single.history.column("loss")[1], rtol=1e-5)
    # Negative control: the two learning rates trained different models.
    assert not np.allclose(jax.tree.leaves(swept.params_of(0))[0], jax.tree.leaves(swept.params_of(1))[0])


def test_members_resume_bitwise_and_refuse_other_hyperparameters(tmp_path):
    spec = _members_spec((0.01, 0.2))
    train = TrainConfig(steps=12, batch_size=16, log_every=4, ckpt_every=6, num_seeds=1)
    straight = fit(spec, train, progress=False)
    fit(spec, TrainConfig(**{**train.__dict__, "steps": 6}), tmp_path, progress=False)
    resumed = fit(spec, train, tmp_path, progress=False)
    assert resumed.timing["start_step"] == 6
    for x, y in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(CheckpointError, match="hyperparameters"):
        fit(_members_spec((0.01, 0.3)), train, tmp_path, progress=False)


def test_set_hyperparams_rejects_unknown_names():
    state = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1).init({"w": jnp.zeros(2)})
    assert float(set_hyperparams(state, learning_rate=0.5).hyperparams["learning_rate"]) == 0.5
    with pytest.raises(ConfigError, match="learning_rat"):
        set_hyperparams(state, learning_rat=0.5)
    with pytest.raises(ConfigError, match="inject_hyperparams"):
        set_hyperparams(optax.sgd(0.1).init({"w": jnp.zeros(2)}), learning_rate=0.5)


def test_initial_spec_fit_holds_the_parameters_a_fit_starts_from():
    """`instability/qk_layernorm` measures l_0 on the parameters of a one-step fit of `initial_spec(spec)`: warm
    starting the real fit from them reproduces the fit from scratch bitwise (same init keys, zero updates).
    Negative control: the two seeds start from different parameters."""
    from gvlab_experiments.instability.qk_layernorm import initial_spec, validation_metrics
    from gvlab import Spec
    from gvlab.data.text import window_batches
    from gvlab.nn.transformer import make_language_model

    corpus = np.arange(400, dtype=np.uint8) % 32
    spec = Spec(make_language_model(TINY), optax.adam(1e-2), window_batches(corpus, 4, 8))
    train = TrainConfig(steps=3, batch_size=4, log_every=3, num_seeds=2)
    start = fit(initial_spec(spec), TrainConfig(**{**train.__dict__, "steps": 1}), progress=False)
    scratch = fit(spec, train, progress=False)
    warm = fit(spec, train, init=start, progress=False)
    assert warm.origin == "warm start"
    for x, y in zip(jax.tree.leaves(scratch.params), jax.tree.leaves(warm.params), strict=True):
        np.testing.assert_array_equal(x, y)
    first, second = (jax.tree.leaves(start.params_of(r))[0] for r in (0, 1))
    assert not np.allclose(first, second)  # each seed its own start
    windows = jnp.asarray(corpus[:9 * 3].reshape(3, 9), jnp.int32)
    metrics = validation_metrics(start.params_of(0), windows, None, model_cfg=TINY)
    assert float(metrics["xent"]) > 0.5 * np.log(32)  # untrained: near log(vocabulary)
