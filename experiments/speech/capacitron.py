"""`speech/capacitron`: capacity-constrained prosody embeddings on espeak-ng speech (Battenberg et al. 2019,
"Effective Use of Variational Embedding Capacity in Expressive End-to-End Speech Synthesis"; issue 19).

Claims and thresholds were fixed before the first run. Settings: the feature settings (n_fft, hop, f_max), the
pitch range, the envelope term and the mean-frame input of the reference encoder were chosen AFTER exploratory
runs failed the pitch claims (listed with the reasons in capacitron.md). Utterances of 2-4 words spoken by espeak-ng
(`en-us`) at a random pitch (-p 10..90) and rate (-s 120..240 words/min) (`gvlab.data.speech`), 40-band HTK log-mel
frames (`gvlab.audio`, 93 ms window, 46 ms hop), normalised per band. The model (`gvlab.prosody.model`): text +
reference mel -> q(z | x, text) (Var+Txt) -> duration + mel frames; objective recon + beta (KL - C), beta = softplus
of a multiplier updated by SGD-momentum dual ascent in `TrainState.extra` (`gvlab.capacity`). Members of one fit:
every capacity C and the text-only baseline (z = 0, no KL), x `num_seeds` seeds.

Measurements: pitch and rate read from log-mel features by linear read-outs fitted on real training utterances
(`gvlab.prosody.measure`); transfer = the reference's pitch/rate recovered from frames decoded with another text;
its ceiling = the same read-outs on real espeak-ng utterances of that text at the reference's pitch and rate.
Prior spread = std over prior samples z ~ N(0, I) of the read pitch/rate for a fixed text, over the spread of the
read-outs on real test utterances.

Claims (issue 19; thresholds fixed before any run):
* every capacity: |KL - C| <= 0.1 C (KL over the training utterances at the end; every seed);
* pitch and rate transfer errors decrease with capacity (seed means, every consecutive pair of capacities);
* prior samples of the largest capacity vary pitch and rate: spread >= 0.5 x the data's (every seed), while the
  text-only baseline's spread is <= 0.1 x the data's.

Command:  gvlab reproduce speech/capacitron --profile quick        (needs espeak-ng: apt-get install espeak-ng)
Shows:    KL vs C curves, transfer errors vs C with ceilings, prior spreads; figures kl_curves, transfer.
Runtime:  quick (2 seeds x 2000 steps, 8 runs in one program) ~5 min, full (3 seeds x 4000 steps) ~15-20 min on 2
          CPU cores shared with other jobs; the first run also synthesises ~1300 utterances (~1 min, then cached).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab.audio import MelConfig, log_mel_jit
from gvlab.data import epoch_batches, speech
from gvlab.data.padded import Padded
from gvlab.prosody import measure
from gvlab.prosody import model as prosody


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`speech/capacitron` settings.

    Attributes:
        capacities: C in nats, one member each (the notes' mini-experiment: 1, 3, 6, 12).
        num_train, num_test: utterances synthesised for training and for the evaluations.
        mel: log-mel settings.
        model: model and dual-ascent settings.
        prior_samples: z ~ N(0, I) draws per text for the prior spread.
        decode_frames: frames decoded at most (the longest real utterance has ~50).
        estimator_l2: ridge weight of the pitch read-out.
        cache_dir: espeak-ng audio cache ("" -> `gvlab.data.speech.cache_dir`: $GVLAB_SPEECH_CACHE, else
            ~/.cache/gvlab/espeak, else a temporary folder; never inside the repository).
        train: optimisation (Adam on the model; the multiplier has its own SGD in `model`).
    """

    capacities: tuple[float, ...] = (1.0, 3.0, 10.0)
    num_train: int = 1024
    num_test: int = 128
    # 93 ms windows (10.8 Hz bins resolve the F0 harmonics), 46 ms hop: <= 55 frames per utterance (2 CPU cores).
    mel: MelConfig = MelConfig(n_fft=2048, hop=1024, f_max=4000.0)
    model: prosody.Config = prosody.Config(width=32, latent_dim=8, hidden=(64, 64), envelope_weight=1.0)
    prior_samples: int = 8
    decode_frames: int = 64
    estimator_l2: float = 1.0
    cache_dir: str = ""
    train: TrainConfig = TrainConfig(steps=4000, batch_size=16, lr=1e-3, num_seeds=3, log_every=50)


