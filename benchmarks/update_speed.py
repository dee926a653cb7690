"""Update and inference speed of FQL, DeFlow and FiDec (plain numbers; nothing is asserted).

    python benchmarks/update_speed.py                        # cpu and paper sizes, then seeds
    python benchmarks/update_speed.py --sizes cpu --steps 5 --rounds 5
    python benchmarks/update_speed.py --sizes 4x256 4x192 4x128 --seeds   # any DEPTHxWIDTH
    python benchmarks/update_speed.py --seeds 1 4            # multi-seed steps/s per seed
    python benchmarks/update_speed.py --seeds                # no multi-seed section
    python benchmarks/update_speed.py --estimators data base # FiDec with cheap Fisher anchors
    python benchmarks/update_speed.py --estimators           # the default estimator only

What is timed is what `fidec_zoo.train.fit` runs: the core's `fidec_zoo.updates.update`
scanned `--steps` times inside one jitted call, with minibatches (256) sampled on device from a
synthetic dataset of cube-single's sizes (obs 28, action 5). Agents are built from
`recipes.config(name, env_name="cube-single-play-singletask-task2-v0", hidden=...)` (the
`Recipe`'s `build`), with their recipe's optimiser (`recipe.train.optimiser.make(...)`:
global-norm clip for DeFlow/FiDec). Sizes: the network widths of the `cpu` and `paper` presets
(`recipes.PRESETS`: 4x128 and 4x512 MLPs).

The machine may be shared, so each agent is compiled and warmed up first, then the agents are
timed **round-robin** (`--rounds` rounds; every round times one call per agent) so that load
changes hit all of them alike; the median over rounds is reported, and ratios are taken within
this one process. Inference latency is one jitted batched policy call (1 and 50 observations).

The multi-seed section times `fit(..., seeds=N)`'s own chunk program
(`fidec_zoo.updates.run_chunk`: `update` vmapped over N agents stacked on a leading axis) at the
cpu size: "steps/s per seed" is how fast each seed
advances, "total" is N times that.

Next to FiDec with its default (exact) Fisher estimator, every size also times FiDec with each
estimator named in `--estimators` (default: all of `ESTIMATORS`, `FisherMetric` options that
need no anchor rollouts, and `anchor_steps=2`), in the same round-robin, so that all ratios
come from one run.

The last line is `fidec/fql update-time ratio: X.XX` (first size given, default `cpu`), after
one such line per estimator (`fidec[data]/fql update-time ratio: X.XX`).

Each size also times matrix products alone (`Ceiling`): the forward and backward of a bias-free
ReLU MLP of that size on 256 rows and on 1024, and a 2048x2048 product. The first is the rate
the update's shapes (its minibatch of 256) reach on this machine with no other work; an
agent's "of ceiling" column is its GFLOP/s over it. The second shows what evaluating more rows
per product (fusing evaluations that share weights) could gain at most.

The FLOP model counts MLP evaluations per update (backward = 2 forward); all networks of an
agent have the same hidden sizes, so it is close to exact for the matmul work. With batch B,
flow steps N and K Fisher samples:

    fql    : velocity 3B (flow matching) + NB (distillation target), one-step actor 4B,
             critic 14B (target B x2 members, online fwd+bwd, Q of the actor fwd+bwd)
    deflow : velocity 3B + 2NB (base and next-action rollouts), residual 4B, critic 14B
    fidec  : deflow + velocity KNB (Fisher anchors) + KB (scores at the Fisher points)
    fidec with anchors that need no rollouts ("data", "base", "action"): deflow + KB;
    with anchor_steps=M: deflow + KMB + KB
"""

import dataclasses
import importlib.util
import os
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NoReturn

os.environ.setdefault("EQX_ON_ERROR", "nan")  # benchmark the computation, not runtime checks
warnings.filterwarnings("ignore")
if importlib.util.find_spec("fidec_zoo") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import tyro  # noqa: E402

from fidec_zoo import recipes  # noqa: E402
from fidec_zoo.agents import trainable  # noqa: E402
from fidec_zoo.dataset import Dataset  # noqa: E402
from fidec_zoo.metrics import FisherMetric  # noqa: E402
from fidec_zoo.updates import initial_state, run_chunk, update  # noqa: E402

ENV = "cube-single-play-singletask-task2-v0"
OBS, ACT, BATCH = 28, 5, 256
SIZES = {name: preset.hidden for name, preset in recipes.PRESETS.items()}


def network_size(size: str) -> tuple[int, ...]:
    """A preset name (`cpu`, `paper`) or `DEPTHxWIDTH` (e.g. `4x192`) -> hidden widths."""
    if size in SIZES:
        return SIZES[size]
    depth, _, width = size.partition("x")
    if not (depth.isdigit() and width.isdigit()):
        raise ValueError(
            f"size {size!r}: expected one of {list(SIZES)} or DEPTHxWIDTH such as 4x192")
    return (int(width),) * int(depth)
