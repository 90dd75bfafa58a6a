"""Speech: espeak-ng data, log-mel features against NumPy, the capacity dual update, the prosody model's masking."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gvlab import audio, capacity
from gvlab.data import speech
from gvlab.data.external import DataError
from gvlab.data.padded import pad
from gvlab.prosody import measure
from gvlab.prosody import model as prosody

CFG = audio.MelConfig(sample_rate=8000, n_fft=64, hop=16, n_mels=12, f_min=50.0, f_max=4000.0)


def numpy_log_mel(x: np.ndarray, cfg: audio.MelConfig) -> np.ndarray:
    """Reference written from the definitions, loop by loop (float64)."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.n_fft) / cfg.n_fft)
    frames = [x[s:s + cfg.n_fft] * window for s in range(0, len(x) - cfg.n_fft + 1, cfg.hop)]
    spectrum = np.abs(np.fft.rfft(np.array(frames), axis=-1))
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731 (HTK)
    points = 700 * (10 ** (np.linspace(mel(cfg.f_min), mel(cfg.f_max), cfg.n_mels + 2) / 2595) - 1)
    freqs = np.arange(cfg.n_fft // 2 + 1) * cfg.sample_rate / cfg.n_fft
    bank = np.zeros((len(freqs), cfg.n_mels))
    for m in range(cfg.n_mels):
        lo, mid, hi = points[m:m + 3]
        for k, f in enumerate(freqs):
            if lo <= f <= mid:
                bank[k, m] = (f - lo) / (mid - lo)
            elif mid < f <= hi:
                bank[k, m] = (hi - f) / (hi - mid)
    return np.log(np.maximum(spectrum @ bank, cfg.floor))


def test_log_mel_matches_numpy_reference_and_masks_padding():
    rng = np.random.default_rng(0)
    t = np.arange(300) / CFG.sample_rate
    a = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    b = a[:150].copy()
    batch = pad([a, b])
    out = audio.log_mel_jit(jnp.asarray(batch.values), jnp.asarray(batch.mask.sum(-1)), CFG)
    for i, x in enumerate((a, b)):
        expected = numpy_log_mel(x.astype(np.float64), CFG)
        n = int(out.mask[i].sum())
        assert n == len(expected) == int(audio.num_frames(len(x), CFG))
        np.testing.assert_allclose(np.asarray(out.values[i, :n]), expected, atol=2e-4)
    # Oracle: a 440 Hz sine peaks in the band whose triangle is highest at 440 Hz.
    assert int(np.argmax(np.asarray(out.values[0, 3]))) == int(np.argmax(audio.mel_filterbank(CFG)[
        round(440 * CFG.n_fft / CFG.sample_rate)]))
    # Negative control: the reference with another filterbank (f_min 0 Hz instead of 50 Hz) does not match.
    other = numpy_log_mel(a.astype(np.float64), audio.MelConfig(**{**vars(CFG), "f_min": 0.0}))
    assert np.abs(np.asarray(out.values[0, :len(other)]) - other).max() > 1e-2


def test_dual_variable_moves_with_the_constraint():
    state = capacity.init_dual(1.0)
    assert float(capacity.beta_of(state)) == pytest.approx(1.0, rel=1e-5)
    up = capacity.dual_update(state, jnp.float32(5.0), 3.0, lr=0.1)  # KL above C -> more pressure
    down = capacity.dual_update(state, jnp.float32(1.0), 3.0, lr=0.1)  # KL below C -> less
    still = capacity.dual_update(state, jnp.float32(3.0), 3.0, lr=0.1)
    assert capacity.beta_of(up) > 1.0 > capacity.beta_of(down)
    assert float(capacity.beta_of(still)) == pytest.approx(1.0, rel=1e-6)
    # Exact first step: d/d beta_tilde = -sigmoid(beta_tilde)(KL - C); beta_tilde - lr * grad.
    assert float(up.beta_tilde) == pytest.approx(float(state.beta_tilde + 0.1 * jax.nn.sigmoid(state.beta_tilde) * 2))
    # Held below C for long, beta goes to 0 but never below (softplus: the clip at 0 is built in).
    for _ in range(200):
        state = capacity.dual_update(state, jnp.float32(0.0), 3.0, lr=0.1)
    assert 0.0 <= float(capacity.beta_of(state)) < 1e-3
    # The model's objective carries no gradient to the multiplier.
    grad = jax.grad(lambda s: capacity.lagrangian(1.0, 5.0, 3.0, s))(capacity.init_dual())
    assert float(grad.beta_tilde) == 0.0
    with pytest.raises(ValueError):
        capacity.init_dual(0.0)


def _toy_batch(fill_mel=0.0, fill_text=0):
    rng = np.random.default_rng(1)
    texts = [rng.integers(1, 28, n).astype(np.int32) for n in (5, 9, 3)]
    mels = [rng.normal(size=(n, 6)).astype(np.float32) for n in (7, 4, 11)]
    return {"text": pad(texts, fill=fill_text), "mel": pad(mels, fill=fill_mel)}, texts, mels


def test_masked_batch_loss_equals_examples_one_by_one():
    cfg = prosody.Config(width=8, latent_dim=3, hidden=(16,))
    net = prosody.network(cfg, 28, 6)
    batch, texts, mels = _toy_batch(fill_mel=1e3, fill_text=7)
    method = prosody.make(cfg, 28, 6)
    params = method.init(jax.random.key(0), batch)
    eps = jax.random.normal(jax.random.key(1), (3, cfg.latent_dim))
    args = {"capacity": jnp.float32(2.0), "variational": jnp.float32(1.0)}
    dual = capacity.init_dual()
    objective = jax.jit(lambda b, e, v: prosody.objective(net, cfg, params, b, e, {**args, "variational": v}, dual))
    loss = lambda b, e: objective(b, e, jnp.float32(1.0))[0]  # noqa: E731
    whole = loss(batch, eps)
    single = [loss({"text": pad([t]), "mel": pad([m])}, eps[i:i + 1]) for i, (t, m) in enumerate(zip(texts, mels))]
    np.testing.assert_allclose(float(whole), np.mean(single), rtol=1e-5)
    # Negative control: declaring the padding real changes the loss.
    leaky = {k: v._replace(mask=np.ones_like(v.mask)) for k, v in batch.items()}
    assert abs(float(loss(leaky, eps)) - float(whole)) > 1.0
    # The text-only member ignores z and has no KL term; its dual state stays.
    base = objective(batch, eps, jnp.float32(0.0))
    assert float(base[2].beta_tilde) == float(dual.beta_tilde)


def test_capacity_training_moves_kl_towards_target():
    """A few steps of the default train step with the dual in `extra`: beta rises while KL > C."""
    from gvlab.train import init_state, make_train_step
    import optax

    cfg = prosody.Config(width=8, latent_dim=3, hidden=(16,), dual_lr=0.5)
    method = prosody.make(cfg, 28, 6)
    batch, _, _ = _toy_batch()
    tx = optax.adam(1e-2)
    state = init_state(method, tx, jax.random.key(0), batch, args={"capacity": jnp.float32(1e-3),
                                                                    "variational": jnp.float32(1.0)})
    step = jax.jit(make_train_step(method, tx))
    for _ in range(3):
        state, metrics = step(state, batch, jax.random.key(1))
    assert metrics["capacitron/kl"] > 1e-3 and float(capacity.beta_of(state.extra)) > 1.0


def test_linear_readouts_recover_known_weights():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    w = np.array([1.0, -2.0, 0.5, 3.0, 7.0], np.float32)
    y = x @ w[:4] + w[4]
    np.testing.assert_allclose(np.asarray(measure.ridge(jnp.asarray(x), jnp.asarray(y), 0.0)), w, atol=1e-3)
    assert np.abs(np.asarray(measure.ridge(jnp.asarray(x), jnp.asarray(y), 1e3)) - w).max() > 0.5  # control


def test_espeak_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        speech.espeak_path()


def test_espeak_pitch_and_rate_are_controlled(tmp_path):
    try:
        speech.espeak_path()
    except DataError as e:
        pytest.skip(str(e))
    slow = speech.synthesise("the cat sat", 50, 120, folder=tmp_path)
    fast = speech.synthesise("the cat sat", 50, 240, folder=tmp_path)
    assert 1.5 < len(slow) / len(fast) < 2.5  # half the rate, about twice the samples
    assert len(list(tmp_path.glob("*.wav"))) == 2  # cached
    np.testing.assert_array_equal(speech.synthesise("the cat sat", 50, 120, folder=tmp_path), slow)
    low, high = (speech.synthesise("a", p, 150, folder=tmp_path) for p in (10, 90))
    cfg = audio.MelConfig(n_fft=2048, hop=1024)
    feats = [np.asarray(audio.log_mel_jit(jnp.asarray(x[None]), jnp.asarray([len(x)]), cfg).values[0]) for x in
             (low, high)]
    # Higher pitch moves energy up: the spectral centroid of the mean log-mel power rises.
    centroid = [np.sum(np.arange(cfg.n_mels) * np.exp(f).mean(0)) / np.exp(f).mean(0).sum() for f in feats]
    assert centroid[1] > centroid[0]
    assert speech.read_wav_bytes(open(next(tmp_path.glob("*.wav")), "rb").read()).dtype == np.float32
    with pytest.raises(DataError):
        speech.read_wav_bytes(b"not a wav")


def test_audio_cache_defaults_outside_the_repo_and_falls_back_when_unwritable(tmp_path, monkeypatch):
    import tempfile
    from pathlib import Path

    monkeypatch.delenv(speech.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert speech.cache_dir() == tmp_path / "xdg" / "gvlab" / "espeak" and speech.cache_dir().is_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert not speech.cache_dir().is_relative_to(Path(__file__).resolve().parents[1])  # never inside the repo
    # A user cache that cannot be created (its parent is a file, as with a read-only home): the temporary folder.
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert speech.cache_dir() == tmp_path / "tmp" / "gvlab-espeak"
    # Negative control: a folder asked for explicitly is used as given, and one that cannot be created is an error.
    monkeypatch.setenv(speech.CACHE_ENV, str(tmp_path / "mine"))
    assert speech.cache_dir() == tmp_path / "mine"
    with pytest.raises(OSError):
        speech.cache_dir(tmp_path / "file" / "sub")
