"""FQL's update: the public reference implementation against fidec_zoo, in one process.

    python benchmarks/reference_speed.py --fql-repo PATH                # 4x128
    python benchmarks/reference_speed.py --fql-repo PATH --sizes 4x128 4x256 4x512 --rounds 9

`PATH` is a checkout of github.com/seohongpark/fql (its `agents/` and `utils/`); the reference
needs flax and ml_collections (`pip install flax ml_collections`). Its `utils/networks.py`
imports distrax for the Gaussian actors FQL does not use; where distrax is missing or fails to
import, a stand-in module is put in its place (FQL never touches it).

Both sides run `--steps` updates per jitted call in a `lax.scan`, batch 256 sampled on device
from the same synthetic dataset (cube-single's sizes, obs 28 and action 5), 4xW MLPs for every
network, 10 flow steps, FQL's default losses (the reference's `FQLAgent.update`; the library's
`recipes.config("fql", ...)` with its optimiser). Only a loss leaves each scan, so XLA drops the
reference's logging-only computations (its `mse` rollout): both sides do the same arithmetic
("equal work"). They are timed round-robin (`--rounds` rounds, the median reported) so that a
load change hits both alike, and the ratio is taken within this one process. Instruction counts
are those of XLA's optimised programs (fusions counted once, `update_profile.instructions`).
"""

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("EQX_ON_ERROR", "nan")  # benchmark the computation, not runtime checks
sys.path.insert(0, str(Path(__file__).resolve().parent))  # update_speed's harness

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
from update_profile import instructions  # noqa: E402
from update_speed import (  # noqa: E402
    ACT,
    BATCH,
    OBS,
    Timed,
    build,
    check_sizes,
    header,
    network_size,
    round_robin,
    scanned,
    synthetic_data,
)


def reference_agent(repo: Path, hidden: tuple[int, ...]):
    """The reference `FQLAgent` at `hidden` for both actor and critic (its other defaults)."""
    try:  # only its Gaussian actors use distrax
        import distrax  # noqa: F401
    except Exception:  # missing, or not importable with this jax
        sys.modules["distrax"] = types.SimpleNamespace(Transformed=object)
    sys.path.insert(0, str(repo))
    from agents.fql import FQLAgent, get_config

    config = get_config()
    config.actor_hidden_dims = config.value_hidden_dims = hidden
    return FQLAgent.create(0, np.zeros((1, OBS), np.float32), np.zeros((1, ACT), np.float32),
                           dict(config))


class Reference:
    """The reference's jitted K-update scan, timed like `update_speed.Timed`."""

    def __init__(self, agent, data, num_steps: int):
        columns = {"observations": data.observations, "actions": data.actions,
                   "rewards": data.rewards, "masks": data.masks,
                   "next_observations": data.next_observations}
        rows = data.observations.shape[0]

        def chunk(agent, key):
            def body(agent, k):
                index = jr.randint(k, (BATCH,), 0, rows)
                agent, info = agent.update({name: v[index] for name, v in columns.items()})
                return agent, info["critic/critic_loss"]
            return jax.lax.scan(body, agent, jr.split(key, num_steps))

        self.fn, self.state, self.num_steps, self.times, self.calls = \
            jax.jit(chunk), agent, num_steps, [], 0
        self.instructions = instructions(self.fn.lower(agent, jr.key(0)).compile())

    def call(self) -> float:
        start = time.perf_counter()
        self.state, losses = self.fn(self.state, jr.key(self.calls))
        jax.block_until_ready(losses)
        self.calls += 1
        return time.perf_counter() - start

    @property
    def ms(self) -> float:
        return 1e3 * statistics.median(self.times) / self.num_steps


def library_instructions(hidden: tuple[int, ...], zoo: Timed, num_steps: int) -> int:
    optimiser = build("fql", hidden, jr.key(1))[1]
    arrays, static = eqx.partition(zoo.state, eqx.is_array)
    fn = jax.jit(lambda a, d, k, s: scanned(optimiser, num_steps)(*eqx.combine(a, static), d, k,
                                                                   s))
    return instructions(fn.lower(arrays, zoo.data, zoo.key, jnp.int32(0)).compile())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fql-repo", type=Path, required=True,
                        help="a checkout of github.com/seohongpark/fql")
    parser.add_argument("--sizes", nargs="+", default=["cpu"], type=str,
                        help="network sizes: cpu, paper or DEPTHxWIDTH (default: cpu = 4x128)")
    parser.add_argument("--steps", type=int, default=10, help="updates per jitted call")
    parser.add_argument("--rounds", type=int, default=7, help="timed calls per side")
    args = parser.parse_args()
    if not (args.fql_repo / "agents" / "fql.py").is_file():
        raise SystemExit(f"error: {args.fql_repo} holds no agents/fql.py: pass a checkout of "
                         "github.com/seohongpark/fql.")
    check_sizes(parser, args.sizes)
    header("FQL update: reference (seohongpark/fql) vs fidec_zoo")
    data = synthetic_data()
    print("size    reference ms  fidec_zoo ms  reference/fidec_zoo  instructions (ref, zoo)")
    for size in args.sizes:
        hidden = network_size(size)
        ref = Reference(reference_agent(args.fql_repo, hidden), data, args.steps)
        zoo = Timed("fql", hidden, data, args.steps)
        zoo_instructions = library_instructions(hidden, zoo, args.steps)
        round_robin([ref, zoo], args.rounds)
        label = "x".join([str(len(hidden)), str(hidden[0])])
        print(f"{label:7s} {ref.ms:12.2f}  {zoo.ms:12.2f}  {ref.ms / zoo.ms:19.2f}  "
              f"{ref.instructions}, {zoo_instructions}", flush=True)


if __name__ == "__main__":
    main()