def synthesise(cfg: Config, prompts: dict) -> dict:
    """Audio -> normalisable log-mel frames and padded text ids (host arrays)."""
    raw = speech.corpus(prompts["text"], prompts["pitch"], prompts["rate"], folder=cfg.cache_dir or None)
    audio = raw["audio"]  # padded to a multiple of 2^15 samples: one compiled log-mel for every corpus
    audio = np.pad(audio, ((0, 0), (0, -audio.shape[1] % (1 << 15))))
    mel = log_mel_jit(jnp.asarray(audio), jnp.asarray(raw["num_samples"]), cfg.mel)
    frames = int(np.asarray(mel.mask).sum(1).max())  # drop frames that are padding in every utterance
    return {"mel": np.asarray(mel.values)[:, :frames], "mel_mask": np.asarray(mel.mask)[:, :frames],
            "text": raw["text"].values,
            "text_mask": raw["text"].mask, "pitch": raw["pitch"], "rate": raw["rate"]}


def datasets(cfg: Config) -> dict:
    """Train and test corpora; the transfer targets (test texts shifted by one) and their real utterances at the
    references' pitch and rate (the ceiling)."""
    train = speech.draw_prompts(0, cfg.num_train)
    test = speech.draw_prompts(1, cfg.num_test)
    target = {"text": test["text"][1:] + test["text"][:1], "pitch": test["pitch"], "rate": test["rate"]}
    return {name: synthesise(cfg, prompts) for name, prompts in
            (("train", train), ("test", test), ("target", target))}


def padded(part: dict, stats) -> dict:
    mean, std = stats
    return {"text": Padded(jnp.asarray(part["text"]), jnp.asarray(part["text_mask"])),
            "mel": Padded((jnp.asarray(part["mel"]) - mean[None, None]) / std[None, None],  # per band
                          jnp.asarray(part["mel_mask"]))}


def evaluate_run(run, data, key, *, net, size: int, samples: int) -> dict:
    """Per run: KL on train and test, transfer errors, prior spreads."""
    params, variational = run["params"], run["variational"]
    est, train, test, target = data["est"], data["train"], data["test"], data["target"]
    pitch, log_rate = measure.transfer(net, params, variational, test["text"], test["mel"], target["text"], est, size)
    own_pitch, own_rate = measure.transfer(net, params, variational, test["text"], test["mel"], test["text"], est, size)
    spread_pitch, spread_rate = measure.prior_spread(net, params, variational, test["text"], key, samples, est, size)
    return {"kl_train": measure.mean_kl(net, params, train["text"], train["mel"]),
            "kl_test": measure.mean_kl(net, params, test["text"], test["mel"]),
            "pitch_error": jnp.mean(jnp.abs(pitch - data["pitch"])),
            "rate_error": jnp.mean(jnp.abs(log_rate - jnp.log(data["rate"]))),
            "pitch_error_own_text": jnp.mean(jnp.abs(own_pitch - data["pitch"])),
            "rate_error_own_text": jnp.mean(jnp.abs(own_rate - jnp.log(data["rate"]))),
            "spread_pitch": spread_pitch, "spread_rate": spread_rate}


def decreasing(errors: np.ndarray) -> float:
    """Fraction of consecutive capacity pairs whose seed-mean error decreases."""
    means = errors.mean(1)
    return float(np.mean(means[1:] < means[:-1]))


