"""The padded-and-masked batch convention (`gvlab.data.padded`) and checked external files (`gvlab.data.external`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab.data import external, padded
from gvlab.errors import ConfigError

RNG = np.random.default_rng(0)
EXAMPLES = [RNG.normal(size=(n, 3)).astype(np.float32) for n in (1, 4, 2, 5)]


def attention_loss(values, mask, w):
    """A set model's loss: masked self-attention, masked mean pooling, squared norm (one example or a batch)."""
    logits = values @ w @ jnp.swapaxes(values, -1, -2)
    mixed = padded.masked_softmax(logits, padded.pair_mask(mask)) @ values
    return jnp.sum(padded.masked_mean(mixed, mask) ** 2, axis=-1)


def test_pad_unpad_round_trip_and_clear_errors():
    batch = padded.pad(EXAMPLES, size=6)
    assert batch.values.shape == (4, 6, 3) and batch.mask.sum(-1).tolist() == [1, 4, 2, 5]
    assert all(np.array_equal(a, b) for a, b in zip(padded.unpad(batch), EXAMPLES))
    with pytest.raises(ConfigError, match="raise size"):
        padded.pad(EXAMPLES, size=3)
    with pytest.raises(ConfigError, match="trailing shape"):
        padded.pad([np.zeros((2, 3)), np.zeros((2, 4))])


def test_padded_batch_loss_equals_the_unpadded_examples_one_by_one():
    w = jnp.asarray(RNG.normal(size=(3, 3)), jnp.float32)
    batch = padded.pad(EXAMPLES, size=7, fill=1e3)  # a large fill: any leak would show
    one_by_one = np.mean([attention_loss(x, np.ones(len(x), bool), w) for x in EXAMPLES])
    batched = jax.jit(lambda v, m: jnp.mean(attention_loss(v, m, w)))(batch.values, batch.mask)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5)
    grads = jax.grad(lambda w_: jnp.mean(attention_loss(batch.values, batch.mask, w_)))(w)
    assert np.all(np.isfinite(grads))
    # negative control: the same model with an all-True mask reads the fill and gives another loss
    leaked = jnp.mean(attention_loss(batch.values, jnp.ones_like(batch.mask), w))
    assert abs(float(leaked) - one_by_one) > 1.0


def test_masked_reductions_against_numpy_and_empty_examples():
    batch = padded.pad(EXAMPLES + [np.zeros((0, 3), np.float32)], size=5, fill=-7.0)
    for b, x in enumerate(EXAMPLES):
        np.testing.assert_allclose(padded.masked_sum(batch.values, batch.mask)[b], x.sum(0), rtol=1e-6)
        np.testing.assert_allclose(padded.masked_mean(batch.values, batch.mask)[b], x.mean(0), rtol=1e-6)
        np.testing.assert_allclose(padded.masked_max(batch.values, batch.mask)[b], x.max(0), rtol=1e-6)
    assert np.all(padded.masked_mean(batch.values, batch.mask)[-1] == 0.0)  # empty example: 0, not NaN
    soft = padded.masked_softmax(batch.values[..., 0], batch.mask)
    np.testing.assert_allclose(soft[:-1].sum(-1), 1.0, rtol=1e-6)
    assert np.all(soft[~batch.mask] == 0.0) and np.all(soft[-1] == 0.0)
    # per-example weighting: a long example does not outweigh a short one
    per_entry = jnp.where(batch.mask, 1.0, 0.0) * jnp.arange(5)[None, :] + 0.0
    expected = np.mean([np.arange(n).mean() if n else 0.0 for n in (1, 4, 2, 5, 0)])
    np.testing.assert_allclose(padded.mean_over_examples(per_entry, batch.mask), expected, rtol=1e-6)


def test_checked_files_verifies_digests_and_says_what_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("1 2 3\n")
    digest = external.sha256(tmp_path / "a.txt")
    assert external.checked_files(tmp_path, {"a.txt": digest})["a.txt"] == tmp_path / "a.txt"
    monkeypatch.setenv(external.ENV_VAR, str(tmp_path))
    assert external.checked_files(None, {"a.txt": digest})["a.txt"].is_file()
    with pytest.raises(external.DataError, match="differs"):
        external.checked_files(tmp_path, {"a.txt": "0" * 64})
    with pytest.raises(external.DataError, match="b.txt: missing"):
        external.checked_files(tmp_path, {"a.txt": digest, "b.txt": None})
    monkeypatch.delenv(external.ENV_VAR)
    with pytest.raises(external.DataError, match="data_dir"):
        external.checked_files(None, {"a.txt": digest})
