"""`fit`: the one train loop.

It compiles the step once (ahead of time, so the compile time is measured and a recompile is impossible), then
drives it with a progress line, `metrics.jsonl` rows, evaluations with fixed keys, checkpoints every
`train.ckpt_every` steps and at the end, automatic resume from the newest readable checkpoint, and a NaN guard
that stops with the step and the metric that went non-finite while the last good checkpoint stays on disk.

A fit trains R = M x S runs in one compiled program (`gvlab.train.members`): M members that differ in optimiser
hyperparameters (`Spec.hyperparams`), model hyperparameters (`Spec.args`, handed to the loss) and/or their own
dataset (`DataSource.per_member`), times S = `train.num_seeds` seeds, member-major (run r = m S + s). Each run
equals a single fit with its seed and values; `train.members` chooses whether the runs are vmapped or looped over
inside the program. Results always carry the run axis (`FitResult.params` leaves are [R, ...]).

Initialisation order (big_vision's): this workdir's newest checkpoint; else `fit(init=...)` (a `FitResult`, a
parameter pytree or another workdir, `gvlab.train.warm`); else `method.init`. Batches are split over all devices of
the mesh (`jit` + `NamedSharding`); state is replicated.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gvlab import config as config_lib
from gvlab.config import TrainConfig
from gvlab.errors import CheckpointError, ConfigError, Interrupted, NonFiniteError
from gvlab.rng import run_keys
from gvlab import signals
from gvlab.train import members as members_lib
from gvlab.train import parallel
from gvlab.train import warm
from gvlab.train.ckpt import Checkpointer
from gvlab.train.interrupt import deferred_interrupts
from gvlab.train.metrics import History, MetricsFile, Progress, init_guard, rows_from_metrics, update_guard
from gvlab.train.optimizers import set_hyperparams
from gvlab.train.state import TrainState
from gvlab.train.step import init_state, make_train_step
from gvlab.types import Spec


@dataclasses.dataclass
class FitResult:
    """What `fit` returns. Every leaf of `state` carries the run axis [R, ...], whatever R is.

    Attributes:
        state: the final `TrainState`, leaves [R, ...].
        history: every logged row, as written to `metrics.jsonl` (rows name their seed, and member when the
            members differ).
        spec: the spec that was fitted (its `method.sample` turns `params_of(r)` into samples).
        seeds: the seed of each run.
        workdir: where checkpoints and metrics live, or None for an in-memory fit.
        timing: `compile_s`, `steps_per_s`, `wall_s`, `start_step` (> 0 when resumed).
        members: the member index of each run (all 0 when the members do not differ).
        hyperparams: `{name: value of each run}` from `spec.hyperparams` (empty without it).
        args: `spec.args` laid out over the runs, leaves [R, ...] (None without it).
        origin: where the state started: "checkpoint" (resumed), "warm start" (`init=`) or "scratch".
    """

    state: TrainState
    history: History
    spec: Spec
    seeds: tuple[int, ...]
    workdir: Path | None
    timing: dict[str, float]
    members: tuple[int, ...] = ()
    hyperparams: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    args: Any = None
    origin: str = "scratch"  # where the state started: "checkpoint", "warm start" or "scratch"

    @property
    def num_runs(self) -> int:
        return len(self.seeds)

    @property
    def params(self) -> Any:
        """Parameters of every run, leaves [R, ...]: ready to `vmap` (e.g. through `gvlab.evals`)."""
        return self.state.params

    @property
    def stacked_params(self) -> Any:
        """Deprecated alias of `params` (which now always carries the run axis)."""
        return self.state.params

    def params_of(self, run: int) -> Any:
        """Parameters of run `run` (an index into `seeds`), without the run axis."""
        return jax.tree.map(lambda x: x[run], self.state.params)

    def runs_of(self, member: int) -> list[int]:
        """The run indices of member `member` (its S seeds), in seed order."""
        return [r for r, m in enumerate(self.members) if m == member]

    def member_params(self, member: int) -> Any:
        """Parameters of member `member`'s runs, leaves [S, ...] (its seeds)."""
        index = np.asarray(self.runs_of(member))
        return jax.tree.map(lambda x: x[index], self.state.params)