AGENTS = ("fql", "deflow", "fidec")
#: FiDec's cheaper Fisher estimators, timed next to the default one (`fidec`). "base" and
#: "action" anchors run the same program as "data" (only the points differ).
ESTIMATORS = {
    "data": FisherMetric(anchor="data"),
    "base": FisherMetric(anchor="base"),
    "data-k1": FisherMetric(anchor="data", num_samples=1),
    "steps2": FisherMetric(anchor_steps=2),
}


def synthetic_data(n: int = 20_000, seed: int = 0) -> Dataset:
    k = jr.split(jr.key(seed), 5)
    zeros = jnp.zeros(n)
    return Dataset(jr.normal(k[0], (n, OBS)), jnp.tanh(jr.normal(k[1], (n, ACT))),
                   -(jr.uniform(k[2], (n,)) < 0.5).astype(jnp.float32), zeros + 1,
                   jr.normal(k[3], (n, OBS)), jnp.tanh(jr.normal(k[4], (n, ACT))), zeros)


def build(name: str, hidden: tuple[int, ...], key, **overrides):
    recipe = recipes.config(name, env_name=ENV, hidden=hidden, **overrides)
    agent = recipe.build(OBS, ACT, key=key)
    optimiser = recipe.train.optimiser.make(recipe.train.steps)
    return agent, optimiser


def scanned(optimiser, num_steps: int):
    """`num_steps` calls of `update` in one `lax.scan` (what `fit` runs per chunk)."""

    def run(agent, opt_state, data, key, start):
        arrays, static = eqx.partition((agent, opt_state), eqx.is_array)

        def body(arrays, step):
            agent, opt_state = eqx.combine(arrays, static)
            agent, opt_state, metrics = update(agent, opt_state, data, key, step,
                                               optimiser=optimiser, batch_size=BATCH)
            return eqx.filter((agent, opt_state), eqx.is_array), metrics["loss"]

        arrays, losses = jax.lax.scan(body, arrays, start + jnp.arange(num_steps))
        return eqx.combine(arrays, static), losses

    return run


class Timed:
    """One agent's jitted K-step program, its state, and its per-call times."""

    def __init__(self, name, hidden, data, num_steps, seeds: int | None = None, **overrides):
        self.name, self.data, self.num_steps, self.times = name, data, num_steps, []
        self.metric = None  # FiDec's Fisher estimator when not the default (for the FLOP model)
        if seeds is None:  # `update` scanned in one jit (the harness of the speed section)
            agent, optimiser = build(name, hidden, jr.key(1), **overrides)
            self.key = jr.key(2)
            self.fn = eqx.filter_jit(scanned(optimiser, num_steps))
            self.state = (agent, optimiser.init(eqx.filter(agent, trainable(agent))))
        else:  # exactly fit(..., seeds=N)'s chunk program (`update` vmapped over seeds)
            keys = jr.split(jr.key(1), seeds)
            agent = eqx.filter_vmap(lambda k: build(name, hidden, k)[0])(keys)
            optimiser = build(name, hidden, jr.key(1))[1]
            self.key = jr.split(jr.key(2), seeds)
            state = initial_state(agent, optimiser, self.key, seeds)
            self.state = (state["agent"], state["opt_state"])

            def chunk(agent, opt_state, data, key, start):
                agent, opt_state, metrics = run_chunk(
                    (data, key, start), agent, opt_state, optimiser, BATCH, num_steps, True)
                return (agent, opt_state), metrics["loss"]

            self.fn = chunk
        self.step = 0

    def call(self) -> float:
        start = time.perf_counter()
        self.state, losses = self.fn(*self.state, self.data, self.key, jnp.int32(self.step))
        jax.block_until_ready(losses)
        self.step += self.num_steps
        return time.perf_counter() - start

    @property
    def ms(self) -> float:
        return 1e3 * statistics.median(self.times) / self.num_steps


