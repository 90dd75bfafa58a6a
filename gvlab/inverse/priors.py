"""Learned priors for the inverse-problem solvers: a denoiser (x0-predicting network) trained with the v-loss, and
a `TimeMLP` on flat pixels as the solvers' `Model` (`mlp_model`).

On a variance-preserving path x_t = alpha_t x0 + sigma_t eps (alpha_t^2 + sigma_t^2 = 1), Salimans & Ho (2022,
*Progressive Distillation*, Sec. 4) train with the loss of the v-prediction v = alpha_t eps - sigma_t x0. Since
v_hat - v = -(x0_hat - x0) / sigma_t when eps_hat and v_hat are read from the same x0_hat at x_t,

    L_v = ||v_hat - v||^2 = (1 / sigma_t^2) ||x0_hat - x0||^2 = (1 + SNR_t) ||x0_hat - x0||^2,
    SNR_t = alpha_t^2 / sigma_t^2

(their "SNR+1" weighting). `v_loss_method` trains an x0 output with the right-hand side, which holds on
any path: it is the unit x0 loss plus the eps loss of the same prediction (||eps_hat - eps||^2 = SNR_t ||x0_hat -
x0||^2), so the network is accurate both where the data dominate (x0 weight 1 at low SNR) and where the noise does.
An eps-network's x0 estimate x0_hat = (x_t - sigma_t eps_hat) / alpha_t instead magnifies its eps error by
sigma_t / alpha_t (~125 at t = 0.98 on the VP-linear path), which is what RED-Diff's SNR weighting feeds in.

    >>> from gvlab.diffusion.schedules import Schedule
    >>> from gvlab.nn import TimeMLP
    >>> method = v_loss_method(TimeMLP(out_features=4, hidden=(8,)), Schedule("vp_linear"))
    >>> params = method.init(jax.random.key(0), {"x": jnp.zeros((2, 4))})
    >>> loss, metrics = method.loss(params, {"x": jnp.ones((2, 4))}, jax.random.key(1), 0)
    >>> sorted(metrics)
    ['diffusion/eps_mse', 'diffusion/loss', 'diffusion/mse']
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gvlab.diffusion import losses
from gvlab.diffusion.parameterisation import Prediction, convert
from gvlab.diffusion.samplers import Model
from gvlab.diffusion.schedules import Schedule
from gvlab.types import Batch, Method, Metrics, Params, PRNGKey


def v_loss_method(network: Any, schedule: Schedule) -> Method:
    """An x0-predicting `network` (`init(key, x, t)`, `apply(params, x, t) -> x0_hat`) trained by

        loss = E_t,eps (1 + SNR_t) ||x0_hat(x_t, t) - x0||^2,    t ~ U[t_min, t_max]

    (the v-loss on a VP path, Salimans & Ho 2022; see the module docstring), as a `gvlab.types.Method` for
    `run.fit`. The network's `Model` for the solvers is `Model(predict, "x0")`. Metrics as
    `gvlab.diffusion.losses.make_method`: `diffusion/loss`, `diffusion/mse` (unweighted x0 error) and
    `diffusion/eps_mse` (the prediction read as eps).
    """
    init = losses.make_method(network, "x0", schedule).init

    def loss(params: Params, batch: Batch, key: PRNGKey, step: jax.Array) -> tuple[jax.Array, Metrics]:
        del step
        x0 = batch["x"]
        t_B, eps, x_t = losses.noised(x0, key, schedule)
        x0_hat = network.apply(params, x_t, t_B)
        squared = jnp.sum(jnp.square(x0_hat - x0).reshape(x0.shape[0], -1), axis=-1)
        weight = 1.0 + jnp.exp(schedule.log_snr(t_B))
        eps_hat = convert(x0_hat, "x0", "eps", schedule, x_t, t_B)
        value = jnp.mean(weight * squared)
        return value, {"diffusion/loss": value, "diffusion/mse": jnp.mean(squared),
                       "diffusion/eps_mse": jnp.mean(jnp.sum(jnp.square(eps_hat - eps).reshape(x0.shape[0], -1), -1))}

    return Method(init=init, loss=loss)


def mlp_model(params: Any, hidden: Sequence[int], prediction: Prediction,
              image_shape: tuple[int, int] = (8, 8)) -> Model:
    """A `gvlab.nn.TimeMLP` with widths `hidden` and H W outputs as the solvers' `Model` on images `[B, H, W]`: the
    network sees the rows flattened row-major (the order of `gvlab.inverse.operators.dense_matrix`) and its output
    (a `prediction`: "x0", "eps", "velocity" or "score") is reshaped back to the images'."""
    from gvlab.nn import TimeMLP  # here: gvlab.nn imports gvlab.inverse (a module-level import would be circular)

    net = TimeMLP(out_features=int(np.prod(image_shape)), hidden=tuple(hidden))
    return Model(lambda x, t: net.apply(params, x.reshape(x.shape[0], -1), t).reshape(x.shape), prediction)