# At most this many dispatched steps may be unfinished. XLA:CPU (jaxlib 0.10.2) deadlocks when a multi-device step
# with a collective is queued ~32 deep (its per-device in-flight limit): some devices' launches wait for a free
# slot while the others sit in the all-reduce, and after 40 s the rendezvous aborts the process. The cap applies on
# every backend, since it is harmless on GPU and TPU: a step's host-side dispatch takes microseconds, so eight
# queued steps keep an accelerator's stream full (the cap costs nothing measurable on the CPU, benchmarks/bench_fit.py;
# on a GPU, benchmarks/device_check.sh measures the same fit).
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

    members: members_lib.Members
    stacked: bool  # a leading run axis on state, keys, guard and metrics (R > 1)
    keys: dict[str, jax.Array]  # init/data/train/eval, replicated (stacked over runs)
    arrays: Any  # the data source's arrays, replicated (laid out over runs when per member)
    init: Any  # (init_key, data_key, arrays, hyperparams, args, warm_params) -> TrainState
    run_inputs: dict[str, Any]  # the per-run hyperparameters and args given to init
    step: Any  # (state, guard, arrays, data_key, train_key) -> (state, guard, metrics)
    evaluate: Any  # (params, eval_key) -> metrics
    abstract_state: Any
    abstract_params: Any  # of one run
    metric_names: list[str]
    guard: dict[str, jax.Array]
    batch_size: int | None  # the data source's examples per step (None if its leaves disagree)

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.members.seeds


def _build(spec: Spec, train: TrainConfig, mesh, ema_decay: float) -> _Program:
    runs = members_lib.resolve(spec, train.seed, train.num_seeds)
    seeds = runs.seeds
    stacked = runs.num_runs > 1
    repl = parallel.replicated(mesh)
    # Jitted inside so that JAX traces each function once: the shape queries below (metric names, the checkpoint
    # skeleton) and the compiled program, vmapped or mapped over runs, reuse the same cached jaxpr.
    step_fn = jax.jit(make_train_step(spec.method, spec.optimizer, ema_decay))
    zero = jnp.zeros((), jnp.int32)
    # One root key per seed, split into named keys; run i of a stacked fit gets exactly the keys of seed i.
    keys = jax.vmap(run_keys)(jnp.asarray(seeds, jnp.uint32)) if stacked else run_keys(seeds[0])

    def init_one(init_key, data_key, arrays, hyperparams, args, warm_params):
        batch = spec.data.batch(arrays, data_key, zero)
        state = init_state(spec.method, spec.optimizer, init_key, batch, ema_decay, params=warm_params, args=args)
        if hyperparams:  # the member's values live in the optimiser state, so checkpoints carry them
            state = state.replace(opt_state=set_hyperparams(state.opt_state, **hyperparams))
        return state

    init_one = jax.jit(init_one)

    def first(tree):
        return jax.tree.map(lambda x: x[0], tree)

    # Shapes first: the batch size check, the metric names and the checkpoint skeleton need no compute.
    one_keys = run_keys(0)
    data_arrays = members_lib.run_arrays(spec.data.arrays, runs) if runs.data_per_member else spec.data.arrays
    one_arrays = first(data_arrays) if runs.data_per_member else data_arrays
    one_batch = jax.eval_shape(spec.data.batch, one_arrays, one_keys["data"], zero)
    sizes = {x.shape[0] for x in jax.tree.leaves(one_batch) if x.ndim}
    for size in sizes:
        parallel.check_divisible(size, mesh)
    batch_size = next(iter(sizes)) if len(sizes) == 1 else None
    if batch_size is not None and batch_size != train.batch_size:
        warnings.warn(f"train.batch_size={train.batch_size} is not the batch size of spec.data ({batch_size}): fit "
                      "takes its batches from spec.data, and train.batch_size only matters to code that builds the "
                      "data source from it", UserWarning, stacklevel=3)
    one_hyperparams = {name: v[0] for name, v in runs.hyperparams.items()}
    one_args = first(runs.args) if runs.args is not None else None

    def placed(tree):  # abstract values typed and placed as the compiled program's, so that its trace is reused
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl,
                                                           weak_type=getattr(x, "weak_type", False)), tree)

    one_state = jax.eval_shape(init_one, *placed((one_keys["init"], one_keys["data"], one_arrays, one_hyperparams,
                                                  one_args)), None)
    metric_names = sorted(jax.eval_shape(step_fn, *placed((one_state, one_batch, one_keys["train"])))[1])

    def step_one(state, guard, arrays, data_key, train_key):
        batch = parallel.constrain_batch(spec.data.batch(arrays, data_key, state.step), mesh)
        new_state, metrics = step_fn(state, batch, train_key)
        # The guard names the step as progress and metrics.jsonl do: the row of the step that produced the value.
        return new_state, update_guard(guard, metrics, metric_names, state.step + 1), metrics

    evaluate_one = _make_evaluate(spec)
    guard = init_guard(len(metric_names))
    data_axis = 0 if runs.data_per_member else None
    if stacked:
        over = functools.partial(members_lib.over_runs, mode=train.members)
        init_fn = over(init_one, (0, 0, data_axis, 0, 0, 0))
        step = over(step_one, (0, 0, data_axis, 0, 0))
        evaluate = over(evaluate_one, (0, 0))
        guard = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(seeds),) + x.shape), guard)
        run_inputs = {"hyperparams": {name: jnp.asarray(v) for name, v in runs.hyperparams.items()},
                      "args": runs.args}
    else:
        init_fn, step, evaluate = init_one, step_one, evaluate_one
        run_inputs = {"hyperparams": one_hyperparams, "args": one_args}
        data_arrays = one_arrays
    keys, arrays = parallel.put(keys, repl), parallel.put(data_arrays, repl)
    run_inputs = parallel.put(run_inputs, repl)
    abstract_state = jax.eval_shape(init_fn, keys["init"], keys["data"], arrays, run_inputs["hyperparams"],
                                    run_inputs["args"], None)
    return _Program(members=runs, stacked=stacked, keys=keys, arrays=arrays, init=init_fn, run_inputs=run_inputs,
                    step=step, evaluate=evaluate, abstract_state=abstract_state,
                    abstract_params=one_state.params, metric_names=metric_names, guard=parallel.put(guard, repl),
                    batch_size=batch_size)


