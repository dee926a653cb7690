"""The geometry demo: isotropic (FQL, DeFlow) vs Fisher (FiDec) refinement on 2-D action problems.

    python recipes/toy2d.py            # full run: docs/figures/toy2d.png + toy2d.json
    python recipes/toy2d.py --quick    # a smoke run (small networks, few steps)
    python recipes/toy2d.py --seed 1 --budget 0.01 --refine-steps 3000 --out-dir /tmp/toy2d

See docs/toy2d.md for the results and what they mean.

**Setting.** One constant state `s = 0` and 2-D actions in `[-1, 1]^2`. The behaviour density
`p(a)` and the value `Q(a)` are analytic (recipes/_toy2d_problems.py). A BC flow `F(z)` is fitted
to behaviour samples by flow matching; then each method refines it against the *known* Q
(`FixedCritic`, never trained), so the only thing that differs between methods is how the
displacement from the flow is measured and constrained. Every model is trained by the library's
own update and optimiser (`fidec_zoo.train.Updater` over `fidec_zoo.updates.update`, and
`OptimConfig(lr, grad_clip).make(...)`), the update `fidec_zoo.train.fit` runs. The methods:

- FQL: a one-step map `mu(z)`, loss `-Q(mu(z)) + alpha * mean((mu(z) - F(z))^2)` (fixed alpha).
- DeFlow: `a = F(z) + r(F(z))`, loss `-Q(a)/|Q| + alpha * D`, `D = mean(r^2)` (per-dimension mean
  squared displacement) and a Lagrangian that drives `D` to the budget `delta`.
- FiDec: the same, with `D = r^T G r / 2` where `G` is the trace-normalised (trace 2) Fisher
  matrix `mean_k s_k s_k^T + damping I` of scores `s_k` read off the flow's velocity field.
  With `G = I` this is exactly DeFlow's `D`, so both get the SAME `delta`. Where `G` is small
  (along the behaviour's support, if the score is a good one) the same budget allows a larger
  move; where it is large (across the support) a smaller one.
- Natural gradient (Fisher, L2): no training. The flow's action moved by the closed-form step of
  the FiDec paper's eq. 54 (`fidec_zoo.refinement.NaturalGradientPolicy`), along
  `G^{-1} grad Q` with `D = delta` exactly at every sample: FiDec's and DeFlow's metrics and
  budget, with the Lagrangian solved per action under a linearised Q instead of learned.

The exact Fisher of a density is `E[grad log p grad log p^T]`; for a thin Gaussian it is the
precision matrix, large across the support and small along it. FiDec's reference code estimates
the score as `v / (1 - t)` at re-noised fresh flow samples (`score="velocity"`,
`anchor="samples"`, one matrix per state); one literal reading of the paper's theory (its
equations were lost in extraction; docs/concepts.md) takes Tweedie's `(t v - x) / (1 - t)`
(`score="tweedie"`) at the base action itself (`anchor="action"`). All four are run.

**Measured**, per problem and method, on 4096 policy samples: mean Q; the fraction of samples
inside the behaviour support (`log p(a)` above the 1% quantile of `log p` over the behaviour's own
samples); mode occupancy (bimodal problem); and the per-dimension mean squared displacement from
the base action `F(z)` of the same noise `z` (the unit of `delta`). `metric_geometry` adds, without
training, the cost `u^T G u` (G with trace 2: 1 = isotropic, 0 = free) of a unit move ALONG the
support at behaviour samples, for the learned flow and for the exact velocity of the mixture.
"""

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy2d_problems import (  # noqa: E402
    ACTION_DIM,
    DEFINITIONS,
    OBS_DIM,
    ExactVelocity,
    Problem,
    action_grid,
    code_version,
    log_density_and_q,
    machine,
    make_problems,
    measure,
    q_landscape,
    support_geometry,
    support_threshold,
)

from fidec_zoo.agents import FlowBC, OneStepFlowQL, ResidualFlowQL  # noqa: E402
from fidec_zoo.configs import OptimConfig  # noqa: E402
from fidec_zoo.constraints import FixedPenalty, Lagrangian  # noqa: E402
from fidec_zoo.critics import FixedCritic  # noqa: E402
from fidec_zoo.dataset import Dataset  # noqa: E402
from fidec_zoo.metrics import FisherMetric, L2Metric  # noqa: E402
from fidec_zoo.policies import ActionField, FlowPolicy, OneStepPolicy, ResidualPolicy  # noqa: E402
from fidec_zoo.refinement import NaturalGradientPolicy  # noqa: E402
from fidec_zoo.samplers import EulerSampler  # noqa: E402
from fidec_zoo.train import Updater  # noqa: E402

