"""`fit`: the one train loop (anchors.md 4.6-4.10).

It compiles the step once (ahead of time, so the compile time is measured and a recompile is impossible), then
drives it with a progress line, `metrics.jsonl` rows, evaluations with fixed keys, checkpoints every
`train.ckpt_every` steps and at the end, automatic resume from the newest readable checkpoint, and a NaN guard
that stops with the step and the metric that went non-finite while the last good checkpoint stays on disk.

`train.num_seeds = N > 1` vmaps initialisation, data and step over N independent runs (seeds seed..seed+N-1)
in one compiled program; run i is the same computation as a single-seed fit with seed `seed + i`.
`Spec.hyperparams = {name: values [M]}` adds members that differ in optimiser hyperparameters (a learning-rate
sweep): the M x N runs, ordered member-major (run r = m N + s: hyperparameters m, seed `seed + s`), share one
compiled program, and each run equals a single fit whose optimiser state holds those hyperparameter values. Batches are
split over all devices of the mesh (`jit` + `NamedSharding`); state is replicated.
"""

from __future__ import annotations

import collections
import dataclasses
import time
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gvlab import config as config_lib
from gvlab.config import TrainConfig
from gvlab.errors import CheckpointError, ConfigError, NonFiniteError
from gvlab.rng import run_keys
from gvlab.train import parallel
from gvlab.train.ckpt import Checkpointer
from gvlab.train.interrupt import deferred_interrupts
from gvlab.train.metrics import History, MetricsFile, Progress, init_guard, rows_from_metrics, update_guard
from gvlab.train.optimizers import set_hyperparams
from gvlab.train.state import TrainState
from gvlab.train.step import init_state, make_train_step
from gvlab.types import Spec


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        state: the final `TrainState` (leaves carry a leading seed axis when `num_seeds > 1`).
        history: every logged row, as written to `metrics.jsonl`.
        spec: the spec that was fitted (its `method.sample` turns `state.params` into samples).
        seeds: the seed of each run.
        members: the member (hyperparameter index) of each run; all 0 without `spec.hyperparams`.
        hyperparams: `{name: value of each run}` from `spec.hyperparams` (empty without it).
        workdir: where checkpoints and metrics live, or None for an in-memory fit.
        timing: `compile_s`, `steps_per_s`, `wall_s`, `start_step` (> 0 when resumed).
    """

    state: TrainState
    history: History
    spec: Spec
    seeds: tuple[int, ...]
    workdir: Path | None
    timing: dict[str, float]
    members: tuple[int, ...] = ()
    hyperparams: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def params(self) -> Any:
        return self.state.params

    @property
    def stacked_params(self) -> Any:
        """Parameters with a leading seed axis whatever `num_seeds` (length 1 for one run): ready to `vmap`."""
        if len(self.seeds) == 1:
            return jax.tree.map(lambda x: x[None], self.state.params)
        return self.state.params

    def params_of(self, index: int) -> Any:
        """Parameters of run `index` (of `seeds`), without the seed axis."""
        if len(self.seeds) == 1:
            return self.state.params
        return jax.tree.map(lambda x: x[index], self.state.params)


# At most this many dispatched steps may be unfinished. XLA:CPU (jaxlib 0.10.2) deadlocks when a multi-device step
# with a collective is queued ~32 deep (its per-device in-flight limit): some devices' launches wait for a free
# slot while the others sit in the all-reduce, and after 40 s the rendezvous aborts the process. Eight steps in
# flight keep any device busy; the cap costs nothing measurable (benchmarks/bench_fit.py).
MAX_STEPS_IN_FLIGHT = 8


def _eval_seed(name: str) -> int:
    # Each evaluation's key depends on its name only, so adding an evaluation does not change the others.
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _make_evaluate(spec: Spec):
    def evaluate(params, eval_key):
        out = {}
        for name, fn in spec.evals.items():
            for metric, value in fn(params, jax.random.fold_in(eval_key, _eval_seed(name))).items():
                out[f"eval/{name}/{metric}"] = value
        return out

    return evaluate


def _due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


@dataclasses.dataclass
class _Program:
    """The pure functions of one fit, their inputs, and what their shapes tell before any compute."""

    seeds: tuple[int, ...]
    members: tuple[int, ...]  # hyperparameter index of each run
    hyperparams: dict[str, np.ndarray]  # per-run values of the swept hyperparameters (host copies)
    stacked: bool  # a leading run axis on state, keys, guard and metrics
    keys: dict[str, jax.Array]  # init/data/train/eval, replicated (stacked over seeds)
    arrays: Any  # the data source's arrays, replicated
    init: Any  # (init_key, data_key, arrays, hyperparams) -> TrainState
    device_hyperparams: Any  # the per-run hyperparameters as the init's last argument
    step: Any  # (state, guard, arrays, data_key, train_key) -> (state, guard, metrics)
    evaluate: Any  # (params, eval_key) -> metrics
    abstract_state: Any
    metric_names: list[str]
    guard: dict[str, jax.Array]


def _member_values(spec: Spec) -> tuple[int, dict[str, np.ndarray]]:
    """(M, {name: float array [M]}) of `spec.hyperparams`; M = 1 and no names without it."""
    values = {name: np.atleast_1d(np.asarray(v, np.float32)) for name, v in spec.hyperparams.items()}
    lengths = {name: v.shape for name, v in values.items()}
    if any(len(shape) != 1 for shape in lengths.values()) or len(set(lengths.values())) > 1:
        raise ConfigError(f"Spec.hyperparams must be 1-D arrays of one common length, got shapes {lengths}")
    return (next(iter(values.values())).shape[0] if values else 1), values


def _build(spec: Spec, train: TrainConfig, mesh, ema_decay: float) -> _Program:
    num_members, member_values = _member_values(spec)
    members = tuple(m for m in range(num_members) for _ in range(train.num_seeds))
    seeds = tuple(train.seed + s for _ in range(num_members) for s in range(train.num_seeds))
    run_hyperparams = {name: v[np.asarray(members)] for name, v in member_values.items()}
    stacked = len(seeds) > 1
    repl = parallel.replicated(mesh)
    step_fn = make_train_step(spec.method, spec.optimizer, ema_decay)
    zero = jnp.zeros((), jnp.int32)
    # One root key per seed, split into named keys; run i of a stacked fit gets exactly the keys of seed i.
    keys = jax.vmap(run_keys)(jnp.asarray(seeds, jnp.uint32)) if stacked else run_keys(seeds[0])

    def init_one(init_key, data_key, arrays, hyperparams):
        state = init_state(spec.method, spec.optimizer, init_key, spec.data.batch(arrays, data_key, zero), ema_decay)
        if hyperparams:  # the member's values live in the optimiser state, so checkpoints carry them
            state = state.replace(opt_state=set_hyperparams(state.opt_state, **hyperparams))
        return state

    # Shapes first: the batch size check, the metric names and the checkpoint skeleton need no compute.
    one_keys = run_keys(0)
    one_batch = jax.eval_shape(spec.data.batch, spec.data.arrays, one_keys["data"], zero)
    for size in {x.shape[0] for x in jax.tree.leaves(one_batch) if x.ndim}:
        parallel.check_divisible(size, mesh)
    one_hyperparams = {name: v[0] for name, v in run_hyperparams.items()}
    one_state = jax.eval_shape(init_one, one_keys["init"], one_keys["data"], spec.data.arrays, one_hyperparams)
    metric_names = sorted(jax.eval_shape(step_fn, one_state, one_batch, one_keys["train"])[1])

    def step_one(state, guard, arrays, data_key, train_key):
        batch = parallel.constrain_batch(spec.data.batch(arrays, data_key, state.step), mesh)
        new_state, metrics = step_fn(state, batch, train_key)
        return new_state, update_guard(guard, metrics, metric_names, state.step), metrics

    evaluate_one = _make_evaluate(spec)
    guard = init_guard(len(metric_names))
    if stacked:
        init_fn = jax.vmap(init_one, in_axes=(0, 0, None, 0))
        step = jax.vmap(step_one, in_axes=(0, 0, None, 0, 0))
        evaluate = jax.vmap(evaluate_one)
        guard = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(seeds),) + x.shape), guard)
    else:
        init_fn, step, evaluate = init_one, step_one, evaluate_one
    keys, arrays = parallel.put(keys, repl), parallel.put(spec.data.arrays, repl)
    device_hyperparams = parallel.put(
        {name: jnp.asarray(v if stacked else v[0]) for name, v in run_hyperparams.items()}, repl)
    abstract_state = jax.eval_shape(init_fn, keys["init"], keys["data"], arrays, device_hyperparams)
    return _Program(seeds=seeds, members=members, hyperparams=run_hyperparams, stacked=stacked, keys=keys,
                    arrays=arrays, init=init_fn, device_hyperparams=device_hyperparams, step=step,
                    evaluate=evaluate, abstract_state=abstract_state, metric_names=metric_names,
                    guard=parallel.put(guard, repl))


def _step_of(state: TrainState) -> int:
    return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


def _restore_or_init(program: _Program, checkpointer: Checkpointer | None, repl, train: TrainConfig,
                     workdir: Path | None) -> tuple[TrainState, int]:
    if checkpointer is not None:
        restored = checkpointer.restore_latest(parallel.abstract_with_sharding(program.abstract_state, repl))
        if restored is not None:
            state, saved_meta = restored
            if saved_meta.get("seeds") != list(program.seeds):
                raise CheckpointError(f"checkpoints in {workdir} are for seeds {saved_meta.get('seeds')}, this fit "
                                      f"uses {list(program.seeds)}; use another workdir")
            if saved_meta.get("hyperparams", {}) != _jsonable_hyperparams(program.hyperparams):
                raise CheckpointError(f"checkpoints in {workdir} are for hyperparameters "
                                      f"{saved_meta.get('hyperparams', {})}, this fit uses "
                                      f"{_jsonable_hyperparams(program.hyperparams)}; use another workdir")
            start = _step_of(state)
            if start > train.steps:
                raise ConfigError(f"{workdir} holds a checkpoint at step {start}, past train.steps={train.steps}")
            return state, start
    keys = program.keys
    state = jax.jit(program.init, out_shardings=repl)(keys["init"], keys["data"], program.arrays,
                                                       program.device_hyperparams)
    return state, 0


def _jsonable_hyperparams(hyperparams: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {name: [float(x) for x in values] for name, values in hyperparams.items()}


def fit(
    spec: Spec,
    train: TrainConfig,
    workdir: str | Path | None = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
    ema_decay: float = 0.0,
    progress: bool = True,
    label: str = "fit",
    meta: dict | None = None,
) -> FitResult:
    """Train `spec` for `train.steps` steps; resume from `workdir` if it holds a checkpoint.

    Args:
        spec: method, optimiser, data source and evaluations.
        train: steps, batch size, seeds and the logging/evaluation/checkpoint intervals.
        workdir: folder for `metrics.jsonl` and `ckpt/`; None trains in memory only.
        mesh: a `("data",)` mesh (default: all devices); the batch is split over it.
        ema_decay: keep an exponential moving average of the parameters when > 0.
        progress: print the progress line to stderr.
        label: name shown on the progress line.
        meta: extra JSON metadata stored with every checkpoint (experiment name, config).

    Raises:
        NonFiniteError: a metric became NaN or inf (the message names the first such step and metrics).
        CheckpointError: the workdir's checkpoints cannot be read or belong to other seeds.
        ConfigError: the batch does not split over the devices, or the checkpoint is past `train.steps`.
    """
    t_start = time.perf_counter()
    mesh = mesh or parallel.data_mesh()
    repl = parallel.replicated(mesh)
    program = _build(spec, train, mesh, ema_decay)
    seeds, keys, arrays = program.seeds, program.keys, program.arrays
    workdir = Path(workdir) if workdir is not None else None
    checkpointer = Checkpointer(workdir / "ckpt", keep=train.keep) if workdir else None
    metrics_file = MetricsFile(workdir / "metrics.jsonl") if workdir else None
    ckpt_meta = {**(meta or {}), "seeds": list(seeds), "train": config_lib.to_dict(train)}
    if program.hyperparams:
        ckpt_meta["hyperparams"] = _jsonable_hyperparams(program.hyperparams)
    row_members = program.members if program.hyperparams else None

    def check_guard(guard, last_saved):
        _check_guard(guard, program.metric_names, seeds, last_saved, workdir)

    try:
        state, start = _restore_or_init(program, checkpointer, repl, train, workdir)
        # Rows after the restored step are recomputed bit for bit; drop them so the file matches an unbroken run.
        history = History(metrics_file.keep_until(start) if metrics_file else [])
        guard = program.guard
        t_compile = time.perf_counter()
        compiled = evaluate = None
        if start < train.steps:  # a finished run (re-reported) compiles nothing
            compiled = (jax.jit(program.step, donate_argnums=(0, 1), out_shardings=(repl, repl, repl))
                        .lower(state, guard, arrays, keys["data"], keys["train"]).compile())
            if spec.evals:
                evaluate = jax.jit(program.evaluate).lower(state.params, keys["eval"]).compile()
        compile_s = time.perf_counter() - t_compile

        bar = Progress(train.steps, start, label, enabled=progress)
        last_saved = start if start > 0 else None
        step = start
        t_loop = time.perf_counter()
        in_flight: collections.deque = collections.deque()  # a non-donated output of each unfinished step
        try:
            with deferred_interrupts() as stop:
                while step < train.steps:
                    state, guard, metrics = compiled(state, guard, arrays, keys["data"], keys["train"])
                    step += 1
                    in_flight.append(metrics["loss"])
                    if len(in_flight) > MAX_STEPS_IN_FLIGHT:
                        jax.block_until_ready(in_flight.popleft())
                    log_now = _due(step, train.log_every, train.steps)
                    eval_now = evaluate is not None and _due(step, train.eval_every, train.steps)
                    ckpt_now = checkpointer is not None and _due(step, train.ckpt_every, train.steps)
                    if log_now or eval_now or ckpt_now:
                        check_guard(guard, last_saved)
                    if log_now or eval_now:
                        if eval_now:
                            metrics = {**metrics, **evaluate(state.params, keys["eval"])}
                        rows = rows_from_metrics(step, seeds, metrics, program.stacked, row_members)
                        history.rows.extend(rows)
                        if metrics_file:
                            metrics_file.append(rows)
                        bar.update(step, float(np.mean([r["loss"] for r in rows])), force=log_now)
                    elif bar.enabled and time.perf_counter() - bar.t_last_print > 1.0:
                        jax.block_until_ready(metrics["loss"])  # honest steps/s: wait for dispatched work
                        bar.update(step)
                    if ckpt_now:
                        checkpointer.save(step, state, ckpt_meta)
                        last_saved = step
                    if stop.requested:  # after this step's rows, so a resumed run misses none
                        raise KeyboardInterrupt(stop.signal_name)
        except KeyboardInterrupt:
            _save_on_interrupt(checkpointer, state, guard, last_saved, ckpt_meta, check_guard)
            raise
        finally:
            bar.close(step)
        jax.block_until_ready(state)
        loop_s = time.perf_counter() - t_loop
    finally:
        if checkpointer is not None:
            checkpointer.close()

    timing = {
        "compile_s": compile_s,
        "steps_per_s": (train.steps - start) / loop_s if loop_s > 0 and train.steps > start else 0.0,
        "wall_s": time.perf_counter() - t_start,
        "start_step": float(start),
    }
    return FitResult(state=state, history=history, spec=spec, seeds=seeds, workdir=workdir, timing=timing,
                     members=program.members, hyperparams=program.hyperparams)


def _save_on_interrupt(checkpointer, state, guard, last_saved, ckpt_meta, check_guard) -> None:
    """Checkpoint the state reached when Ctrl-C or SIGTERM arrived, so the same command resumes from there.

    Normally the loop raises after a completed step (`deferred_interrupts`). An interrupt from elsewhere (a second
    Ctrl-C, a handler outside the main thread) can land before a step's results are assigned, when `state`
    still names the donated, deleted input: then the last regular checkpoint stands. The step number is read
    from the state itself, never from the loop counter, so the checkpoint is consistent either way.
    """
    if checkpointer is None or any(x.is_deleted() for x in jax.tree.leaves(state)):
        return
    step = _step_of(state)
    if step != last_saved:
        check_guard(guard, last_saved)  # never checkpoint a non-finite state
        checkpointer.save(step, state, ckpt_meta)


def _check_guard(guard, metric_names, seeds, last_saved, workdir) -> None:
    """Raise `NonFiniteError` if any run produced a non-finite metric (one small device-to-host copy)."""
    host = jax.device_get(guard)
    first = np.atleast_1d(host["first_bad_step"])
    if (first < 0).all():
        return
    masks = np.asarray(host["bad_metrics"]).reshape(len(first), -1)
    parts = []
    for i in np.flatnonzero(first >= 0):
        names = [n for n, bad in zip(metric_names, masks[i]) if bad]
        parts.append(f"seed {seeds[i]}: step {int(first[i])} ({', '.join(names)})")
    kept = (f"the last good checkpoint is step {last_saved} in {workdir}/ckpt" if last_saved is not None
            else "no checkpoint was saved")
    raise NonFiniteError(f"non-finite metrics at {'; '.join(parts)}; stopped, {kept}")
