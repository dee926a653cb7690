"""FQL, DeFlow and FiDec updates: the public reference implementations against fidec_zoo.

    python benchmarks/reference_speed.py --fql-repo FQL                 # FQL at 4x128
    python benchmarks/reference_speed.py --fql-repo FQL --fidec-repo FIDEC --sizes cpu 4x256 paper

`FQL` is a checkout of github.com/seohongpark/fql (its FQL agent), `FIDEC` one of
github.com/ARC0127/Fisher-Decorator (its DeFlow and FiDec agents); each gives the agents it
holds. The references need flax and ml_collections (`pip install flax ml_collections`). Their
`utils/networks.py` imports distrax for Gaussian actors these agents do not use; where distrax is
missing or fails to import, a stand-in module is put in its place. Both repositories name their
packages `agents` and `utils`, so each is imported in turn.

The references run at the settings the library's recipes use: FQL's defaults; DeFlow and FiDec
with their Lagrangian budget 1e-3, gradient clipping 5 and normalised Q loss, and FiDec with
its run scripts' Fisher estimator (K = 8 samples, t ~ U[0.85, 0.90], damping 1e-3), as the
library's `FisherMetric()` defaults. Both sides run `--steps` updates per jitted call in a
`lax.scan`, batch 256 sampled on device from the same synthetic dataset (cube-single's sizes,
obs 28 and action 5), 4xW MLPs for every network, 10 flow steps. Only a loss leaves each scan,
so XLA drops the references' logging-only computations (their actor loss's extra rollout):
both sides do the same arithmetic ("equal work"). They are timed round-robin (`--rounds`
rounds, the median reported) so that a load change hits both alike, and the ratio is taken
within this one process. Instruction counts are those of XLA's optimised programs (fusions
counted once, `update_profile.instructions`).
"""

import dataclasses
import importlib
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
import tyro  # noqa: E402
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
    refuse,
    round_robin,
    scanned,
    synthetic_data,
)

#: The reference's module, agent class and settings (beyond the network sizes) per agent.
REFERENCES = {
    "fql": ("agents.fql", "FQLAgent", {}),
    "deflow": ("agents.deflow", "DeFlowAgent",
               {"normalize_q_loss": True, "grad_clip": 5.0, "target_divergence": 1e-3}),
    "fidec": ("agents.fidec", "FiDecAgent",
              {"normalize_q_loss": True, "grad_clip": 5.0, "target_divergence": 1e-3,
               "num_fisher_samples": 8, "fisher_t": 0.9, "fisher_t_width": 0.05,
               "fisher_damping": 1e-3}),
}


def reference_agent(repo: Path, name: str, hidden: tuple[int, ...]):
    """The reference agent `name` from the checkout `repo`, at `hidden` for actor and critic."""
    try:  # only Gaussian actors use distrax
        import distrax  # noqa: F401
    except Exception:  # missing, or not importable with this jax
        sys.modules["distrax"] = types.SimpleNamespace(Transformed=object)
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("agents", "utils")]:
        del sys.modules[loaded]  # the other repository's packages of the same names
    sys.path.insert(0, str(repo))
    try:
        module_name, class_name, settings = REFERENCES[name]
        module = importlib.import_module(module_name)
    finally:
        sys.path.remove(str(repo))
    config = module.get_config()
    config.actor_hidden_dims = config.value_hidden_dims = hidden
    for key, value in settings.items():
        config[key] = value
    agent_class = getattr(module, class_name)
    return agent_class.create(0, np.zeros((1, OBS), np.float32), np.zeros((1, ACT), np.float32),
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


def library_instructions(name: str, hidden: tuple[int, ...], zoo: Timed, num_steps: int) -> int:
    optimiser = build(name, hidden, jr.key(1))[1]
    arrays, static = eqx.partition(zoo.state, eqx.is_array)
    fn = jax.jit(lambda a, d, k, s: scanned(optimiser, num_steps)(*eqx.combine(a, static), d, k,
                                                                   s))
    return instructions(fn.lower(arrays, zoo.data, zoo.key, jnp.int32(0)).compile())


@dataclasses.dataclass(frozen=True)
class Args:
    fql_repo: Path | None = None
    """A checkout of github.com/seohongpark/fql (FQL)."""
    fidec_repo: Path | None = None
    """A checkout of github.com/ARC0127/Fisher-Decorator (DeFlow, FiDec)."""
    sizes: tuple[str, ...] = ("cpu",)
    """Network sizes: cpu, paper or DEPTHxWIDTH (cpu = 4x128)."""
    steps: int = 10
    """Updates per jitted call."""
    rounds: int = 7
    """Timed calls per side."""


def main() -> None:
    args = tyro.cli(Args, description=__doc__.split("\n\n")[0])
    check_sizes(args.sizes)
    repos = {}
    for flag, repo, names in (("--fql-repo", args.fql_repo, ("fql",)),
                              ("--fidec-repo", args.fidec_repo, ("deflow", "fidec"))):
        if repo is None:
            continue
        for name in names:
            if not (repo / f"{REFERENCES[name][0].replace('.', '/')}.py").is_file():
                refuse(f"{flag} {repo} holds no {REFERENCES[name][0]}: pass a checkout of the "
                       "repository named in --help.")
            repos[name] = repo
    if not repos:
        refuse("give --fql-repo, --fidec-repo or both.")
    header("update: reference implementations vs fidec_zoo")
    data = synthetic_data()
    print("agent   size    reference ms  fidec_zoo ms  reference/fidec_zoo  "
          "instructions (ref, zoo)")
    for size in args.sizes:
        hidden = network_size(size)
        for name, repo in repos.items():
            ref = Reference(reference_agent(repo, name, hidden), data, args.steps)
            zoo = Timed(name, hidden, data, args.steps)
            zoo_instructions = library_instructions(name, hidden, zoo, args.steps)
            round_robin([ref, zoo], args.rounds)
            label = f"{len(hidden)}x{hidden[0]}"
            print(f"{name:7s} {label:7s} {ref.ms:12.2f}  {zoo.ms:12.2f}  "
                  f"{ref.ms / zoo.ms:19.2f}  {ref.instructions}, {zoo_instructions}", flush=True)


if __name__ == "__main__":
    main()
