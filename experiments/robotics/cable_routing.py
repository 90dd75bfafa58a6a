"""`robotics/cable_routing`: hierarchical imitation with recovery vs flat baselines in a 2-D multi-clip routing world
(Luo, Xu, Geng, Feng, Fang, Tan, Schaal & Levine, *Multi-Stage Cable Routing through Hierarchical Imitation
Learning*, T-RO 2024, arXiv 2307.08927; issue 19; notes sec. 4(d)).

Setting (fixed before any run; `gvlab.envs.routing`, `gvlab.imitation`): 3 clips (slot width 0.05, actuation noise
0.01, insertion slip 0.02), in-distribution layouts y ~ U(-0.3, 0.3), angle ~ U(-30, 30) deg, novel layouts y ~
U(-0.6, 0.6), angle up to 50 deg. The scripted expert (proportional routing, sequencing from the true state:
route, perturb after a failed attempt, next, done) gives 250 demonstration episodes of 12 primitives x 8 steps.
From them: the routing primitive (tanh-Gaussian BC, MLP 256-256, on the ROUTE steps), the sequencer (official
`PrimitiveSelectionPolicy`: features and the Padded history of the last 6 primitives, embeddings 4, -> logits over
route/perturb/next/done, CE) and baseline B2 (flat tanh-Gaussian BC on every step of the whole task), all in one
fit (HIL and B2 are members with their own data, seeds are runs); baseline B1 is the fixed open-loop sequence
route-next-route-next-route-done with the learned route. AdamW, cosine to 0 without warmup, weight decay on kernels
only (official: routing lr 1e-3, wd 3e-3, batch 256; high level lr 3e-4, wd 1e-2, batch 128). DAgger: each learner
(seed) runs 20 novel-layout episodes, the expert relabels every visited decision and ROUTE step, and both levels are
fine-tuned (warm start, lr / 10 as the official fine-tune, 1000 steps, warmup 50) on demonstrations + relabels.
Evaluation: 300 fresh episodes per setting and seed, deterministic actions tanh(mu), greedy primitive choice; every
policy (and the expert) is a run of one compiled evaluator.

Claims (issue 19, fixed before any run; seed means over 3 seeds): success(HIL, in distribution) >= 0.8;
success(HIL) - max(B1, B2) >= 0.2; |success(B1) - p^3| <= 0.1 with p the learned route's single-clip success
(measured per stage on the same layouts, another key); success(HIL after DAgger) - success(HIL), novel, >= 0.1.
Ceiling beside each: the scripted expert (full task, per stage, novel).

Command:  gvlab reproduce robotics/cable_routing --profile quick
Shows:    success per policy and seed, per-stage p, the DAgger gain; figures: success vs primitives allowed (the
          compounding curve) in distribution and on novel layouts. Measured values: report.json, not here.
Runtime:  quick (3000 steps) ~9 min, full (20000 steps, the official routing BC length) ~35 min, both measured on 2
          CPU cores shared with other jobs (load ~14); the fit of both levels and B2 dominates.
"""

from __future__ import annotations

import dataclasses
import functools
import jax
import numpy as np
import optax

from gvlab import Claim, Spec, TrainConfig, experiment
from gvlab.envs import EnvConfig
from gvlab.imitation import data as demo_data
from gvlab.imitation import evaluation, policies
from gvlab.imitation.expert import NUM_PRIMITIVES
from gvlab.imitation.rollout import Horizon
from gvlab.nn.policy import GaussianPolicy, Sequencer
from gvlab.train import data_mesh


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """`robotics/cable_routing` settings.

    Attributes:
        env, horizon: the routing world and the episode's primitives (decisions) x steps per primitive.
        demo_episodes, relabel_episodes, eval_episodes: expert demonstrations, DAgger episodes per learner, and
            evaluation episodes per setting.
        hidden, sequencer_hidden: the networks (official 256-256 and 256).
        route_weight_decay, sequencer_weight_decay: AdamW (official 3e-3 and 1e-2); kernels only.
        sequencer_lr, sequencer_batch: official 3e-4 and 128.
        finetune_steps, finetune_lr_ratio, finetune_warmup, finetune_schedule_steps: DAgger fine-tune (official
            `finetune_highlevel.sh`: 1000 steps, lr 3e-5 = 3e-4 / 10, warmup 50, cosine length = the flags' default
            total_steps 10000).
        train: the routing primitive's and the flat baseline's fits (steps, batch, lr, seeds); the sequencer fit
            uses `train.steps` and `num_seeds` with its own lr and batch.
    """

    env: EnvConfig = EnvConfig()
    horizon: Horizon = Horizon()
    demo_episodes: int = 250
    relabel_episodes: int = 20
    eval_episodes: int = 300
    hidden: tuple[int, ...] = (256, 256)
    sequencer_hidden: int = 256
    route_weight_decay: float = 3e-3
    sequencer_weight_decay: float = 1e-2
    sequencer_lr: float = 3e-4
    sequencer_batch: int = 128
    finetune_steps: int = 1000
    finetune_lr_ratio: float = 0.1
    finetune_warmup: int = 50
    finetune_schedule_steps: int = 10000
    train: TrainConfig = TrainConfig(steps=20000, batch_size=256, lr=1e-3, num_seeds=3, log_every=500)


