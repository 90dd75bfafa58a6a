"""Label-Agnostic Forgetting (LAF; Shen, Zhang, Zhao, Zhu, Liu & Zhou, ICLR 2024, arXiv 2404.00506).

Unlearning of f = h . g_e without labels, in two phases (official code: `VUnlearning.py`, `Train.py::vae_train`):

1. Representation VAEs. With the original extractor g_e^0 frozen, VAE_s models the embeddings
   e = g_e^0(x) of all training data (`LAF.ipynb` trains it on `loaders['train']`; Eq. 4 of the paper) and VAE_u
   those of the forget set D_f. Loss per VAE (`Train.py::vae_loss_function`): sum_d (e_hat_d - e_d)^2 + 0.025 KL,
   averaged over the batch: `gvlab.models.vae` with a Gaussian decoder of fixed variance 1/2 (so -log p(e|z) is the
   squared error up to a constant) and beta = 0.025. The decoder is linear here where the official one ends in a
   sigmoid: our embeddings are unbounded linear outputs (the official `fc1` embedding is too).
2. Extractor unlearning, alternating on every pair of batches x_r ~ D_r, x_u ~ D_f:
   * UE step (Eq. 8 as implemented, `extractor_loss_functionnmse`), Adam at lr_ue on g_e:
       L_UE = sum_i exp(m_i / (m_i + 1))|_{VAE_s, e = g_e(x_r,i)} - sum_j exp(m_j / (m_j + 1))|_{VAE_u, e = g_e(x_u,j)}
     with m(e) = ||VAE(e) - e||^2 through a stochastic pass (z ~ q(z|e)).
   * RA step (Eq. 9 as implemented, `extractor_loss_functioncosine`), Adam at lr_ra on the updated g_e:
       L_RA = sum_i log( exp(d^r_i) / sum_j exp(d^u_j / tau) ),  d = 1 - cos(g_e(x), g_e^0(x))
     pulling remaining embeddings onto the frozen teacher g_e^0 and pushing forgotten ones away.
   The head h is untouched and no label is read. The teacher lives in `TrainState.extra` (copied from the
   warm-start parameters at initialisation). LAF+R then repairs the head alone with cross-entropy on a few
   labelled remaining examples (`classifier_unlearning`; `gvlab.unlearning.classifier.neggrad_plus` with the
   extractor frozen).

Both phases are one fit (`laf_method`: the VAE steps, then the UE/RA steps) over parameters
`{"extractor", "head", "vae_s", "vae_u"}` (`make_init`), warm-started (`fit(init=...)`) from a classifier trained
with the same parameter structure; members over forget sets share one program.
Per-member `args = {"use_ue": 0/1, "use_ra": 0/1}` switch the two steps (the UE-only and RA-only ablations): a
switched-off step has zero gradient, hence an exactly zero Adam update.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxtyping import Array, Float

from gvlab.models import vae as vae_lib
from gvlab.rng import step_key
from gvlab.train.state import TrainState
from gvlab.types import Batch, Method, Params, PRNGKey
from gvlab.unlearning.classifier import Classifier

# Gaussian decoder with variance 1/2: -log N(e; e_hat, 1/2) = ||e - e_hat||^2 + const, the official squared error.
SQUARED_ERROR_STD = math.sqrt(0.5)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """LAF settings (`hyperparameter.md`; the learning rates are scaled up for the small model, notes sec. 2(d)).

    Attributes:
        latent_dim: VAE latent size (8 for the official CNN on 256-d embeddings).
        vae_hidden: VAE encoder widths (the decoder mirrors them); official 256 -> 128 -> 32.
        kl_weight: the KL weight of the VAE loss (0.025 in `vae_loss_function`).
        vae_lr: Adam learning rate of the VAEs (1e-3 in `vae_train`).
        lr_ue: Adam learning rate of the UE step.
        lr_ra: Adam learning rate of the RA step.
        temperature: tau of the RA loss.
    """

    latent_dim: int = 4
    vae_hidden: tuple[int, ...] = (32,)
    kl_weight: float = 0.025
    vae_lr: float = 1e-3
    lr_ue: float = 5e-4
    lr_ra: float = 1e-3
    temperature: float = 20.0


def vae_config(cfg: Config) -> vae_lib.Config:
    """The representation VAE as a `gvlab.models.vae` config (squared error + kl_weight KL)."""
    return vae_lib.Config(latent_dim=cfg.latent_dim, hidden=tuple(cfg.vae_hidden), likelihood="gaussian",
                          decoder_std=SQUARED_ERROR_STD, beta=cfg.kl_weight)


def reconstruction_error(model: vae_lib.VAEModel, vae_params: Params, e: Float[Array, "B D"], key: PRNGKey
                         ) -> Float[Array, " B"]:
    """m(e) = ||VAE(e) - e||^2 per example `[B]`, decoding one draw z ~ q(z|e) (the official `vae(e)` pass)."""
    z = model.encode(vae_params, e).sample(key)
    return jnp.sum(jnp.square(model.decode(vae_params, z).mean() - e), axis=-1)


def ue_loss(m_remain: Float[Array, " Br"], m_forget: Float[Array, " Bf"]) -> Float[Array, ""]:
    """L_UE = sum_i exp(m_i / (m_i + 1)) - sum_j exp(m_j / (m_j + 1)) (`extractor_loss_functionnmse`, a sum)."""
    def bounded(m):
        return jnp.sum(jnp.exp(m / (m + 1.0)))

    return bounded(m_remain) - bounded(m_forget)


def cosine_distance(a: Float[Array, "B D"], b: Float[Array, "B D"], eps: float = 1e-8) -> Float[Array, " B"]:
    """1 - cos(a, b) per row (torch's `CosineEmbeddingLoss` with target 1, whose eps guards the norms)."""
    dot = jnp.sum(a * b, axis=-1)
    norms = jnp.sqrt(jnp.maximum(jnp.sum(a * a, -1) * jnp.sum(b * b, -1), eps * eps))
    return 1.0 - dot / norms


def ra_loss(e_remain: Float[Array, "Br D"], teacher_remain: Float[Array, "Br D"], e_forget: Float[Array, "Bf D"],
            teacher_forget: Float[Array, "Bf D"], temperature: float | jax.Array) -> Float[Array, ""]:
    """L_RA = sum_i [d^r_i - log sum_j exp(d^u_j / tau)] (`extractor_loss_functioncosine`)."""
    d_remain = cosine_distance(e_remain, teacher_remain)
    d_forget = cosine_distance(e_forget, teacher_forget)
    return jnp.sum(d_remain - jax.nn.logsumexp(d_forget / temperature))


def make_init(cfg: Config, classifier: Classifier, embed_dim: int):
    """`init(key, batch) -> {"extractor", "head", "vae_s", "vae_u"}`: the classifier with its two (untrained)
    representation VAEs. A classifier trained with this init (its objective gives the VAEs zero gradients, hence
    zero Adam updates) carries them, so `laf_method` warm-starts from it with no host-side assembly."""
    model = vae_lib.make_model(vae_config(cfg), (embed_dim,))

    def init(key: PRNGKey, batch: Batch) -> Params:
        classifier_key, s_key, u_key = jax.random.split(key, 3)
        e = {"x": jnp.zeros((1, embed_dim), jnp.float32)}
        return {**classifier.init(classifier_key, batch), "vae_s": model.init(s_key, e),
                "vae_u": model.init(u_key, e)}

    return init


class LAFOptimizer(NamedTuple):
    """Adam on the two VAEs (`vae_train`) and two Adams on the extractor (UE at lr_ue, RA at lr_ra,
    `extractor_unlearning`'s optimizer1/optimizer2); `init(params)` is what `fit` calls, so all three states are
    checkpointed in `TrainState.opt_state`."""

    vae: optax.GradientTransformation
    ue: optax.GradientTransformation
    ra: optax.GradientTransformation

    def init(self, params: Params) -> dict:
        vaes = {"vae_s": params["vae_s"], "vae_u": params["vae_u"]}
        return {"vae": self.vae.init(vaes), "ue": self.ue.init(params["extractor"]),
                "ra": self.ra.init(params["extractor"])}


def laf_method(cfg: Config, classifier: Classifier, embed_dim: int, vae_steps: int) -> tuple[Method, LAFOptimizer]:
    """LAF as one `Method` with its own step, and its optimiser.

    Steps 0 .. vae_steps - 1 train VAE_s on the frozen teacher's embeddings of `x_all` and VAE_u on those of `x_f`
    (loss: the sum of the two VAE losses); the later steps alternate the UE and RA updates of the extractor. The
    head is never updated and no label is read. Batches: paired `{"x_r", "x_f", "x_all", ...}`. `args` (optional,
    per member): `{"use_ue": 0/1, "use_ra": 0/1}`. Metrics (zero in the phase that does not compute them):
    `vae_s/*`, `vae_u/*` (the VAE loss terms), `laf/ue`, `laf/ra` (the losses before each update), `laf/m_remain`,
    `laf/m_forget` (mean reconstruction errors), `laf/d_remain`, `laf/d_forget` (mean cosine distances to the
    teacher after the RA update).
    """
    model = vae_lib.make_model(vae_config(cfg), (embed_dim,))
    vae_loss = vae_lib.make(vae_config(cfg), (embed_dim,)).loss
    tx = LAFOptimizer(vae=optax.adam(cfg.vae_lr), ue=optax.adam(cfg.lr_ue), ra=optax.adam(cfg.lr_ra))

    def vae_value(vaes, teacher, batch, key, step):
        s_key, u_key = jax.random.split(key)
        s_value, s_terms = vae_loss(vaes["vae_s"], {"x": classifier.embed(teacher, batch["x_all"])}, s_key, step)
        u_value, u_terms = vae_loss(vaes["vae_u"], {"x": classifier.embed(teacher, batch["x_f"])}, u_key, step)
        terms = {**{f"vae_s/{k.split('/')[-1]}": v for k, v in s_terms.items()},
                 **{f"vae_u/{k.split('/')[-1]}": v for k, v in u_terms.items()}}
        return s_value + u_value, terms

    def ue_value(extractor, params, batch, key):
        remain_key, forget_key = jax.random.split(key)
        m_r = reconstruction_error(model, params["vae_s"], classifier.embed(extractor, batch["x_r"]), remain_key)
        m_f = reconstruction_error(model, params["vae_u"], classifier.embed(extractor, batch["x_f"]), forget_key)
        return ue_loss(m_r, m_f), (jnp.mean(m_r), jnp.mean(m_f))

    def ra_value(extractor, teacher, batch):
        e_r, e_f = classifier.embed(extractor, batch["x_r"]), classifier.embed(extractor, batch["x_f"])
        t_r, t_f = classifier.embed(teacher, batch["x_r"]), classifier.embed(teacher, batch["x_f"])
        value = ra_loss(e_r, t_r, e_f, t_f, cfg.temperature)
        return value, (jnp.mean(cosine_distance(e_r, t_r)), jnp.mean(cosine_distance(e_f, t_f)))

    def init_extra(key: PRNGKey, batch: Batch, params: Params) -> dict:
        del key, batch
        return {"teacher": jax.tree.map(jnp.copy, params["extractor"])}

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array, extra: Any = None, args: Any = None):
        """L_UE + L_RA at the current parameters (for reference; the step updates them one after the other)."""
        del args, step
        ue, _ = ue_value(params["extractor"], params, batch, key)
        ra, _ = ra_value(params["extractor"], extra["teacher"], batch)
        return ue + ra, {"laf/ue": ue, "laf/ra": ra}, extra

    def gate(args, name):
        return jnp.asarray(1.0) if args is None else args[name]

    zero = jnp.zeros((), jnp.float32)
    unlearn_names = ("laf/ue", "laf/ra", "laf/m_remain", "laf/m_forget", "laf/d_remain", "laf/d_forget")

    def vae_phase(state: TrainState, batch: Batch, key: PRNGKey):
        params, teacher = state.params, state.extra["teacher"]
        vaes = {"vae_s": params["vae_s"], "vae_u": params["vae_u"]}
        (value, terms), grads = jax.value_and_grad(vae_value, has_aux=True)(vaes, teacher, batch, key, state.step)
        updates, vae_state = tx.vae.update(grads, state.opt_state["vae"], vaes)
        vaes = optax.apply_updates(vaes, updates)
        metrics = {"loss": value, **terms, **{name: zero for name in unlearn_names}}
        return {**params, **vaes}, {**state.opt_state, "vae": vae_state}, metrics

    def unlearn_phase(state: TrainState, batch: Batch, key: PRNGKey):
        params, teacher = state.params, state.extra["teacher"]
        use_ue, use_ra = gate(state.args, "use_ue"), gate(state.args, "use_ra")
        (ue, (m_r, m_f)), grads = jax.value_and_grad(ue_value, has_aux=True)(params["extractor"], params, batch,
                                                                              key)
        grads = jax.tree.map(lambda g: use_ue * g, grads)
        updates, ue_state = tx.ue.update(grads, state.opt_state["ue"], params["extractor"])
        extractor = optax.apply_updates(params["extractor"], updates)
        (ra, _), grads = jax.value_and_grad(ra_value, has_aux=True)(extractor, teacher, batch)
        grads = jax.tree.map(lambda g: use_ra * g, grads)
        updates, ra_state = tx.ra.update(grads, state.opt_state["ra"], extractor)
        extractor = optax.apply_updates(extractor, updates)
        _, (d_r, d_f) = ra_value(extractor, teacher, batch)
        metrics = {"loss": use_ue * ue + use_ra * ra, "laf/ue": ue, "laf/ra": ra, "laf/m_remain": m_r,
                   "laf/m_forget": m_f, "laf/d_remain": d_r, "laf/d_forget": d_f}
        # The VAE phase's terms, as zeros: both branches of the phase switch return the same metrics.
        vaes = {"vae_s": params["vae_s"], "vae_u": params["vae_u"]}
        _, vae_terms = jax.eval_shape(vae_value, vaes, teacher, batch, key, state.step)
        metrics.update({name: zero for name in vae_terms})
        return {**params, "extractor": extractor}, {**state.opt_state, "ue": ue_state, "ra": ra_state}, metrics

    def step(state: TrainState, batch: Batch, key: PRNGKey) -> tuple[TrainState, dict]:
        key = step_key(key, state.step)
        # Under vmap over runs the switch becomes a select (both phases computed, one kept): the VAE phase costs
        # little next to UE/RA, and one compiled step serves the whole fit.
        params, opt_state, metrics = jax.lax.cond(state.step < vae_steps, vae_phase, unlearn_phase, state, batch,
                                                  key)
        metrics["norm/params"] = optax.tree.norm(params["extractor"])
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return Method(init=make_init(cfg, classifier, embed_dim), loss=loss, step=step, init_extra=init_extra), tx