@experiment(
    "speech/capacitron",
    config=Config(),
    # Smoke: the runs one after another in one program (lax.map: XLA compiles one run's init and step, ~20 % less
    # compilation than the vmapped batch at XLA's default -O3); quick and full keep vmap.
    smoke={"capacities": (1.0, 3.0), "num_train": 8, "num_test": 4, "train.members": "sequential",
           "model.width": 8, "model.latent_dim": 4, "model.hidden": (16,), "prior_samples": 2, "decode_frames": 16,
           "train.steps": 2, "train.batch_size": 4, "train.num_seeds": 1, "train.log_every": 1},
    quick={"train.steps": 2000, "train.num_seeds": 2},
    claims=[
        Claim(statement="The capacity-constrained embedding reaches its target rate: |KL - C| <= 0.1 C for every "
                        "capacity (every seed)", metric="kl_relative_error", op="<=", threshold=0.1, reduce="all",
              source="Battenberg et al. 2019, Sec. 4 (Eq. 5, Lagrangian capacity control); issue 19"),
        Claim(statement="Pitch transfer improves with capacity: the reference's pitch read from frames decoded with "
                        "another text gets closer at every larger C (seed means)", metric="pitch_transfer_decreasing",
              op=">=", threshold=1.0, source="Battenberg et al. 2019, Sec. 6 (transfer precision grows with C)"),
        Claim(statement="Rate transfer improves with capacity (same read-out, log words/min)",
              metric="rate_transfer_decreasing", op=">=", threshold=1.0,
              source="Battenberg et al. 2019, Sec. 6"),
        Claim(statement="Prior samples at the largest capacity vary pitch: spread >= 0.5 x the data's (every seed)",
              metric="prior_pitch_spread_ratio", op=">=", threshold=0.5, reduce="all",
              source="Battenberg et al. 2019, Sec. 6 (natural prior samples); issue 19"),
        Claim(statement="Prior samples at the largest capacity vary rate: spread >= 0.5 x the data's (every seed)",
              metric="prior_rate_spread_ratio", op=">=", threshold=0.5, reduce="all",
              source="Battenberg et al. 2019, Sec. 6; issue 19"),
        Claim(statement="The text-only baseline's samples do not vary prosody: spread <= 0.1 x the data's "
                        "(pitch and rate, every seed)", metric="baseline_spread_ratio", op="<=", threshold=0.1,
              reduce="all", source="issue 19"),
    ],
)
def capacitron(cfg: Config, run) -> dict:
    """Capacity sweep + text-only baseline in one fit; KL vs C, transfer vs C, prior spreads."""
    raw = run.artifact("corpus", lambda: datasets(cfg), inputs=(cfg.num_train, cfg.num_test, repr(cfg.mel),
                                                                  speech.WORDS, speech.PITCH_RANGE, speech.RATE_RANGE))
    frames = raw["train"]["mel"][raw["train"]["mel_mask"]]
    stats = (jnp.asarray(frames.mean(0)), jnp.asarray(frames.std(0) + 1e-3))
    parts = {name: padded(raw[name], stats) for name in ("train", "test", "target")}
    # Eager on purpose: jitting the fit changes its float32 rounding (1e-6 relative) and so the reported numbers.
    est = measure.fit_estimators(parts["train"]["mel"], parts["train"]["text"].mask, raw["train"]["pitch"],
                                 raw["train"]["rate"], cfg.estimator_l2)

    n_cap = len(cfg.capacities)
    args = {"capacity": jnp.asarray(list(cfg.capacities) + [0.0], jnp.float32),
            "variational": jnp.asarray([1.0] * n_cap + [0.0], jnp.float32)}
    method = prosody.make(cfg.model, len(speech.ALPHABET) + 1, cfg.mel.n_mels)
    spec = Spec(method, optax.adam(cfg.train.lr), epoch_batches(parts["train"], cfg.train.batch_size), args=args)
    fit = run.fit(spec)

    net = prosody.network(cfg.model, len(speech.ALPHABET) + 1, cfg.mel.n_mels)
    fn = functools.update_wrapper(functools.partial(evaluate_run, net=net, size=cfg.decode_frames,
                                                    samples=cfg.prior_samples), evaluate_run)
    data = {"est": est, "train": parts["train"], "test": parts["test"], "target": parts["target"],
            "pitch": jnp.asarray(raw["test"]["pitch"]), "rate": jnp.asarray(raw["test"]["rate"])}
    scores = run.evaluate("metrics", fn, {"params": fit.params, "variational": fit.args["variational"]}, data,
                          extra=(repr(cfg.model), cfg.decode_frames, cfg.prior_samples))
    seeds = cfg.train.num_seeds
    table = {k: np.asarray(v).reshape(n_cap + 1, seeds) for k, v in scores.items()}  # member-major

    # Ceilings: the read-outs on real utterances (targets spoken at the references' pitch and rate); one jitted
    # program for both sets (the same numbers as eager, checked on the quick run, and a few dozen fewer compiles).
    (real_pitch, real_rate), (test_pitch, test_rate) = jax.jit(
        lambda e, parts: [measure.estimate(e, parts[k]["mel"], parts[k]["text"].mask) for k in ("target", "test")]
    )(est, parts)
    data_spread = (float(jnp.std(test_pitch)), float(jnp.std(test_rate)))
    caps = np.asarray(cfg.capacities)[:, None]
    results = {f"{k}/{name}": table[k][i] for k in table for i, name in
               enumerate([f"C={c:g}" for c in cfg.capacities] + ["text_only"])}
    results.update({
        "capacities": np.asarray(cfg.capacities),
        "kl_relative_error": (np.abs(table["kl_train"][:n_cap] - caps) / caps).reshape(-1),
        "kl_test_relative_error": (np.abs(table["kl_test"][:n_cap] - caps) / caps).reshape(-1),
        "pitch_transfer_decreasing": decreasing(table["pitch_error"][:n_cap]),
        "rate_transfer_decreasing": decreasing(table["rate_error"][:n_cap]),
        "ceiling/pitch_error": float(jnp.mean(jnp.abs(real_pitch - raw["test"]["pitch"]))),
        "ceiling/rate_error": float(jnp.mean(jnp.abs(real_rate - jnp.log(raw["test"]["rate"])))),
        "no_information/pitch_error": float(np.mean(np.abs(raw["test"]["pitch"] - raw["train"]["pitch"].mean()))),
        "no_information/rate_error": float(np.mean(np.abs(np.log(raw["test"]["rate"])
                                                          - np.log(raw["train"]["rate"]).mean()))),
        "data_spread/pitch": data_spread[0], "data_spread/rate": data_spread[1],
        "prior_pitch_spread_ratio": table["spread_pitch"][n_cap - 1] / data_spread[0],
        "prior_rate_spread_ratio": table["spread_rate"][n_cap - 1] / data_spread[1],
        "baseline_spread_ratio": np.maximum(table["spread_pitch"][n_cap] / data_spread[0],
                                            table["spread_rate"][n_cap] / data_spread[1]),
        "final_beta": np.asarray(fit.state.extra.beta_tilde).reshape(n_cap + 1, seeds)[:n_cap].reshape(-1),
    })
    results["final_beta"] = np.asarray(jax.nn.softplus(results["final_beta"]))
    run.log(f"KL train {np.round(table['kl_train'].mean(1), 3)} for C {cfg.capacities}; pitch error "
            f"{np.round(table['pitch_error'].mean(1), 2)} (ceiling {results['ceiling/pitch_error']:.2f}); rate error "
            f"{np.round(table['rate_error'].mean(1), 3)} (ceiling {results['ceiling/rate_error']:.3f})")
    _figures(cfg, run, fit, table, results)
    return results


