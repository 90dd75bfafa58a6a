"""The helpers of `inverse/red_diff` (experiments/inverse_red_diff.py): the per-measurement matrix operators that
put every task into one solver batch, and the validation rule that picks DPS's step.

Oracles: the matrix form acts exactly as the library operator it was built from (forward, A^+, and the adjoint by
the dot-product test), row n S + s of a solver batch is acted on by operator n, and the exact posterior mean with a
zero-padded SR matrix equals the one with the unpadded 16 x 64 matrix. Negative controls: the operator of another
measurement, and a transposed A^+ for SR, must fail the same checks. One jitted program builds everything.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import inverse_red_diff as red
from gvlab.inverse.gaussian import gaussian_posterior
from gvlab.inverse.operators import AveragePool, dense_matrix, make_random_inpainting

N, S = 3, 2


@jax.jit
def _case(key):
    x_key, op_key, y_key, m_key = jax.random.split(key, 4)
    x0 = jax.random.uniform(x_key, (N, 8, 8), minval=-1.0, maxval=1.0)
    ops, y = red.measure(x0, op_key, tasks=("inpainting", "sr2"), sigma_y=0.05, keep_fraction=0.5, box=4)
    masks = jax.vmap(lambda k: make_random_inpainting(k, (8, 8), 0.5).mask)(jax.random.split(m_key, N))
    sr_a = dense_matrix(AveragePool(2), (8, 8))  # [16, 64]
    cov = jnp.eye(64) * 0.3 + 0.1
    padded = gaussian_posterior(jnp.zeros(64), cov, ops.matrix[N], y[N].reshape(-1), 0.05).mean
    exact = gaussian_posterior(jnp.zeros(64), cov, sr_a, y[N].reshape(-1)[:16], 0.05).mean
    return x0, ops, y, masks, sr_a, padded, exact, jax.random.normal(y_key, (2, N * S, 8, 8))


def test_matrix_operators_act_as_the_library_operators(key):
    x0, ops, y, masks, sr_a, padded, exact, noise = _case(key)
    x0, y, masks, sr_a, (x_rows, y_rows) = (np.asarray(v) for v in (x0, y, masks, sr_a, noise))
    a, p = np.asarray(ops.matrix), np.asarray(ops.pinv_matrix)
    # Rows 0..N-1 inpainting (A = A^+ = diag(mask), 32 observed pixels), N..2N-1 SR x2 (A zero-padded to 64 rows).
    for n in range(N):
        observed = np.diag(a[n])
        assert observed.sum() == 32 and np.array_equal(a[n], np.diag(observed)) and np.array_equal(p[n], a[n])
        np.testing.assert_allclose(a[N + n][:16], sr_a, atol=1e-7)
        assert not a[N + n][16:].any() and not p[N + n][:, 16:].any()
        np.testing.assert_allclose(p[N + n][:, :16], 4.0 * sr_a.T, atol=1e-6)  # nearest upsampling
        # y = A x0 + noise on the measured entries only: the padding and the unobserved pixels stay 0.
        assert not y[N + n].reshape(-1)[16:].any() and not y[n].reshape(-1)[observed == 0].any()
        assert 0.01 < np.std(y[N + n].reshape(-1)[:16] - sr_a @ x0[n].reshape(-1)) < 0.15
    # Masks drawn from another key are other masks: the check above is not vacuous (negative control).
    assert not np.array_equal(np.diag(a[0]).reshape(8, 8).astype(bool), masks[0])

    # A solver batch: row n S + s belongs to operator n; the adjoint passes the dot-product test.
    sr = red.MatrixOperators(ops.matrix[N:], ops.pinv_matrix[N:])
    forward = np.asarray(sr.forward(jnp.asarray(x_rows)))
    expected = np.einsum("nij,nsj->nsi", a[N:], x_rows.reshape(N, S, 64)).reshape(forward.shape)
    np.testing.assert_allclose(forward, expected, atol=1e-5)
    lhs = np.sum(forward * y_rows)
    rhs = np.sum(x_rows * np.asarray(sr.adjoint(jnp.asarray(y_rows))))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
    # Negative control: with the measurements' order reversed, rows meet the wrong operators.
    shuffled = red.MatrixOperators(ops.matrix[:N][::-1], ops.pinv_matrix[:N][::-1])
    inpaint = red.MatrixOperators(ops.matrix[:N], ops.pinv_matrix[:N])
    assert not np.allclose(shuffled.forward(jnp.asarray(x_rows)), inpaint.forward(jnp.asarray(x_rows)))

    # Zero padding leaves the exact posterior unchanged.
    np.testing.assert_allclose(padded, exact, atol=1e-5)


def test_dps_step_is_chosen_on_validation_psnr_per_task():
    x0 = np.zeros((2, 8, 8))
    tasks, weights = ("inpainting", "sr2"), (0.05, 0.1, 0.3)
    error = np.array([[0.3, 0.1], [0.1, 0.2], [0.2, 0.4]])  # [Z, T]: best zeta' index 1 for inpainting, 0 for SR
    sweep = np.broadcast_to(error[:, :, None, None, None, None], (3, 2, 2, 1, 8, 8)).reshape(3, 4, 1, 8, 8)
    scores, index = red.dps_choice(sweep, x0, tasks)
    chosen = np.asarray(weights)[index]
    np.testing.assert_allclose(scores, 10 * np.log10(4 / error**2))
    np.testing.assert_array_equal(chosen, [0.1, 0.05])
    # The rule is the maximum PSNR (minimum error), not the minimum: the opposite rule picks other steps.
    assert not np.array_equal(np.asarray(weights)[np.argmin(scores, axis=0)], chosen)