def _step_of(state: TrainState) -> int:
    return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


def _restore_or_init(program: _Program, checkpointer: Checkpointer | None, repl, train: TrainConfig,
                     workdir: Path | None, init: Any, identity: dict) -> tuple[TrainState, int, str]:
    """The starting state and step, and where they came from: "checkpoint", "warm start" or "scratch"."""
    if checkpointer is not None:
        restored = checkpointer.restore_latest(parallel.abstract_with_sharding(program.abstract_state, repl))
        if restored is not None:
            state, saved_meta = restored
            _check_meta(saved_meta, identity, workdir)
            start = _step_of(state)
            if start > train.steps:
                raise ConfigError(f"{workdir} holds a checkpoint at step {start}, past train.steps={train.steps}")
            return state, start, "checkpoint"
    warm_params = None
    if init is not None:
        warm_params = warm.run_params(init, program.abstract_params, program.members.num_runs)
        if not program.stacked:
            warm_params = jax.tree.map(lambda x: x[0], warm_params)
        warm_params = parallel.put(warm_params, repl)
    keys, inputs = program.keys, program.run_inputs
    state = jax.jit(program.init, out_shardings=repl)(keys["init"], keys["data"], program.arrays,
                                                       inputs["hyperparams"], inputs["args"], warm_params)
    return state, 0, "warm start" if init is not None else "scratch"


