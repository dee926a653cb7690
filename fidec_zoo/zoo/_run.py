"""`load_run`: the agent of a `recipes/offline.py` run directory, at any kept checkpoint.

A zoo entry is a policy someone evaluated and registered; a run directory is what training
leaves behind. Users want the policy of their own run without registering it first (and
while it still trains), so this reads the run's `config.json`, rebuilds its recipe and
restores a training checkpoint into it.
"""

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.random as jr

from ..agents import AbstractAgent
from ..checkpoint import CorruptCheckpointError, checkpoint_steps
from ..configs import ConfigError, Recipe, from_dict
from ..envs import env_dims, make_env
from ..policies import AbstractPolicy
from ..train import restore_agent, select_seed, stack_seeds
from ._legacy import legacy_recipe

__all__ = ["TrainedRun", "load_run"]


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """An agent restored from a run directory, with what it was trained as.

    `policy` acts like a zoo policy (`policy(obs, z)`, `policy.sample(obs, key=...)`) and
    `env_name` is the task it was trained on, so `envs.evaluate(run.policy, run.env_name)`
    measures it. `config` is the run's `config.json` (recipe, seed, dataset provenance,
    versions).
    """

    agent: AbstractAgent
    recipe: Recipe
    step: int
    seed: int
    run_dir: Path
    config: Mapping[str, Any]

    @property
    def policy(self) -> AbstractPolicy:
        return self.agent.policy

    @property
    def env_name(self) -> str:
        return self.recipe.env_name

    @property
    def data_seed(self) -> int | None:
        """The seed of the generated dataset the run trained on."""
        if "job" in self.config:
            return self.config["job"]["data"]["seed"]
        return self.config.get("identity", {}).get("data_seed")  # run dirs before format 2

    @property
    def log_dir(self) -> Path:
        """Where this seed's `metrics.csv` and `eval.csv` are: the run directory, or its
        `seed_<i>` for one seed of a `--seeds N` run."""
        if int(self.config.get("seeds", 1)) == 1:
            return self.run_dir
        return self.run_dir / f"seed_{self.seed - int(self.config['seed'])}"


def _config(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"No run directory at {run_dir}.")
    path = run_dir / "config.json"
    if not path.is_file():
        if run_dir.name.startswith("seed_") and (run_dir.parent / "config.json").is_file():
            raise FileNotFoundError(
                f"{run_dir} holds one seed's logs of a --seeds run; load the run itself: "
                f"load_run({str(run_dir.parent)!r}, seed=...)."
            )
        raise FileNotFoundError(
            f"{run_dir} has no config.json, which recipes/offline.py writes. For a directory "
            "written by fit(..., run_dir=...) itself, build an agent of the same recipe and use "
            "fidec_zoo.train.restore_agent(run_dir, agent)."
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): it was damaged after it was written "
                         "(fidec_zoo writes it atomically). Restore it from a copy.") from None


def _recipe(config: Mapping[str, Any], run_dir: Path) -> Recipe:
    """The run's typed recipe; a run dir from before typed configs stored flat hyperparameters."""
    try:
        if "job" in config:  # an OfflineJob: its recipe's name, env and preset, agent, train
            job = config["job"]
            return Recipe(job["recipe"], from_dict(job["agent"]), from_dict(job["train"]),
                          env_name=job["env"], preset=job["preset"],
                          hparams=job.get("hparams"))
        rec = config["recipe"]
        return legacy_recipe(rec["name"], rec["env_name"], rec["preset"], rec["params"],
                             rec.get("objects"))
    except (ConfigError, ValueError, KeyError) as e:
        raise ValueError(
            f"{run_dir}/config.json: cannot rebuild the run's recipe ({type(e).__name__}: {e}). "
            "Build an agent of the same config yourself and use "
            "fidec_zoo.train.restore_agent(run_dir, agent).") from e


def _sizes(config: Mapping[str, Any], env_name: str) -> tuple[int, int]:
    """`(obs_dim, action_dim)`, from `config.json`, else (older runs) from the environment."""
    obs_dim, action_dim = config.get("obs_dim"), config.get("action_dim")
    if obs_dim is None or action_dim is None:
        obs_dim, action_dim = env_dims(make_env(env_name))
    return int(obs_dim), int(action_dim)


def _seed_index(config: Mapping[str, Any], seed: int | None, run_dir: Path) -> int | None:
    """Which of the run's seeds to take: `None` for a one-seed run, else its index."""
    first, count = int(config["seed"]), int(config.get("seeds", 1))
    trained = f"seed {first}" if count == 1 else f"seeds {first}..{first + count - 1}"
    if seed is None and count > 1:
        raise ValueError(f"{run_dir} trained {trained} together; pass seed= to choose one.")
    if seed is not None and not first <= seed < first + count:
        raise ValueError(f"{run_dir} trained {trained}, not seed {seed}.")
    return None if count == 1 else seed - first


def _with_alternatives(error: CorruptCheckpointError) -> CorruptCheckpointError:
    """`error`, saying which other checkpoints of the run there are to load instead."""
    others = [s for s in checkpoint_steps(error.directory) if s != error.step]
    hint = (f" The run kept other checkpoints, steps {others}: load one with step={others[-1]} "
            f"(zoo eval/video: --step {others[-1]})." if others else
            " The run kept no other checkpoint.")
    return CorruptCheckpointError(error.directory, error.step, error.problem + "." + hint)


def load_run(
    run_dir: str | os.PathLike, *, step: int | None = None, seed: int | None = None
) -> TrainedRun:
    """The agent of training checkpoint `step` (default: the latest) of a run directory.

    The run need not be finished: any checkpoint it kept loads (`recipes/offline.py
    --keep-checkpoints 0` keeps one per evaluation). For a `--seeds N` run pass the `seed` to
    take. Needs neither the dataset nor, for runs that recorded their sizes, the environment.
    Raises `FileNotFoundError` for a missing directory, `config.json` or checkpoint (listing
    the steps there are), `ValueError` for a seed the run did not train or a damaged
    `config.json`, and `CorruptCheckpointError` (naming the run's other checkpoints) for a
    checkpoint that does not read back as it was saved.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    config = _config(run_dir)
    index = _seed_index(config, seed, run_dir)
    recipe = _recipe(config, run_dir)
    obs_dim, action_dim = _sizes(config, recipe.env_name)
    seeds = None if index is None else int(config["seeds"])

    def skeleton() -> AbstractAgent:
        agent = recipe.build(obs_dim, action_dim, key=jr.key(0))
        return agent if seeds is None else stack_seeds([agent] * seeds)

    try:
        agent, step = restore_agent(run_dir, eqx.filter_eval_shape(skeleton), step=step,
                                    seeds=seeds)
    except CorruptCheckpointError as e:
        raise _with_alternatives(e) from None
    if index is not None:
        agent = select_seed(agent, index)
    return TrainedRun(
        agent=agent, recipe=recipe, step=step, seed=int(config["seed"]) + (index or 0),
        run_dir=run_dir, config=config,
    )  # fmt: skip

