"""Many small linear inverse problems of different kinds as one batch: one explicit operator per measurement.

A random mask (a fresh one per image), a box mask and average pooling are different operator types, so a solver
jitted over `gvlab.inverse.operators` compiles once per type and cannot batch them together. Here every
measurement carries its A and A^+ as explicit matrices on the flattened image (`matrix_form`, from a library
operator), with y zero-padded to the image size, so all the tasks of an experiment are one solver batch and each
solver compiles once for all of them (`inverse/red_diff`). The zero padding adds zero rows to A (and y) and zero
columns to A^+: residuals, gradients and posteriors are unchanged. O(D^2) memory per measurement: for small images
(8 x 8 digits: D = 64).

A solver batch holds S consecutive rows per measurement (`[N S, H, W]`, several solutions of each problem): row
n S + s is acted on by operator n.

    >>> ops, y = measure_tasks(jnp.zeros((2, 4, 4)), jax.random.key(0), tasks=("inpainting", "sr2"), sigma_y=0.1,
    ...                        keep_fraction=0.5, box=2)
    >>> ops.matrix.shape, y.shape          # task-major: rows 0-1 inpainting, 2-3 SR x2
    ((4, 16, 16), (4, 4, 4))
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.inverse.operators import AveragePool, dense_matrix, make_box_inpainting, make_random_inpainting


@functools.partial(jax.tree_util.register_dataclass, data_fields=("matrix", "pinv_matrix"), meta_fields=())
@dataclasses.dataclass(frozen=True, eq=False)
class MatrixOperators:
    """One linear operator per measurement, as explicit matrices on flattened images, y zero-padded to D entries
    (so y is image-shaped whatever the task). Acts on solver batches `[N S, H, W]` (module docstring).

    Attributes:
        matrix: A per measurement, `[N, D, D]`.
        pinv_matrix: A^+ per measurement, `[N, D, D]`.
    """

    matrix: Float[Array, "N D D"]
    pinv_matrix: Float[Array, "N D D"]

    def _apply(self, matrices: Array, x: Array) -> Array:
        x_NxSxD = x.reshape(matrices.shape[0], -1, matrices.shape[-1])
        return jnp.einsum("nij,nsj->nsi", matrices, x_NxSxD).reshape(x.shape)

    def forward(self, x: Float[Array, "NS H W"]) -> Float[Array, "NS H W"]:
        return self._apply(self.matrix, x)

    def adjoint(self, y: Float[Array, "NS H W"]) -> Float[Array, "NS H W"]:
        return self._apply(jnp.swapaxes(self.matrix, -1, -2), y)

    def gram(self, x: Float[Array, "NS H W"]) -> Float[Array, "NS H W"]:
        return self.adjoint(self.forward(x))

    def pinv(self, y: Float[Array, "NS H W"]) -> Float[Array, "NS H W"]:
        return self._apply(self.pinv_matrix, y)


def matrix_form(op, shape: tuple[int, int], y_shape: tuple[int, ...]) -> tuple[Float[Array, "D D"], Float[Array, "D D"]]:
    """A library operator's A (`dense_matrix`) and A^+ (its `pinv` on the basis of y), zero-padded to D x D."""
    d = math.prod(shape)
    a = dense_matrix(op, shape)  # [M, D]
    m = a.shape[0]
    basis = jnp.eye(m, dtype=a.dtype).reshape(m, *y_shape)
    p = jax.vmap(op.pinv)(basis).reshape(m, d).T  # [D, M]
    return jnp.pad(a, ((0, d - m), (0, 0))), jnp.pad(p, ((0, 0), (0, d - m)))


def task_matrices(task: str, key: PRNGKeyArray, shape: tuple[int, int], keep_fraction: float, box: int):
    """(A, A^+) of one measurement of `task`: "inpainting" (a random mask observing `keep_fraction` of the pixels,
    drawn from `key`), "box" (the centred `box x box` square missing) or "srK" (K x K average pooling, e.g. "sr2")."""
    if task == "inpainting":
        return matrix_form(make_random_inpainting(key, shape, keep_fraction), shape, shape)
    if task == "box":
        top, left = (shape[0] - box) // 2, (shape[1] - box) // 2
        return matrix_form(make_box_inpainting(shape, top, left, box, box), shape, shape)
    if task.startswith("sr") and task[2:].isdigit():
        factor = int(task[2:])
        return matrix_form(AveragePool(factor, image_shape=shape), shape, tuple(n // factor for n in shape))
    raise ValueError(f"unknown task {task!r}; choose from 'inpainting', 'box' and 'srK' (K an integer)")


@functools.partial(jax.jit, static_argnames=("tasks", "sigma_y", "keep_fraction", "box"))
def measure_tasks(x0: Float[Array, "N H W"], key: PRNGKeyArray, *, tasks: tuple[str, ...], sigma_y: float,
                  keep_fraction: float, box: int) -> tuple[MatrixOperators, Float[Array, "TN H W"]]:
    """Operators and y = A x0 + sigma_y n, `[T N, H, W]`, for every task of `tasks` (`task_matrices`; task-major),
    one draw of mask and noise per image and task (task i uses `fold_in(key, i)`). Noise falls only on real
    measurements (inpainting: the observed pixels, zero-filled y; SR: the pooled entries, zero padding)."""
    shape = x0.shape[1:]
    ops, ys = [], []
    for i, task in enumerate(tasks):
        mask_key, noise_key = jax.random.split(jax.random.fold_in(key, i))
        a, p = jax.vmap(lambda k, t=task: task_matrices(t, k, shape, keep_fraction, box))(
            jax.random.split(mask_key, len(x0)))
        op = MatrixOperators(a, p)
        measured = jnp.any(a != 0, axis=-1).reshape(x0.shape)  # rows of A that measure something
        noise = jnp.where(measured, sigma_y * jax.random.normal(noise_key, x0.shape), 0.0)
        ops.append(op)
        ys.append(op.forward(x0) + noise)
    return jax.tree.map(lambda *v: jnp.concatenate(v), *ops), jnp.concatenate(ys)


def solve_rows(solver, model, schedule, ops, y: Float[Array, "N H W"], sigma_y: float, key: PRNGKeyArray,
               num_steps: int, *, samples: int, step_size: Float[Array, "*N"] | None = None, **options
               ) -> Float[Array, "N S H W"]:
    """`samples` solutions of each of N measurements with a `gvlab.inverse.solvers` solver, as rows n S + s of one
    solver batch (so their noise draws differ; `MatrixOperators` act on such rows). A `step_size` (DPS) may be a
    scalar or one value per measurement `[N]`, repeated over its rows."""
    y_rows = jnp.repeat(y, samples, axis=0)  # [N S, H, W]
    if step_size is not None:
        step_size = jnp.asarray(step_size)
        options["step_size"] = jnp.repeat(step_size, samples)[:, None, None] if step_size.ndim else step_size
    x = solver(model, schedule, ops, y_rows, sigma_y, key, num_steps, **options).x
    return x.reshape(y.shape[0], samples, *x.shape[1:])