def _jsonable_hyperparams(hyperparams: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {name: [float(x) for x in values] for name, values in hyperparams.items()}


def _identity_meta(program: _Program) -> dict:
    """What a checkpoint must agree on to be resumed by this fit (written into every checkpoint's meta)."""
    runs = program.members
    meta: dict[str, Any] = {"seeds": list(runs.seeds)}
    if runs.hyperparams:
        meta["hyperparams"] = _jsonable_hyperparams(runs.hyperparams)
    if runs.args is not None:
        meta["args_crc32"] = members_lib.fingerprint(runs.args)
    return meta


def _with_optimizer(spec: Spec, train: TrainConfig) -> Spec:
    """`Spec.optimizer=None` means Adam at `train.lr`: then the config is the one source of the learning rate.

    A spec with its own optimiser decides its learning rate; where that optimiser exposes it as an injected
    hyperparameter (`optax.inject_hyperparams`) and it disagrees with `train.lr`, say so, since a user who set
    `train.lr` would otherwise see no effect.
    """
    if spec.optimizer is None:
        return spec._replace(optimizer=optax.adam(train.lr))
    if "learning_rate" not in spec.hyperparams and isinstance(spec.optimizer, optax.GradientTransformation):
        try:  # an injected learning rate sits in the top-level state's hyperparams
            lr = spec.optimizer.init({"probe": jnp.zeros(())}).hyperparams["learning_rate"]
            lr = float(lr)
        except Exception:  # not injected, a schedule, or an optimiser that needs more: nothing to compare
            return spec
        if not np.isclose(lr, train.lr):
            warnings.warn(f"train.lr={train.lr:g} is not the learning rate of spec.optimizer ({lr:g}): fit trains "
                          "with the optimiser's; leave spec.optimizer=None to train with Adam at train.lr",
                          UserWarning, stacklevel=3)
    return spec


def _optimizer_probe(tx: Any, abstract_params: Any) -> str | None:
    """A fingerprint of what the optimiser does: its first update for a fixed probe gradient, summarised per leaf to
    4 significant digits (so that another device's rounding does not change it, while another learning rate or
    optimiser does). None for optimisers that are not plain optax transformations (custom steps own their update).

    The probe runs eagerly on a miniature of the parameters: the same tree and dtypes and ranks, every dimension
    cut to at most 2. Compiling the update for the real shapes cost ~1 s per fit (most of a small fit's start-up);
    the miniature's few eager ops are compiled once per process and shared by every later fit.
    """
    if not isinstance(tx, optax.GradientTransformation):
        return None
    params = jax.tree.map(lambda a: jnp.full(tuple(min(d, 2) for d in a.shape), 0.5, a.dtype), abstract_params)
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 1.0, p.size, dtype=p.dtype).reshape(p.shape), params)
    try:
        updates, _ = tx.update(grads, tx.init(params), params)
        leaves = jax.device_get(jax.tree.leaves(updates))
    except Exception:  # an optimiser that needs extra arguments: not fingerprinted
        return None
    text = ";".join(f"{np.mean(np.abs(u)) if u.size else 0.0:.4g},{np.max(np.abs(u)) if u.size else 0.0:.4g}"
                    for u in leaves)
    return f"{zlib.crc32(text.encode()):08x}"


def _check_meta(saved: dict, expected: dict, workdir) -> None:
    """Refuse to resume a checkpoint written by a run whose numbers this fit would not continue."""
    names = {"seeds": "seeds (train.seed, train.num_seeds)", "hyperparams": "hyperparameters",
             "args_crc32": "model arguments (Spec.args)"}
    differing = []
    for key, label in names.items():
        if (saved.get(key) or None) != (expected.get(key) or None):
            differing.append(f"{label}: checkpoint {saved.get(key)}, this fit {expected.get(key)}")
    for key, label in {"optimizer_fingerprint": "optimiser (its updates for a probe gradient: another optimiser or "
                                          "learning rate)", "batch_size": "train.batch_size"}.items():
        if saved.get(key) is not None and expected.get(key) is not None and saved[key] != expected[key]:
            differing.append(f"{label}: checkpoint {saved[key]}, this fit {expected[key]}")
    if differing:
        raise CheckpointError(f"checkpoints in {workdir} were written by a different run ({'; '.join(differing)}); "
                              "use another workdir, or the settings that wrote them")


