"""Acting speed of zoo policies, one observation at a time (plain numbers; nothing is asserted).

    python benchmarks/act_speed.py [--calls 200] [--eager-calls 5] [NAME ...]

What is timed is what a user stepping an environment runs: `policy.sample(obs, key=key)` on one
float64 NumPy observation, the way gymnasium returns it, result fetched to the host. For each
zoo entry (default: one per policy class that the zoo ships):

- first call: tracing and compiling `sample` (it is `eqx.filter_jit`-ed);
- compiled: the median over `--calls` calls after that;
- eager: the median over `--eager-calls` calls of `policy(obs, noise)` itself, not compiled,
  with the noise drawn as `sample` draws it: what `sample` ran before it was compiled (every
  op of a flow's ODE solve dispatched on its own);
- the eager/compiled ratio, measured in this one process.

The machine may be shared; the ratio is the number to compare between machines.
"""

import dataclasses
import importlib.util
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated

warnings.filterwarnings("ignore")
if importlib.util.find_spec("fidec_zoo") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

from fidec_zoo import zoo  # noqa: E402


def _seconds(act, calls: int) -> list[float]:
    times = []
    for i in range(calls):
        start = time.perf_counter()
        np.asarray(act(i))
        times.append(time.perf_counter() - start)
    return times


def _one_per_class() -> list[str]:
    first: dict[str, str] = {}
    for name in zoo.list_models():
        first.setdefault(zoo.model_info(name).policy_class, name)
    return sorted(first.values())


def measure(name: str, calls: int, eager_calls: int) -> str:
    policy = zoo.load(name)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(calls + 1, policy.obs_dim))  # float64, as an environment gives it
    keys = jax.random.split(jax.random.key(0), calls + 1)
    act = lambda i: policy.sample(obs[i], key=keys[i])  # noqa: E731
    (first,) = _seconds(act, 1)
    compiled = statistics.median(_seconds(lambda i: act(i + 1), calls))
    noise = lambda i: jax.random.normal(keys[i], policy.noise_shape)  # noqa: E731
    eager = statistics.median(
        _seconds(lambda i: policy(jnp.asarray(obs[i], jnp.float32), noise(i)), eager_calls + 1)[1:]
    )
    return (f"{name:<45} {type(policy).__name__:<16} first call {first:6.2f} s   "
            f"compiled {1e3 * compiled:7.2f} ms   eager {1e3 * eager:8.1f} ms   "
            f"eager/compiled {eager / compiled:6.0f}x")


@dataclasses.dataclass(frozen=True)
class Args:
    names: Annotated[tuple[str, ...], tyro.conf.Positional,
                     tyro.conf.arg(metavar="[NAME ...]")] = ()
    """Zoo entries (default: one per policy class)."""
    calls: int = 200
    """Timed calls per policy."""
    eager_calls: int = 5
    """Calls of the uncompiled policy (slow)."""


def main() -> None:
    args = tyro.cli(Args, description=__doc__.splitlines()[0])
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    for name in args.names or _one_per_class():
        print(measure(name, args.calls, args.eager_calls), flush=True)


if __name__ == "__main__":
    main()