TYPICAL_SLOPE = 0.8  # |grad Q| of the problems' tilt

#: Refinement methods: None = FQL (one-step, L2, fixed alpha); otherwise a residual metric.
METHODS: dict[str, object] = {
    "fql": None,
    "deflow": L2Metric(),
    "fidec": FisherMetric(),  # reference code: velocity score, fresh samples, t ~ U[0.85, 0.9]
    "fidec_tweedie": FisherMetric(score="tweedie"),
    "fidec_action": FisherMetric(anchor="action"),
    "fidec_tweedie_action": FisherMetric(score="tweedie", anchor="action"),  # rank one
    # the cheap estimators (no anchor rollouts), run on request: --methods fidec_data ...
    "fidec_data": FisherMetric(anchor="data"),
    "fidec_base": FisherMetric(anchor="base"),
    "fidec_data_k1": FisherMetric(anchor="data", num_samples=1),
}
#: The cheap estimators, trained only when `--methods` names them.
CHEAP = ("fidec_data", "fidec_base", "fidec_data_k1")
#: The methods a run trains unless `--methods` says otherwise: all but the cheap estimators.
DEFAULT_METHODS = tuple(m for m in METHODS if m not in CHEAP)
#: Training-free methods: the flow refined by the closed-form step (eq. 54) in this metric.
TRAINING_FREE = {"natural_fisher": FisherMetric(), "natural_l2": L2Metric()}
#: Extra metric settings examined without training (metric_geometry in the JSON).
GEOMETRY_SWEEP = {
    **{f"{name}_t{t}": FisherMetric(t=t, t_width=0.0, score=s, anchor=a)
       for name, s, a in (("fidec", "velocity", "samples"),
                          ("fidec_tweedie_action", "tweedie", "action"))
       for t in (0.5, 0.8, 0.95)},
    "fidec_tweedie_action_damping0.1": FisherMetric(score="tweedie", anchor="action",
                                                    damping=0.1),
}

@dataclass(frozen=True)
class Settings:
    hidden: tuple[int, ...] = (64, 64, 64)
    dataset_size: int = 20_000
    bc_steps: int = 5_000
    bc_batch_size: int = 256
    refine_steps: int = 1_500
    batch_size: int = 128
    lr: float = 1e-3
    grad_clip: float | None = 5.0  # global-norm clipping (the FiDec repository's setting)
    chunk: int = 500  # updates per jitted lax.scan
    eval_samples: int = 4096
    methods: tuple[str, ...] = DEFAULT_METHODS
    training_free: tuple[str, ...] = tuple(TRAINING_FREE)
    geometry_points: int = 256
    geometry_sweep: bool = True
    budget: float = 0.01  # DeFlow/FiDec target divergence delta (the navigation tasks' value)

    @property
    def fql_alpha(self) -> float:
        """FQL's stationary displacement is `grad Q / alpha`; match the budget radius
        `sqrt(2 delta)` for the problems' typical slope."""
        return TYPICAL_SLOPE / (2 * self.budget) ** 0.5

    @property
    def optimiser(self) -> OptimConfig:
        """Adam at `lr` after clipping at `grad_clip`, constant step size (the library's
        optimiser; equal configs give the same object, so one compiled update per agent)."""
        return OptimConfig(lr=self.lr, grad_clip=self.grad_clip)


QUICK = Settings(hidden=(32, 32), dataset_size=4096, bc_steps=200, bc_batch_size=64,
                 refine_steps=100, batch_size=64, chunk=100, methods=("fql", "deflow", "fidec"),
                 geometry_points=32, geometry_sweep=False)


# ---- training ----------------------------------------------------------------------------------


def behaviour_dataset(problem: Problem, size: int, key) -> Dataset:
    """Behaviour samples at the constant state; rewards/masks exist but a FixedCritic ignores
    them, and next_* repeat the samples."""
    actions = problem.behaviour.sample(key, size)
    obs = jnp.zeros((size, OBS_DIM))
    zeros, ones = jnp.zeros(size), jnp.ones(size)
    return Dataset(obs, actions, zeros, ones, obs, actions, ones)