def fit(
    spec: Spec,
    train: TrainConfig,
    workdir: str | Path | None = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
    data_axis: str | None = None,
    ema_decay: float = 0.0,
    progress: bool = True,
    label: str = "fit",
    meta: dict | None = None,
    init: Any = None,
    on_start: Any = None,
) -> FitResult:
    """Train `spec` for `train.steps` steps; resume from `workdir` if it holds a checkpoint.

    Args:
        spec: method, optimiser, data source, evaluations and the per-member inputs.
        train: steps, batch size, seeds and the logging/evaluation/checkpoint intervals.
        workdir: folder for `metrics.jsonl` and `ckpt/`; None trains in memory only.
        mesh: the devices to split each batch over (default: all): any one-axis mesh, e.g. from `jax.make_mesh`
            or `gvlab.train.data_mesh`; state is replicated.
        data_axis: the batch axis of a mesh with several axes (the others must have size 1).
        ema_decay: keep an exponential moving average of the parameters when > 0.
        progress: print the progress line to stderr.
        label: name shown on the progress line.
        meta: extra JSON metadata stored with every checkpoint (experiment name, config).
        init: warm start when `workdir` holds no checkpoint: a `FitResult`, a parameter pytree (with or without
            a run axis of length 1 or R) or a workdir; the parameters are taken, optimiser state and step start
            afresh (`gvlab.train.warm`). A checkpoint in `workdir` always wins, so rerunning resumes.
        on_start: called once every input has been validated (shapes, checkpoint, warm start) and the step
            compiled, before the first step; `gvlab.run` writes config.json there, so a refused fit writes nothing.

    Raises:
        NonFiniteError: a metric became NaN or inf (the message names the first such step and metrics).
        CheckpointError: the workdir's checkpoints cannot be read or belong to other seeds, hyperparameters or
            model arguments.
        ConfigError: the batch does not split over the devices, the checkpoint is past `train.steps`, the
            per-member inputs disagree on M, or the warm start does not fit.
    """
    t_start = time.perf_counter()
    spec = _with_optimizer(spec, train)
    mesh = parallel.as_data_mesh(mesh, data_axis)
    repl = parallel.replicated(mesh)
    program = _build(spec, train, mesh, ema_decay)
    runs = program.members
    seeds, keys, arrays = program.seeds, program.keys, program.arrays
    workdir = Path(workdir) if workdir is not None else None
    checkpointer = Checkpointer(workdir / "ckpt", keep=train.keep) if workdir else None
    metrics_file = MetricsFile(workdir / "metrics.jsonl") if workdir else None
    identity = _identity_meta(program)
    if checkpointer is not None:  # what else determines the numbers, checked when resuming
        identity["optimizer_fingerprint"] = _optimizer_probe(spec.optimizer, program.abstract_params)
        identity["batch_size"] = program.batch_size
    ckpt_meta = {**(meta or {}), **identity, "train": config_lib.to_dict(train)}
    row_members = runs.members if runs.varied else None

    def check_guard(guard, last_saved):
        _check_guard(guard, program.metric_names, seeds, last_saved, workdir)

    try:
        state, start, origin = _restore_or_init(program, checkpointer, repl, train, workdir, init, identity)
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
        if on_start is not None:
            on_start()
        if start == train.steps and progress:
            print(f"[{label}] found the run complete at step {start} in {workdir}; nothing to train",
                  file=sys.stderr, flush=True)

        signals.raise_if_received()  # a Ctrl-C during start-up that a library swallowed: nothing trains
        bar = Progress(train.steps, start, label, enabled=progress and start < train.steps)
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
            saved = _save_on_interrupt(checkpointer, state, guard, last_saved, ckpt_meta, check_guard)
            raise Interrupted(saved, workdir) from None
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
    if not program.stacked:  # results always carry the run axis
        state = jax.tree.map(lambda x: x[None], state)
    return FitResult(state=state, history=history, spec=spec, seeds=seeds, workdir=workdir, timing=timing,
                     members=runs.members, hyperparams=runs.hyperparams, args=runs.args, origin=origin)


def _save_on_interrupt(checkpointer, state, guard, last_saved, ckpt_meta, check_guard) -> int | None:
    """Checkpoint the state reached when Ctrl-C or SIGTERM arrived, so the same command resumes from there.

    Normally the loop raises after a completed step (`deferred_interrupts`). An interrupt from elsewhere (a second
    Ctrl-C, a handler outside the main thread) can land before a step's results are assigned, when `state`
    still names the donated, deleted input: then the last regular checkpoint stands. The step number is read
    from the state itself, never from the loop counter, so the checkpoint is consistent either way. Returns the
    step on disk afterwards (None when nothing is).
    """
    if checkpointer is None:
        return None
    if any(x.is_deleted() for x in jax.tree.leaves(state)):
        return last_saved
    step = _step_of(state)
    if step != last_saved:
        check_guard(guard, last_saved)  # never checkpoint a non-finite state
        checkpointer.save(step, state, ckpt_meta)
    return step


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