class Ceiling:
    """Matrix products alone, timed like `Timed`: `num_steps` forward and backward passes (the
    gradient in the weights and the input, as an update's backward needs) of a bias-free ReLU
    MLP of the agents' sizes on `rows` rows in one scan, or with `square=N` one N x N product
    per step. Its GFLOP/s is what this machine's matrix units reach on the update's shapes
    without any other work: the ceiling the agents' GFLOP/s are measured against."""

    def __init__(self, hidden: tuple[int, ...], num_steps: int, rows: int = BATCH,
                 square: int | None = None):
        self.name, self.num_steps, self.times = "matmul", num_steps, []
        keys = jr.split(jr.key(3), len(hidden) + 2)
        if square is not None:
            self.state = (jr.normal(keys[0], (square, square)) / square**0.5,)
            self.gflop = 2 * square**3 / 1e9

            def step(carry, _):
                (x,) = carry
                return (x @ x,), None
        else:
            sizes = [OBS + ACT + 1, *hidden, ACT]
            weights = [jr.normal(k, (a, b)) / a**0.5
                       for k, a, b in zip(keys[:-1], sizes[:-1], sizes[1:], strict=True)]
            self.state = (weights, jr.normal(keys[-1], (rows, sizes[0])))
            self.gflop = 3 * 2 * rows * mlp_macs(OBS + ACT + 1, hidden, ACT) / 1e9

            def loss(weights, x):
                for w in weights[:-1]:
                    x = jax.nn.relu(x @ w)
                return (x @ weights[-1]).sum()

            def step(carry, _):
                weights, x = carry
                grad_w, grad_x = jax.grad(loss, argnums=(0, 1))(weights, x)
                return ([w - 1e-6 * g for w, g in zip(weights, grad_w, strict=True)],
                        x - 1e-6 * grad_x), None

        self.fn = jax.jit(lambda state: jax.lax.scan(step, state, None, num_steps)[0])

    def call(self) -> float:
        start = time.perf_counter()
        self.state = jax.block_until_ready(self.fn(self.state))
        return time.perf_counter() - start

    @property
    def ms(self) -> float:
        return 1e3 * statistics.median(self.times) / self.num_steps

    @property
    def rate(self) -> float:
        """GFLOP/s."""
        return self.gflop / self.ms * 1e3


def round_robin(runs: list, rounds: int) -> None:
    for run in runs:  # compile + one warm-up call each
        run.call(), run.call()
    for _ in range(rounds):
        for run in runs:
            run.times.append(run.call())


def latency(policy, n: int, reps: int = 30) -> float:
    """Median ms of one jitted batched call of `policy` on `n` observations (fresh noise)."""
    fn = eqx.filter_jit(lambda p, o, k: jax.vmap(p.sample)(o, key=jr.split(k, o.shape[0])))
    obs = jr.normal(jr.key(0), (n, OBS))
    jax.block_until_ready(fn(policy, obs, jr.key(0)))
    times = []
    for i in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(policy, obs, jr.key(i)))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def mlp_macs(in_size: int, hidden: tuple[int, ...], out_size: int) -> int:
    sizes = [in_size, *hidden, out_size]
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def flop_model(name: str, hidden, flow_steps: int = 10,
               metric: FisherMetric | None = None) -> float:
    """GFLOP per update from the MLP-evaluation counts in the module docstring (`metric`: FiDec's
    Fisher estimator, the default one if `None`)."""
    metric = FisherMetric() if metric is None else metric
    b, n, k = BATCH, flow_steps, metric.num_samples
    anchor_steps = 0 if metric.anchor != "samples" else metric.anchor_steps or n
    v = mlp_macs(OBS + ACT + 1, hidden, ACT)  # velocity field
    a = mlp_macs(OBS + ACT, hidden, ACT)  # one-step actor / residual
    q = 2 * mlp_macs(OBS + ACT, hidden, 1)  # twin critic (both members)
    evals = {"fql": (3 * b + n * b) * v + 4 * b * a + 7 * b * q,
             "deflow": (3 * b + 2 * n * b) * v + 4 * b * a + 7 * b * q}
    evals["fidec"] = evals["deflow"] + (k * anchor_steps * b + k * b) * v
    return 2 * evals[name] / 1e9


