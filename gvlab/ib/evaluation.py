"""Evaluation of IB regressors: RMSE, adversarial RMSE (`gvlab.attacks`) and the information plane.

Information plane (CS-IB paper, Fig. "information plane"; the official loop logs I(x;t) and I(t;y) per epoch,
CS_IB_Housing.py:223-225): I(x; t) and I(t; y) both estimated with the CS quadratic mutual information of
`gvlab.losses.cs` (Proposition 2), normalised as the penalised term (`CS_QMI_normalized`, loss_cs.py:109-115), and
the code's Gaussian proxy for I(t; y), 1/2 log2(Var y / MSE) bits (CS_IB_Housing.py:223: the information a
Gaussian channel with the model's error would carry).

Adversarial RMSE: PGD in the L-infinity ball on the (standardised) inputs, maximising each example's squared error
(the official `PGD`, loss_cs.py:144-175, attacks the MSE of one example at a time); every epsilon is attacked in one
program (`vmap` over eps).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gvlab.attacks import pgd
from gvlab.losses.cs import cs_quadratic_mutual_information
from gvlab.ib import regression


def rmse(y_hat: Float[Array, " N"], y: Float[Array, " N"]) -> Float[Array, ""]:
    return jnp.sqrt(jnp.mean(jnp.square(y_hat - y)))


def information_plane(x: Float[Array, "N dx"], t: Float[Array, "N dt"], y: Float[Array, " N"],
                      sigma: float = 1.0, normalize: bool = True) -> dict[str, Array]:
    """`{"i_xt": I_CS(x; t), "i_ty": I_CS(t; y)}` (normalised CS-QMI by default, nats otherwise)."""
    return {"i_xt": cs_quadratic_mutual_information(x, t, sigma, normalize=normalize),
            "i_ty": cs_quadratic_mutual_information(t, y, sigma, normalize=normalize)}


def gaussian_i_ty_bits(y_hat: Float[Array, " N"], y: Float[Array, " N"]) -> Float[Array, ""]:
    """1/2 log2(Var y / MSE): the official code's I(t; y) proxy in bits (CS_IB_Housing.py:223)."""
    return 0.5 * jnp.log2(jnp.var(y) / jnp.mean(jnp.square(y_hat - y)))


def adversarial_rmse(predict_fn, x: Float[Array, "N d"], y: Float[Array, " N"], key: jax.Array,
                     eps: Float[Array, " E"], num_steps: int, step_fraction: float = 0.25) -> Float[Array, " E"]:
    """RMSE on PGD inputs (L-infinity, random start, step `step_fraction * eps`) for every eps `[E]`."""

    def one(e):
        x_adv = pgd(predict_fn, x, y, key, eps=e, step_size=step_fraction * e, num_steps=num_steps, loss="mse")
        return rmse(predict_fn(x_adv), y)

    return jax.vmap(one)(eps)


def evaluate(inputs: dict, data: dict, key: jax.Array, *, cfg: regression.Config, eps: Sequence[float],
             attack_steps: int, attack_examples: int, plane_examples: int) -> dict[str, Array]:
    """Per-run evaluator (`gvlab.evals` signature; bind the settings with `functools.partial`).

    Args:
        inputs: one run's `{"params", "train_x", "train_y", "test_x", "test_y"}` and optionally `"test_f"` (the
            noise-free targets), all without the run axis (per-run arrays ride with the parameters because each
            run may have its own split).
        data: unused (None).
        key: the attack's key.

    Returns:
        test/train RMSE, `test_rmse_f` (against f(x), if given), `adv_rmse` `[E]` on the first `attack_examples`
        test points (`clean_rmse_attacked` on the same points), and the information plane on the first
        `plane_examples` training points.
    """
    del data
    params = inputs["params"]

    def predict_fn(x: Any) -> Array:
        return regression.predict(cfg, params, x)

    out = {"test_rmse": rmse(predict_fn(inputs["test_x"]), inputs["test_y"]),
           "train_rmse": rmse(predict_fn(inputs["train_x"]), inputs["train_y"])}
    if "test_f" in inputs:
        out["test_rmse_f"] = rmse(predict_fn(inputs["test_x"]), inputs["test_f"])
    x_att, y_att = inputs["test_x"][:attack_examples], inputs["test_y"][:attack_examples]
    out["clean_rmse_attacked"] = rmse(predict_fn(x_att), y_att)
    out["adv_rmse"] = adversarial_rmse(predict_fn, x_att, y_att, key, jnp.asarray(eps, x_att.dtype), attack_steps)
    x_p, y_p = inputs["train_x"][:plane_examples], inputs["train_y"][:plane_examples]
    t_p = regression.encode(cfg, params, x_p)[0]
    out.update(information_plane(x_p, t_p, y_p, cfg.qmi_sigma, cfg.qmi_normalize))
    out["i_ty_gaussian_bits"] = gaussian_i_ty_bits(predict_fn(x_p), y_p)
    return out