def fit(agent, data: Dataset, *, steps: int, batch_size: int, settings: Settings, optimiser,
        key, label=""):
    """Trains `agent` for `steps` updates with the library's update (`fidec_zoo.train.Updater`:
    update `i` draws its minibatch and loss noise from `fold_in(key, i)`), `settings.chunk` per
    jitted `lax.scan`; returns the agent and its diagnostics averaged over the last chunk."""
    updater = Updater(optimiser, batch_size)
    # place: fresh copies, since the update donates the state and agents share the BC flow
    state = updater.place(updater.init(agent, key))
    diagnostics = {}
    for start in range(0, steps, settings.chunk):
        state, diagnostics = updater.run(state, data, key, min(settings.chunk, steps - start))
    info = {k: float(jnp.mean(v)) for k, v in diagnostics.items() if k != "loss"}
    print(f"  {label:22s} " + " ".join(f"{k}={v:.4g}" for k, v in sorted(info.items())),
          flush=True)
    return state["agent"], info


def pretrain_flow(data: Dataset, settings: Settings, optimiser, key) -> FlowPolicy:
    """The BC flow every refinement starts from (flow matching on the behaviour samples)."""
    init_key, train_key = jr.split(key)
    field = ActionField(OBS_DIM, ACTION_DIM, settings.hidden, key=init_key)
    # EulerSampler: the references' 10-step Euler loop, the same actions as the default
    # DiffraxSampler (tested in the library), and it compiles faster inside these small loops.
    agent = FlowBC(FlowPolicy(field, EulerSampler()))
    agent, _ = fit(agent, data, steps=settings.bc_steps, batch_size=settings.bc_batch_size,
                   settings=settings, optimiser=optimiser, key=train_key, label="bc_flow")
    return agent.flow


def make_agent(method: str, flow: FlowPolicy, problem: Problem, settings: Settings, key):
    """The library's agents, started from the pretrained flow, with the analytic Q fixed."""
    field = ActionField(OBS_DIM, ACTION_DIM, settings.hidden, time=False, key=key)
    critic = FixedCritic(problem.q)
    if METHODS[method] is None:
        return OneStepFlowQL(flow, OneStepPolicy(field), critic, L2Metric(),
                             FixedPenalty(settings.fql_alpha), normalize_q_loss=False)
    return ResidualFlowQL(ResidualPolicy(flow, field), critic, METHODS[method],
                          Lagrangian(settings.budget), normalize_q_loss=True)


# ---- measurements ------------------------------------------------------------------------------


@eqx.filter_jit
def _policy_and_base(policy, flow, key, n: int):
    """Actions of `policy` and of the base `flow` for the same noises."""
    z = jr.normal(key, (n, ACTION_DIM))
    obs = jnp.zeros((n, OBS_DIM))
    return jax.vmap(policy)(obs, z), jax.vmap(flow)(obs, z)


@eqx.filter_jit
def _along_cost(metric, flow, points, along, key):
    """`u^T G u` at each point, `G` the metric normalised to trace 2 and `u` the along-support
    unit vector: 1 for an isotropic metric, near 0 when moving along the support is free. The
    points are behaviour samples, so each is also the dataset action an `anchor="data"` metric
    reads at it."""
    obs = jnp.zeros(OBS_DIM)

    def one(a, u, k):
        g = metric.matrix(flow, obs, a, key=k, data_action=a)
        return ACTION_DIM * u @ g @ u / jnp.trace(g)

    return jax.vmap(one)(points, along, jr.split(key, points.shape[0]))


def metric_geometry(problem: Problem, flow: FlowPolicy, settings: Settings, key) -> dict:
    """How anisotropic each metric is, and in which direction, at behaviour samples (averaged
    over all of them and, for the bimodal problem, per mode)."""
    b = problem.behaviour
    points_key, cost_key = jr.split(key)
    points = b.sample(points_key, settings.geometry_points)
    along, precision_cost, mode = support_geometry(b, points)
    exact = FlowPolicy(ExactVelocity(b), EulerSampler(), obs_dim=OBS_DIM, action_dim=ACTION_DIM)

    def summary(costs, label):
        out = {label: float(costs.mean())}
        if problem.mode_names:
            out[f"{label}_by_mode"] = {n: float(costs[mode == i].mean())
                                       for i, n in enumerate(problem.mode_names)}
        return out

    out = summary(precision_cost, "behaviour_precision")
    for name in settings.methods:
        if isinstance(metric := METHODS[name], FisherMetric):
            out[name] = {**summary(_along_cost(metric, flow, points, along, cost_key),
                                   "learned_flow"),
                         **summary(_along_cost(metric, exact, points, along, cost_key),
                                   "exact_flow")}
    for name, metric in GEOMETRY_SWEEP.items() if settings.geometry_sweep else ():
        out[name] = summary(_along_cost(metric, flow, points, along, cost_key), "learned_flow")
    return out