def speed(sizes: Sequence[str], num_steps: int, rounds: int,
          estimators: Sequence[str]) -> dict[str, dict[str, float]]:
    """Times the agents and FiDec with each of `estimators`; returns, per size, the update-time
    ratio to FQL of `fidec` and of each `fidec[estimator]`."""
    data = synthetic_data()
    ratios = {}
    for size in sizes:
        hidden = network_size(size)
        runs = [Timed(name, hidden, data, num_steps) for name in AGENTS]
        for label in estimators:
            run = Timed("fidec", hidden, data, num_steps, metric=ESTIMATORS[label])
            run.name, run.metric = f"fidec[{label}]", ESTIMATORS[label]
            runs.append(run)
        ceiling, wide = Ceiling(hidden, num_steps), Ceiling(hidden, num_steps, rows=4 * BATCH)
        peak = Ceiling(hidden, num_steps, square=2048)
        round_robin([*runs, ceiling, wide, peak], rounds)
        ms = {r.name: r.ms for r in runs}
        print(f"\n== {size} size: {len(hidden)}x{hidden[0]} MLPs, batch {BATCH}, "
              f"{num_steps} updates per jitted call, median of {rounds} rounds ==")
        print(f"matrix products alone (the MLP's forward and backward): {ceiling.rate:.1f} "
              f"GFLOP/s on {BATCH} rows, {wide.rate:.1f} on {4 * BATCH} rows; a 2048x2048 "
              f"product: {peak.rate:.1f} GFLOP/s")
        print(f"{'agent':14s} {'ms/update':>10s} {'updates/s':>10s} {'GFLOP/upd':>10s} "
              f"{'GFLOP/s':>8s} {'of ceiling':>10s} {'infer 1 obs':>12s} {'infer 50 obs':>13s}")
        for run in runs:
            gflop = flop_model(run.name.split("[")[0], hidden, metric=run.metric)
            rate = gflop / ms[run.name] * 1e3
            policy = run.state[0].policy
            print(f"{run.name:14s} {ms[run.name]:10.1f} {1e3 / ms[run.name]:10.1f} "
                  f"{gflop:10.2f} {rate:8.1f} {rate / ceiling.rate:10.0%} "
                  f"{latency(policy, 1):9.2f} ms {latency(policy, 50):10.2f} ms")
        fq = flop_model("fql", hidden)
        print(f"ratios ({size}): deflow/fql {ms['deflow'] / ms['fql']:.2f} "
              f"(FLOP model {flop_model('deflow', hidden) / fq:.2f})")
        for run in runs[2:]:
            model = flop_model("fidec", hidden, metric=run.metric) / fq
            print(f"ratios ({size}): {run.name}/fql {ms[run.name] / ms['fql']:.2f} "
                  f"(FLOP model {model:.2f})")
        ratios[size] = {run.name: ms[run.name] / ms["fql"] for run in runs[2:]}
    return ratios


def multi_seed(seed_counts: Sequence[int], num_steps: int, rounds: int) -> None:
    data = synthetic_data()
    hidden = SIZES["cpu"]
    print(f"\n== multi-seed: fit(..., seeds=N)'s program (vmap over seeds), cpu size, "
          f"{num_steps} updates per call ==")
    print(f"{'agent':8s} {'seeds':>5s} {'ms/update':>10s} {'steps/s per seed':>17s} "
          f"{'total steps/s':>14s}")
    for name in ("fql", "fidec"):
        runs = [Timed(name, hidden, data, num_steps, seeds=n) for n in seed_counts]
        round_robin(runs, rounds)
        for n, run in zip(seed_counts, runs):
            print(f"{name:8s} {n:5d} {run.ms:10.1f} {1e3 / run.ms:17.1f} "
                  f"{n * 1e3 / run.ms:14.1f}")


def refuse(message: str) -> NoReturn:
    """Stops as a refused command line does: the reason on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_sizes(sizes: Sequence[str]) -> None:
    """Refuses no size, or the first size `network_size` refuses."""
    if not sizes:
        refuse("give at least one network size to --sizes.")
    for size in sizes:
        try:
            network_size(size)
        except ValueError as e:
            refuse(str(e))


def header(title: str) -> None:
    """The first lines of a benchmark's output: what ran, where and when, and the load."""
    print(f"fidec_zoo {title} | jax {jax.__version__} | {jax.devices()[0].device_kind} "
          f"x{jax.device_count()} | {os.cpu_count()} CPUs | "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    if hasattr(os, "getloadavg"):
        print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


@dataclasses.dataclass(frozen=True)
class Args:
    sizes: tuple[str, ...] = ("cpu", "paper")
    """Presets (cpu, paper) or DEPTHxWIDTH network sizes, e.g. 4x192."""
    steps: int = 5
    """Updates per jitted call."""
    rounds: int = 5
    """Timed calls per agent."""
    seeds: tuple[int, ...] = (1, 4)
    """Seed counts for the multi-seed section (none: skip it)."""
    estimators: tuple[Literal[tuple(ESTIMATORS)], ...] = tuple(ESTIMATORS)
    """FiDec Fisher estimators timed next to the default one (none: the default only)."""


def main() -> None:
    args = tyro.cli(Args, description=__doc__.split("\n")[0])
    check_sizes(args.sizes)
    header("update speed")
    ratios = speed(args.sizes, args.steps, args.rounds, args.estimators)
    if args.seeds:
        multi_seed(args.seeds, args.steps, args.rounds)
    print()
    first = ratios[args.sizes[0]]
    for name in [n for n in first if n != "fidec"] + ["fidec"]:
        print(f"{name}/fql update-time ratio: {first[name]:.2f}")


if __name__ == "__main__":
    main()
