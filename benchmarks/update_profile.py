"""Where an update's time goes: FQL, DeFlow and FiDec split into their parts (plain numbers).

    python benchmarks/update_profile.py                     # cpu size (4x128)
    python benchmarks/update_profile.py --sizes cpu 4x256 paper --rounds 30

Each part of `fidec_zoo.updates.update` is compiled on its own, with the agent's own code, on a
minibatch of 256 from a synthetic dataset of 1M rows with cube-single's sizes (obs 28, action 5):

    sample      the minibatch gather (`Dataset.sample`) from the 1M rows
    flow match  flow matching of the behaviour flow, forward and backward
    rollouts    every frozen-flow rollout of the step in its one batched solve (next actions,
                and for DeFlow/FiDec base actions and the metric's anchor samples)
    critic      the critic's TD loss, forward and backward
    actor       the refinement (penalty through the constraint, plus Q), forward and backward;
                for FiDec this holds the Fisher penalty
    penalty     the metric's batch penalty alone, forward (a part of `actor`)
    optimiser   the optimiser step (global-norm clip and Adam where the recipe has them) and
                `apply_updates` over the trainable leaves
    targets     the critic's Polyak target update
    update      the whole update in one call; `update/10` is one of 10 scanned in one call, the
                way `fit` runs them

For each: the median ms per call over `--rounds` rounds timed round-robin (every part once per
round, so a load change hits all alike), minus the ms of an empty jitted call with the same
arguments (the dispatch of the agent's and optimiser's arrays, printed), and the number of
instructions XLA's optimised program runs (its entry computation, loop bodies and called
computations, a fusion counted once): on a CPU at small sizes each costs a roughly fixed
dispatch time, so this count is what the overhead scales with. The parts' inputs (a minibatch,
its rollouts) are computed beforehand, so each holds only its own work; `penalty` is a part of
`actor`, and the parts' sum exceeds `update`, which XLA compiles as one program. FLOPs per update
are `benchmarks/update_speed.py`'s model: XLA's cost analysis counts a loop body (the flow's
Euler steps) once.
"""

import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

os.environ.setdefault("EQX_ON_ERROR", "nan")  # profile the computation, not runtime checks
sys.path.insert(0, str(Path(__file__).resolve().parent))  # update_speed's harness

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import optax  # noqa: E402
import tyro  # noqa: E402
from update_speed import (  # noqa: E402
    AGENTS,
    BATCH,
    build,
    check_sizes,
    header,
    network_size,
    scanned,
    synthetic_data,
)

from fidec_zoo.agents import trainable  # noqa: E402
from fidec_zoo.agents._base import batch_noise, flow_matching_loss  # noqa: E402
from fidec_zoo.agents.flow_ql import ResidualFlowQL, _with_anchors, refinement_terms  # noqa: E402
from fidec_zoo.updates import update  # noqa: E402

ROWS = 1_000_000


def _grad(fn: Callable, tree):
    """Forward and backward of `fn` over the array leaves of `tree`."""
    params, static = eqx.partition(tree, eqx.is_inexact_array)
    return jax.grad(lambda p: fn(eqx.combine(p, static)))(params)


def rollouts(agent, batch, key):
    """Every frozen-flow rollout of the step, in its one batched solve, as the agent does it."""
    residual = isinstance(agent, ResidualFlowQL)
    obs, next_obs = batch.observations, batch.next_observations
    next_noise = batch_noise(key, obs.shape[0], agent.actor)
    z = jr.normal(jr.fold_in(key, 1), (obs.shape[0], agent.actor.action_dim))
    groups = [(next_obs, next_noise), (obs, z)] if residual else [(obs, z)]
    return _with_anchors(agent, obs, groups, jr.fold_in(key, 2))


def parts(agent, optimiser, data) -> dict[str, Callable]:
    """The update's parts for `agent`, each a function of `(agent, opt_state, inputs, key)`;
    `inputs = (batch, base, anchors)`: a minibatch and its rollouts, computed beforehand so
    that each part holds only its own work."""
    residual = isinstance(agent, ResidualFlowQL)

    def flow_part(agent, opt_state, inputs, key):
        batch = inputs[0]
        return _grad(lambda f: flow_matching_loss(f, batch.observations, batch.actions, key),
                     agent.flow)

    def critic_part(agent, opt_state, inputs, key):
        batch = inputs[0]
        return _grad(lambda c: c.loss(batch, batch.actions)[0], agent.critics)

    def actor_part(agent, opt_state, inputs, key):
        batch, base, anchors = inputs
        obs = batch.observations

        def loss(actor):
            a = eqx.tree_at(lambda x: x.actor, agent, actor)
            if residual:
                d = jax.vmap(actor.displacement)(obs, base)
            else:
                d = jax.vmap(actor.raw)(obs, jr.normal(key, base.shape)) - base
            return refinement_terms(a, batch, base, d, key, anchors)[0]

        return _grad(loss, agent.actor)

    def penalty_part(agent, opt_state, inputs, key):
        batch, base, anchors = inputs
        d = 0.01 * jr.normal(key, base.shape)
        return agent.metric.batch_penalty(agent.flow, batch.observations, base, d, key=key,
                                          anchors=anchors, data_actions=batch.actions)

    def optimiser_part(agent, opt_state, inputs, key):
        params = eqx.filter(agent, trainable(agent))
        grads = jax.tree.map(lambda x: x * 1e-3, params)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def update_part(agent, opt_state, inputs, key):
        return update(agent, opt_state, data, key, jnp.int32(0), optimiser=optimiser,
                      batch_size=BATCH)

    out = {"sample": lambda agent, opt_state, inputs, key: data.sample(key, BATCH),
           "flow match": flow_part,
           "rollouts": lambda agent, opt_state, inputs, key: rollouts(agent, inputs[0], key),
           "critic": critic_part, "actor": actor_part, "penalty": penalty_part,
           "optimiser": optimiser_part,
           "targets": lambda agent, opt_state, inputs, key:
               agent.update_targets(agent, jnp.int32(0)).critics,
           "update": update_part}
    if not residual:
        out.pop("penalty")
    return out


