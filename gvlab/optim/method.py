"""A distributed VI method as a `gvlab.Method` with its own step, so that `gvlab.train.fit` drives it.

`fit` then gives the iterations what every training run has: a progress line, `metrics.jsonl` rows, checkpoints
and resume (2 + 2 steps equal 4, bitwise). One fit step is c iterations of the method (`iterations_per_step`, a
`lax.scan`; c = 1 by default), each `distributed.step_state`: the workers' code under `shard_map` over the
`("workers",)` mesh, messages by `psum`. `make_spec` builds the `Spec` of R runs, each a member of the fit (a
problem draw x a step size):

* data (per member): `{"problem": AffineVI}`, the workers' operators, `[M, d, d]` and `[M, d]`. Its leading axis is
  the worker axis, so `fit` splits it over its mesh as `shard_map` wants it: give `fit` the mesh
  `fit_mesh(worker_mesh)`, a `("data",)` mesh over the same devices in the same order.
* args (`Spec.args`, per member): the step size gamma, the key of the run's compression randomness (as key data;
  iteration t uses `fold_in(key, t)`), and z*, against which the error is recorded (the method never sees it).
  Checkpoints fingerprint them, so a resumed run cannot use other values.
* params: the iterate z^k (z^0 = 0, or a warm start). `TrainState.extra`: the rest of the method's state (anchor
  w^k, F(w^k), per-worker F_m(w^k) and error-feedback memory e_m^k, uplink floats sent so far), z^0, and the
  record of every iteration, r_k = ||z^k - z*||^2 / ||z^0 - z*||^2 and the uplink floats per worker up to k for
  k = 0..N (`trajectory` reads it back: a curve must not depend on how often rows are logged).

Fit such a spec for ceil(N / c) steps with `train.num_seeds = 1` and `train.batch_size = M`: the run's randomness
is its compression key, not the fit's seed keys (which the step does not use). Metrics of each step, after its
last iteration: `loss` = r_k (capped at sqrt of the largest float, so that a diverged run neither trips the fit's
non-finite guard, which would stop the other runs, nor overflows the mean of the progress line: a diverging step
size is a result here), `vi/diverged`, `vi/iteration` (k), and `uplink/floats`, the uplink floats per worker so
far.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh
from jaxtyping import Array, Float, PRNGKeyArray

from gvlab.errors import ConfigError
from gvlab.optim.distributed import Trajectory, WorkerState, init_state, step_state
from gvlab.optim.variational import AffineVI, relative_error
from gvlab.types import DataSource, Method, Spec


def _problem_batch(arrays: dict, key: PRNGKeyArray, step: Array) -> dict:
    return arrays  # the whole problem every iteration (deterministic operators)


def make_spec(algorithm: Any, problems: AffineVI, solutions: Float[Array, "runs d"], keys: PRNGKeyArray,
              step_sizes: Float[Array, " runs"], *, num_steps: int, mesh: Mesh | None = None,
              iterations_per_step: int = 1) -> Spec:
    """The `Spec` of a fit of `algorithm` on R runs (members), each with its own problem, z*, key and step size.

    Args:
        algorithm: a distributed method of `gvlab.optim` (static).
        problems: `AffineVI` with leading run axis (the per-member data).
        solutions: z* of each run, `[R, d]` (for the recorded error only).
        keys: one typed key per run (compression and refresh coins).
        step_sizes: gamma of each run, `[R]`.
        num_steps: N, the iterations of each run.
        mesh: the `("workers",)` mesh; give `fit` the mesh `fit_mesh(mesh)`.
        iterations_per_step: c; fit for `ceil(N / c)` steps (see `make_method`).
    """
    args = {"step_size": np.asarray(step_sizes), "key": np.asarray(jax.random.key_data(keys)),
            "solution": np.asarray(solutions)}
    data = DataSource(arrays={"problem": problems}, batch=_problem_batch, per_member=True)
    return Spec(method=make_method(algorithm, num_steps, mesh, iterations_per_step), optimizer=optax.identity(), data=data, args=args)


def fit_mesh(mesh: Mesh) -> Mesh:
    """The `("data",)` mesh `fit` needs (its batch axis) over the devices of a `("workers",)` mesh, in order."""
    return Mesh(mesh.devices, ("data",), axis_types=(AxisType.Auto,))


def make_method(algorithm: Any, num_steps: int, mesh: Mesh | None = None, iterations_per_step: int = 1) -> Method:
    """`algorithm` (e.g. `Masha1(k=5, refresh_probability=0.05)`) as a `Method` whose `step` runs its iterations.

    Args:
        algorithm: a distributed method of `gvlab.optim` (static; `init` / `step` protocol of `distributed`).
        num_steps: N, the iterations in all (the length of the record in `extra`).
        mesh: the `("workers",)` mesh of the workers; `None` simulates them on one device.
        iterations_per_step: c, iterations per fit step (a `lax.scan`; fit for ceil(N / c) steps, iterations
            past N are not taken). Iteration t uses `fold_in(key, t)` whatever c is, so c changes only how often
            the host sees the runs (rows, checkpoints, resume points), not the numbers.
    """

    def init(key: PRNGKeyArray, batch: dict) -> Float[Array, " d"]:
        return jnp.zeros_like(batch["problem"].offsets[0])

    def init_extra(key: PRNGKeyArray, batch: dict, params: Float[Array, " d"]) -> dict:
        state = init_state(algorithm, batch["problem"], params, mesh=mesh)
        errors = jnp.full((num_steps + 1,), jnp.nan, params.dtype).at[0].set(1.0)  # r_0 = 1 by definition
        sent = jnp.full((num_steps + 1,), -1, state.floats.dtype).at[0].set(state.floats)  # -1: not yet reached
        return {"shared": state.shared, "local": state.local, "floats": state.floats, "start": params,
                "errors": errors, "sent": sent}

    def loss(params, batch, key, step, *, args, extra=None):
        """r = ||z - z*||^2 / ||z^0 - z*||^2 (what the step reports; there is no gradient step)."""
        start = jnp.zeros_like(params) if extra is None else extra["start"]
        return relative_error(params, args["solution"], start), {}

    def step(state, batch: dict, key: PRNGKeyArray) -> tuple[Any, dict[str, Array]]:
        extra, args = state.extra, state.args
        run_key = jax.random.wrap_key_data(args["key"])

        def iterate(carry, t):
            worker, errors, sent = carry
            new, error = step_state(algorithm, batch["problem"], worker, jax.random.fold_in(run_key, t),
                                    args["step_size"], args["solution"], extra["start"], mesh=mesh)
            taken = t < num_steps
            worker = jax.tree.map(lambda a, b: jnp.where(taken, a, b), new, worker)
            index = jnp.where(taken, t + 1, num_steps + 1)  # out of range: dropped
            return (worker, errors.at[index].set(error, mode="drop"),
                    sent.at[index].set(new.floats, mode="drop")), None

        worker = WorkerState(z=state.params, shared=extra["shared"], local=extra["local"], floats=extra["floats"])
        first = state.step * iterations_per_step
        (worker, errors, sent), _ = jax.lax.scan(iterate, (worker, extra["errors"], extra["sent"]),
                                                 first + jnp.arange(iterations_per_step))
        last = jnp.minimum(first + iterations_per_step, num_steps)
        error = errors[last]
        cap = jnp.sqrt(jnp.finfo(error.dtype).max)  # finite, and a mean over runs cannot overflow
        metrics = {"loss": jnp.minimum(jnp.nan_to_num(error, nan=cap), cap),
                   "vi/diverged": (~jnp.isfinite(error)).astype(error.dtype), "vi/iteration": last.astype(error.dtype),
                   "uplink/floats": worker.floats.astype(error.dtype)}
        extra = {**extra, "shared": worker.shared, "local": worker.local, "floats": worker.floats,
                 "errors": errors, "sent": sent}
        return state.replace(step=state.step + 1, params=worker.z, extra=extra), metrics

    return Method(init=init, loss=loss, step=step, init_extra=init_extra)


def trajectory(result: Any) -> Trajectory:
    """The record of a finished fit (`FitResult`): r_k and uplink floats for k = 0..N, and z^N, `[runs, ...]`.

    Raises:
        ConfigError: the fit took another number of steps than the N its spec records.
    """
    extra = result.state.extra
    sent = np.asarray(extra["sent"])
    if (sent < 0).any():
        raise ConfigError(f"the fit stopped before iteration num_steps={sent.shape[-1] - 1} of its spec; fit for "
                          "ceil(num_steps / iterations_per_step) steps")
    return Trajectory(relative_error=np.asarray(extra["errors"]), floats=sent,
                      final=np.asarray(result.params))