def adamw(lr: float, weight_decay: float, steps: int, warmup: int):
    """AdamW, warmup then cosine, no decay on biases (official `train_utils.py`, notes sec. 4(c))."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1))
    return optax.adamw(schedule, weight_decay=weight_decay, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))


def models(cfg: Config) -> evaluation.Models:
    return evaluation.Models(route=GaussianPolicy(action_dim=2, hidden=cfg.hidden),
                             sequencer=Sequencer(NUM_PRIMITIVES, cfg.horizon.history, hidden=cfg.sequencer_hidden),
                             horizon=cfg.horizon, config=cfg.env)


def fit_levels(cfg: Config, run, nets, route_sets, decision_sets, *, name, init=None, finetune=False):
    """Both levels (`policies.make_hierarchical`), one member per dataset pair, each part with its own AdamW."""
    steps = cfg.finetune_steps if finetune else cfg.train.steps
    ratio = cfg.finetune_lr_ratio if finetune else 1.0
    # official: no warmup and a cosine over the run; the fine-tune warms up 50 steps and keeps the flags' default
    # cosine length (10000 steps), so its 1000 steps run at nearly the peak rate
    warmup, decay = (cfg.finetune_warmup, cfg.finetune_schedule_steps) if finetune else (0, steps)
    tx = optax.multi_transform(
        {"route": adamw(cfg.train.lr * ratio, cfg.route_weight_decay, decay, warmup),
         "sequencer": adamw(cfg.sequencer_lr * ratio, cfg.sequencer_weight_decay, decay, warmup)},
        lambda params: {part: jax.tree.map(functools.partial(lambda label, _: label, part), tree)
                        for part, tree in params.items()})
    source = policies.hierarchical_source(demo_data.stack_members(route_sets), demo_data.stack_members(decision_sets),
                                          cfg.train.batch_size, cfg.sequencer_batch, per_member=True)
    train = dataclasses.replace(cfg.train, steps=steps, num_seeds=1 if finetune else cfg.train.num_seeds)
    return run.fit(Spec(policies.make_hierarchical(nets.route, nets.sequencer), tx, source), train, name=name,
                   init=init, mesh=data_mesh(1))


def runs_table(hil, flat) -> tuple[dict, list[str]]:
    """Evaluation runs [HIL x S, B1 x S, B2 x S, expert] from the HIL and flat parameters (leaves [S, ...]): one
    program for every policy (`gvlab.imitation.evaluation`); B1 uses the HIL routing primitive."""
    s = jax.tree.leaves(hil)[0].shape[0]
    params = jax.tree.map(lambda a, b: np.concatenate([a, a, b, a[:1]]), hil, flat)
    labels = ["hierarchical"] * s + ["open_loop"] * s + ["flat"] * s + ["expert"]
    return {**params, "variant": np.asarray([evaluation.VARIANTS.index(v) for v in labels], np.int32)}, labels


def split_runs(scores: dict, labels: list[str]) -> dict:
    """{variant: {metric: [runs of that variant, ...]}}."""
    labels = np.asarray(labels)
    return {v: {k: np.asarray(x)[labels == v] for k, x in scores.items()} for v in evaluation.VARIANTS}


@experiment(
    "robotics/cable_routing",
    config=Config(),
    smoke={"demo_episodes": 6, "relabel_episodes": 2, "eval_episodes": 4, "hidden": (16,), "sequencer_hidden": 16,
           "horizon.decisions": 6, "horizon.steps_per_primitive": 4, "finetune_steps": 2, "finetune_warmup": 1,
           "train.steps": 3, "train.batch_size": 8, "train.num_seeds": 1, "train.log_every": 1,
           "sequencer_batch": 8},
    quick={"train.steps": 3000},
    claims=[
        Claim(statement="Hierarchical imitation (learned sequencer + learned routing primitive) completes the "
                        "3-clip task in distribution: success >= 0.8",
              metric="hierarchical/id_success", op=">=", threshold=0.8,
              source="issue 19; notes sec. 4(d) C1; Luo et al. 2024, abstract and Sec. V"),
        Claim(statement="... and beats the better flat baseline (B1 open loop, B2 flat BC) by >= 0.2",
              metric="hil_minus_best_flat", op=">=", threshold=0.2, source="issue 19; notes sec. 4(d) C1"),
        Claim(statement="Compounding failure: the open-loop sequence's success matches p^3 within 0.1 "
                        "(p = the routing primitive's single-clip success, mean over stages)",
              metric="compounding_gap", op="<=", threshold=0.1, source="issue 19; notes sec. 4(d) C2"),
        Claim(statement="20 DAgger-relabelled novel-layout episodes raise novel-layout success by >= 0.1",
              metric="dagger_gain", op=">=", threshold=0.1,
              source="issue 19; notes sec. 4(d) C3; Luo et al. 2024 (interactive fine-tuning)"),
    ],
)
def cable_routing(cfg: Config, run) -> dict:
    """HIL vs open-loop and flat BC; the compounding prediction; DAgger on novel layouts."""
    nets, s = models(cfg), cfg.train.num_seeds
    layouts = {name: evaluation.layouts(run.key(f"layouts/{name}"), num, novel, cfg.env)
               for name, num, novel in (("demo", cfg.demo_episodes, False), ("id", cfg.eval_episodes, False),
                                        ("novel", cfg.eval_episodes, True), ("relabel", cfg.demo_episodes, True))}
    # Demonstrations: the expert's runs of the traces program (the same program later records the DAgger episodes).
    example = {"route": {"obs": np.zeros((1, cfg.env.obs_dim), np.float32), "action": np.zeros((1, 2), np.float32)},
               "decision": {"obs": np.zeros((1, cfg.env.obs_dim), np.float32),
                            "ids": np.zeros((1, cfg.horizon.history), np.int32),
                            "mask": np.zeros((1, cfg.horizon.history), bool), "label": np.zeros((1,), np.int32)}}
    blank = policies.make_hierarchical(nets.route, nets.sequencer).init(jax.random.key(0), example)
    blank = jax.tree.map(lambda x: np.broadcast_to(x, (s,) + x.shape), blank)
    expert_runs = {**blank, "variant": np.full((s,), evaluation.EXPERT, np.int32)}
    visited = run.evaluate("demonstrations", evaluation.evaluator(evaluation.traces, nets), expert_runs,
                           {"layouts": layouts["demo"]}, key=run.key("demos"), extra=repr(nets))
    demos = evaluation.trace_from_dict({k: v[0] for k, v in visited.items()})
    route_rows, decision_rows = demo_data.route_rows(demos), demo_data.decision_rows(demos)
    flat_rows = demo_data.flat_rows(demos)
    run.log(f"demonstrations: success {np.mean(demos.success):.3f}, {len(route_rows['obs'])} routing steps, "
            f"{len(decision_rows['obs'])} decisions, {len(flat_rows['obs'])} steps in all")
    # Member 0: HIL (routing primitive on ROUTE steps); member 1: B2 (flat BC on every step; its sequencer unused).
    bc = fit_levels(cfg, run, nets, [route_rows, flat_rows], [decision_rows, decision_rows], name="bc")

    success = evaluation.evaluator(evaluation.success, nets)
    results, curves = {}, {}
    hil, flat = (jax.tree.map(functools.partial(lambda runs, x: np.asarray(x)[runs], bc.runs_of(m)), bc.params)
                 for m in (0, 1))
    table, labels = runs_table(hil, flat)
    for setting in ("id", "novel"):
        scores = split_runs(run.evaluate(f"success/{setting}", success, table, {"layouts": layouts[setting]},
                                         key=run.key(f"eval/{setting}"), extra=repr(nets)), labels)
        for variant, out in scores.items():
            results[f"{variant}/{setting}_success"] = out["success"]
            results[f"{variant}/{setting}_stage_success"] = out["stage_success"]
            results[f"{variant}/{setting}_attempts"] = out["attempts"]
            curves[setting, variant] = out["success_curve"]
    p = results["open_loop/id_stage_success"].mean(-1)
    results["open_loop/p"], results["open_loop/p_cubed"] = p, p ** 3
    results["open_loop/product_of_stages"] = results["open_loop/id_stage_success"].prod(-1)
    results["compounding_gap"] = np.abs(results["open_loop/id_success"] - p ** 3)
    results["expert/p_cubed"] = results["expert/id_stage_success"].mean(-1) ** 3
    best_flat = np.maximum(results["open_loop/id_success"], results["flat/id_success"])
    results["hil_minus_best_flat"] = results["hierarchical/id_success"] - best_flat

    # DAgger: each learner's own novel-layout episodes, relabelled by the expert, aggregated with the demonstrations.
    hil_runs = {**hil, "variant": np.full((s,), evaluation.HIERARCHICAL, np.int32)}
    visited = run.evaluate("relabel", evaluation.evaluator(evaluation.traces, nets), hil_runs,
                           {"layouts": layouts["relabel"]}, key=run.key("relabel"), extra=repr(nets))
    keep = cfg.relabel_episodes  # the traces program runs demo_episodes layouts; DAgger uses the first ones
    per_run = [evaluation.trace_from_dict({k: v[r, :keep] for k, v in visited.items()}) for r in range(s)]
    results["dagger/relabel_episode_success"] = np.array([np.mean(t.success) for t in per_run])
    tuned = fit_levels(cfg, run, nets, [demo_data.concatenate(route_rows, demo_data.route_rows(t)) for t in per_run],
                       [demo_data.concatenate(decision_rows, demo_data.decision_rows(t)) for t in per_run],
                       name="dagger", init=hil, finetune=True)  # member r: learner r (one seed each)
    table, labels = runs_table(jax.tree.map(np.asarray, tuned.params), flat)
    for setting in ("id", "novel"):
        scores = split_runs(run.evaluate(f"success/{setting}_dagger", success, table, {"layouts": layouts[setting]},
                                         key=run.key(f"eval/{setting}"), extra=repr(nets)), labels)
        results[f"dagger/{setting}_success"] = scores["hierarchical"]["success"]
        results[f"dagger/{setting}_stage_success"] = scores["hierarchical"]["stage_success"]
        curves[setting, "dagger"] = scores["hierarchical"]["success_curve"]
    results["dagger_gain"] = results["dagger/novel_success"] - results["hierarchical/novel_success"]
    for name, value in sorted(results.items()):
        run.log(f"{name}: {np.round(np.asarray(value), 3).tolist()}")
    _figures(run, cfg, curves)
    return results


LABELS = {"expert": "scripted expert (ceiling)", "hierarchical": "HIL", "open_loop": "B1 open loop",
          "flat": "B2 flat BC", "dagger": "HIL + DAgger (20 novel episodes)"}


def _figures(run, cfg: Config, curves) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    steps = np.arange(1, cfg.horizon.decisions + 1)
    for ax, setting in zip(axes, ("id", "novel")):
        for i, variant in enumerate(LABELS):
            curve = np.asarray(curves[setting, variant]).reshape(-1, cfg.horizon.decisions)
            ax.errorbar(steps, curve.mean(0), yerr=curve.std(0), marker="o", ms=3, capsize=2, color=f"C{i}",
                        label=LABELS[variant])
        ax.axvline(2 * cfg.env.num_clips, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="primitives allowed", ylabel="full-task success", ylim=(0, 1.02),
               title="in distribution" if setting == "id" else "novel layouts")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    run.figure("success_vs_primitives", fig)