def instructions(compiled) -> int:
    """Instructions of XLA's optimised program, fusions counted once (their insides are one
    kernel): the entry computation, loop bodies and conditions, and called computations."""
    text = compiled.as_text()
    count, inside_fusion = 0, False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith("{") and ("computation" in stripped or stripped.startswith("%")
                                       or stripped.startswith("ENTRY")):
            inside_fusion = "fused" in stripped.split()[0] or "fusion" in stripped.split()[0] \
                or "wrapped" in stripped.split()[0] or stripped.split()[0].startswith("%ynn")
            continue
        if stripped.startswith("%") and " = " in stripped and not inside_fusion:
            if " parameter(" not in stripped and " constant(" not in stripped \
                    and " get-tuple-element(" not in stripped and " tuple(" not in stripped:
                count += 1
    return count


class Part:
    """One compiled part: its function, the instructions of its program, and its times."""

    def __init__(self, name: str, fn: Callable, args: tuple):
        self.name, self.args, self.times = name, args, []
        self.fn = jax.jit(fn)
        self.instructions = instructions(self.fn.lower(*args).compile())
        jax.block_until_ready(self.fn(*args))

    def call(self, key) -> None:
        start = time.perf_counter()
        jax.block_until_ready(self.fn(*self.args[:-1], key))
        self.times.append(time.perf_counter() - start)

    @property
    def ms(self) -> float:
        return 1e3 * statistics.median(self.times)


def profile(name: str, hidden: tuple[int, ...], data, rounds: int) -> None:
    agent, optimiser = build(name, hidden, jr.key(1))
    opt_state = optimiser.init(eqx.filter(agent, trainable(agent)))
    batch = data.sample(jr.key(3), BATCH)
    (*_, base), anchors = jax.jit(rollouts)(agent, batch, jr.key(4))
    arrays, static = eqx.partition((agent, opt_state), eqx.is_array)
    inputs = (batch, base, anchors)
    todo = [Part(n, lambda arrays, inputs, key, f=f: f(*eqx.combine(arrays, static), inputs, key),
                 (arrays, inputs, jr.key(0)))
            for n, f in parts(agent, optimiser, data).items()]
    scan = scanned(optimiser, 10)
    todo.append(Part("update/10", lambda arrays, inputs, key: scan(
        *eqx.combine(arrays, static), data, key, jnp.int32(0))[1], (arrays, inputs, jr.key(0))))
    empty = Part("empty", lambda arrays, inputs, key: key, (arrays, inputs, jr.key(0)))
    for i in range(rounds):
        for part in [*todo, empty]:
            part.call(jr.key(i))
    whole = next(p for p in todo if p.name == "update").ms - empty.ms
    print(f"\n== {name}, {len(hidden)}x{hidden[0]} MLPs, batch {BATCH}, dataset {ROWS} rows; "
          f"median of {rounds} rounds; an empty jitted call with the same arguments takes "
          f"{empty.ms:.3f} ms (subtracted) ==")
    print(f"{'part':11s} {'ms':>8s} {'% update':>9s} {'instructions':>13s}")
    for part in todo:
        ms = (part.ms - empty.ms) / (10 if part.name == "update/10" else 1)
        print(f"{part.name:11s} {ms:8.3f} {100 * ms / whole:8.1f}% {part.instructions:13d}")


@dataclasses.dataclass(frozen=True)
class Args:
    sizes: tuple[str, ...] = ("cpu",)
    """Presets (cpu, paper) or DEPTHxWIDTH network sizes, e.g. 4x192."""
    agents: tuple[Literal[AGENTS], ...] = AGENTS
    """Agents to profile."""
    rounds: int = 20
    """Timed calls per part."""


def main() -> None:
    args = tyro.cli(Args, description=__doc__.split("\n")[0])
    check_sizes(args.sizes)
    header("update profile")
    data = synthetic_data(ROWS)
    for size in args.sizes:
        for name in args.agents:
            profile(name, network_size(size), data, args.rounds)


if __name__ == "__main__":
    main()
