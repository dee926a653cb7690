"""Disk size of a zoo entry as a policy only and with its whole agent (every network of it,
critic included), for the agents the zoo ships, built fresh from their `cpu` recipes (plain
numbers).

    python benchmarks/zoo_size.py

Sizes do not depend on the weights' values, so untrained agents measure what trained ones take.
The last line is the size of the shipped `checkpoints/` directory.
"""

import importlib.util
import sys
import tempfile
from pathlib import Path

import jax.random as jr

if importlib.util.find_spec("fidec_zoo") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fidec_zoo import recipes, zoo  # noqa: E402

CUBE, SCENE = "cube-single-play-singletask-task2-v0", "scene-play-singletask-task2-v0"
#: (recipe, env, hidden, obs_dim, action_dim): the shipped entries' kinds.
ENTRIES = (("fql", CUBE, (128,) * 4, 28, 5), ("deflow", CUBE, (128,) * 4, 28, 5),
           ("fidec", CUBE, (128,) * 4, 28, 5), ("fidec", SCENE, (256,) * 4, 40, 5))


def size_mb(path: Path) -> float:
    """All files under `path` (the shipped zoo: its entries and registry.json)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    for name, env, hidden, obs_dim, action_dim in ENTRIES:
        recipe = recipes.config(name, env_name=env, hidden=hidden)
        agent = recipe.build(obs_dim, action_dim, key=jr.key(0))
        with tempfile.TemporaryDirectory() as tmp:  # an entry records its own size on disk
            root = Path(tmp)
            policy = zoo.save_pretrained(agent.policy, f"{name}/{env}", recipe=recipe,
                                         root=root / "p")
            whole = zoo.save_pretrained(agent, f"{name}/{env}", recipe=recipe, root=root / "a",
                                        include_agent=True)
            print(f"{name:7s} {env:40s} {len(hidden)}x{hidden[0]:<4d} policy "
                  f"{policy.size_bytes / 1e6:5.2f} MB, with agent {whole.size_bytes / 1e6:5.2f} MB")
    shipped = Path(__file__).resolve().parents[1] / "checkpoints"
    print(f"shipped zoo ({shipped}): {size_mb(shipped):.2f} MB")


if __name__ == "__main__":
    main()