# ---- the experiment ----------------------------------------------------------------------------


def natural_gradient(problem: Problem, flow: FlowPolicy, method: str, settings: Settings, key,
                     threshold: float) -> tuple[dict, jax.Array]:
    """The training-free refinement `method` of the flow by the known Q at the budget: its
    numbers (with the penalty of its unclipped step, the budget at every sample) and actions."""
    metric = TRAINING_FREE[method]
    policy = NaturalGradientPolicy(flow, problem.q, metric, settings.budget)
    actions, base = _policy_and_base(policy, flow, key, settings.eval_samples)
    penalty = _penalties(policy, base)
    return {**measure(problem, actions, base, threshold),
            "penalty": {"mean": float(penalty.mean()), "max": float(penalty.max())}}, actions


@eqx.filter_jit
def _penalties(policy: NaturalGradientPolicy, base):
    """The metric's penalty of each unclipped step, with the key the policy's metric uses."""
    obs = jnp.zeros(OBS_DIM)
    key = jr.key(policy.metric_seed)
    return jax.vmap(lambda a: policy.metric.penalty(policy.base, obs, a,
                                                    policy.displacement(obs, a), key=key))(base)



def run_problem(problem: Problem, settings: Settings, optimiser, key) -> tuple[dict, dict]:
    """Trains every method on one problem; returns (numbers, samples for the figure)."""
    data_key, flow_key, eval_key, thr_key, geo_key, agents_key = jr.split(key, 6)
    threshold = support_threshold(problem, thr_key)
    data = behaviour_dataset(problem, settings.dataset_size, data_key)
    flow = pretrain_flow(data, settings, optimiser, flow_key)
    behaviour = problem.behaviour.sample(eval_key, settings.eval_samples)
    flow_actions, _ = _policy_and_base(flow, flow, eval_key, settings.eval_samples)
    results = {"behaviour": measure(problem, behaviour, behaviour, threshold),
               "bc_flow": measure(problem, flow_actions, flow_actions, threshold)}
    samples = {"behaviour": behaviour}
    for method in settings.methods:
        init_key, train_key = jr.split(jr.fold_in(agents_key, list(METHODS).index(method)))
        agent = make_agent(method, flow, problem, settings, init_key)
        agent, info = fit(agent, data, steps=settings.refine_steps,
                          batch_size=settings.batch_size, settings=settings,
                          optimiser=optimiser, key=train_key, label=method)
        actions, base = _policy_and_base(agent.policy, agent.flow, eval_key,
                                         settings.eval_samples)
        results[method] = {**measure(problem, actions, base, threshold),
                           "train": {k: info[k] for k in ("penalty", "alpha", "q_policy")}}
        samples[method] = actions
    for method in settings.training_free:
        results[method], samples[method] = natural_gradient(problem, flow, method, settings,
                                                            eval_key, threshold)
    numbers = {"title": problem.title, "support_log_density_threshold": threshold,
               **q_landscape(problem, threshold), "methods": results,
               "metric_geometry": metric_geometry(problem, flow, settings, geo_key)}
    return numbers, samples


# ---- the figure --------------------------------------------------------------------------------

COLUMNS = {"behaviour": "behaviour", "fql": "FQL", "deflow": "DeFlow", "fidec": "FiDec",
           "fidec_tweedie_action": "FiDec, Tweedie + action anchor",
           "natural_fisher": "natural gradient, Fisher", "natural_l2": "natural gradient, L2"}