def _figures(cfg: Config, run, fit, table, results) -> None:
    import matplotlib.pyplot as plt

    steps, kl = fit.history.column("capacitron/kl")
    kl = np.asarray(kl).reshape(len(steps), len(cfg.capacities) + 1, -1)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, c in enumerate(cfg.capacities):
        ax.plot(steps, kl[:, i].mean(1), color=f"C{i}", label=f"C = {c:g}")
        ax.fill_between(steps, kl[:, i].min(1), kl[:, i].max(1), color=f"C{i}", alpha=0.2)
        ax.axhline(c, color=f"C{i}", ls="--", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("KL (nats, training batch)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    run.figure("kl_curves", fig)

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key in zip(axes, ("pitch", "rate")):
        err = table[f"{key}_error"]
        ax.errorbar(cfg.capacities, err[:-1].mean(1), yerr=err[:-1].std(1), marker="o", label="Capacitron")
        ax.axhline(err[-1].mean(), color="C1", ls=":", label="text-only baseline")
        ax.axhline(results[f"ceiling/{key}_error"], color="k", ls="--", label="real utterance (ceiling)")
        ax.set_xscale("log")
        ax.set_xlabel("capacity C (nats)")
        ax.set_ylabel(f"{key} transfer error" + (" (log wpm)" if key == "rate" else " (espeak -p)"))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    run.figure("transfer", fig)