def plot_grid(all_samples: dict, report: dict, path: Path, shown: int = 1500) -> None:
    """Rows = problems, columns = methods: samples over Q contours and the support outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = {k: v for k, v in COLUMNS.items() if k in report["problems"][
        next(iter(all_samples))]["methods"]}
    rows, cols = len(all_samples), len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
    g = np.linspace(-1, 1, 161)
    for row, (name, (problem, samples)) in enumerate(all_samples.items()):
        numbers = report["problems"][name]
        logp, q, _ = log_density_and_q(problem.behaviour, problem.q, action_grid(g.size))
        logp, q = (np.asarray(x).reshape(g.size, g.size) for x in (logp, q))
        for col, (method, label) in enumerate(columns.items()):
            ax = axes[row, col]
            ax.contourf(g, g, q, levels=16, cmap="YlGnBu", alpha=0.75)
            ax.contour(g, g, logp, levels=[numbers["support_log_density_threshold"]],
                       colors="crimson", linewidths=1.0)
            a = np.asarray(samples[method][:shown])
            ax.scatter(a[:, 0], a[:, 1], s=1.5, c="k", alpha=0.35, linewidths=0)
            r = numbers["methods"][method]
            ax.set_title(f"{label}\nQ {r['mean_q']:.2f}  in-support "
                         f"{100 * r['support_fraction']:.0f}%  MSD {r['msd']:.3f}", fontsize=7.5)
            ax.set(xlim=(-1, 1), ylim=(-1, 1), xticks=[], yticks=[], aspect="equal")
            if col == 0:
                ax.set_ylabel(numbers["title"], fontsize=8)
    fig.suptitle(f"Same budget delta={report['budget']} for DeFlow and FiDec (FQL alpha="
                 f"{report['fql_alpha']:.2f}); red: behaviour support (1% density quantile); "
                 "shading: Q (darker = higher)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def print_table(report: dict) -> None:
    print(f"\n{'problem':10s} {'method':22s} {'mean Q':>8s} {'support':>8s} {'MSD':>8s}  modes")
    for pname, prob in report["problems"].items():
        for method, r in prob["methods"].items():
            modes = " ".join(f"{k}={v:.2f}" for k, v in r.get("mode_occupancy", {}).items())
            print(f"{pname:10s} {method:22s} {r['mean_q']:8.3f} {r['support_fraction']:8.3f} "
                  f"{r['msd']:8.4f}  {modes}")


@dataclass(frozen=True)
class Args:
    """The demo's flags; unset ones take `Settings()` (or `QUICK`). Each method keeps its own
    key, so a method's numbers do not depend on which others run."""

    quick: bool = False
    """Smoke run (under a minute)."""
    out_dir: Path = Path("docs/figures")
    """Where toy2d.png and toy2d.json go."""
    seed: int = 0
    """Training seed (each problem folds in its index)."""
    budget: float | None = None
    """Target divergence delta (None: the settings', 0.01)."""
    refine_steps: int | None = None
    """Refinement updates (None: the settings', 1500; 100 with --quick)."""
    methods: tuple[Literal[tuple(METHODS)], ...] | None = None
    """Trained methods to run (None: all but the cheap Fisher estimators; --quick: three)."""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, prog="recipes/toy2d.py",
                    description=__doc__.split("\n\n")[0])
    settings = QUICK if args.quick else Settings()
    overrides = {"budget": args.budget, "refine_steps": args.refine_steps,
                 "methods": args.methods}
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    start, cpu_start = time.perf_counter(), time.process_time()
    optimiser = settings.optimiser.make(settings.refine_steps)  # constant: no schedule
    argv = sys.argv[1:] if argv is None else argv
    report = {"command": " ".join(["python recipes/toy2d.py", *argv]), "seed": args.seed,
              "quick": args.quick, "settings": asdict(settings), "budget": settings.budget,
              "fql_alpha": settings.fql_alpha, "machine": machine(), "code": code_version(),
              "definitions": DEFINITIONS, "problems": {}}
    all_samples = {}
    for i, problem in enumerate(make_problems()):
        print(f"[{problem.name}]", flush=True)
        numbers, samples = run_problem(problem, settings, optimiser,
                                       jr.fold_in(jr.key(args.seed), i))
        report["problems"][problem.name] = numbers
        all_samples[problem.name] = (problem, samples)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot_grid(all_samples, report, args.out_dir / "toy2d.png")
    report["wall_time_s"] = round(time.perf_counter() - start, 1)  # excludes imports
    report["cpu_time_s"] = round(time.process_time() - cpu_start, 1)  # all threads, same span
    (args.out_dir / "toy2d.json").write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)
    print(f"\nwrote {args.out_dir / 'toy2d.png'} and toy2d.json in {report['wall_time_s']} s "
          f"({report['cpu_time_s']} s of CPU)")
    return report


if __name__ == "__main__":
    main()
