"""A run directory in `recipes/offline.py`'s layout without training, for the tests of what
reads one (`zoo.register_run`, `zoo.load_run`, the zoo CLI, the docs' examples)."""

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import jax.random as jr

from fidec_zoo import checkpoint
from fidec_zoo.configs import Recipe, to_dict
from fidec_zoo.offline import CONFIG_FORMAT, default_job, identity
from fidec_zoo.updates import initial_state

RUN_SEED = 3  # the training seed the fake run records


def fake_run(recipe: Recipe, run: Path, agent_at: dict, seeds: int | None = None) -> int:
    """Writes `run` with one checkpoint per `agent_at` entry (step -> agent of `recipe`, `None`
    for the last step; agents stacked over `seeds` for a `--seeds` run), config.json,
    summary.json and an eval.csv with rows at step 10 (25%) and the last step (50%). A
    `--seeds` run has, as offline.py writes it, one eval.csv per `seed_<i>` (seed i's final
    success is 50% + i%) and the per-seed final results in summary.json's "seeds". Returns the
    run's length."""
    steps = recipe.train.steps
    key = jr.key(7) if seeds is None else jr.split(jr.key(7), seeds)
    optimiser = recipe.train.optimiser.make(steps)
    for step, agent in agent_at.items():
        step = steps if step is None else step
        state = initial_state(agent, optimiser, key, seeds)
        checkpoint.save_checkpoint(
            run / "checkpoints",
            step,
            dict(state, step=jnp.asarray(step)),
            metadata={"wall_time": 12.5, "train": to_dict(recipe.train)},
            max_to_keep=None,
        )
    policy = next(iter(agent_at.values())).policy
    job = dataclasses.replace(
        default_job(recipe.name, recipe.env_name, recipe.preset or "cpu",
                    hparams=recipe.hparams), agent=recipe.agent,
        train=recipe.train, seed=RUN_SEED, seeds=seeds or 1)
    config = {
        "format": CONFIG_FORMAT,
        "job": to_dict(job),
        "identity": identity(job),
        "seed": RUN_SEED,
        "env": recipe.env_name,
        "obs_dim": policy.obs_dim,
        "action_dim": policy.action_dim,
        "argv": ["--steps", "1"],
        "dataset": {"source": "generated", "episodes": 4, "seed": 0, "path": "/x/d.npz"},
        "versions": {"fidec_zoo": "0.1.0"},
        "sessions": [{"started": "2026-01-01T00:00:00+00:00", "from_step": 0,
                      "argv": ["--steps", "1"], "versions": {"fidec_zoo": "0.1.0"}}],
        **({} if seeds is None else {"seeds": seeds}),
    }
    (run / "config.json").write_text(json.dumps(config, default=list))
    summary = {"steps": steps, "metric": None, "train_wall_time_s": 12.5, "device": "cpu"}
    log_dirs = [run] if seeds is None else [run / f"seed_{i}" for i in range(seeds)]
    for i, log_dir in enumerate(log_dirs):
        log_dir.mkdir(exist_ok=True)
        (log_dir / "eval.csv").write_text(
            f"step,success,episodes,wall_time\n10,0.25,50,3.5\n{steps},{0.5 + i / 100},50,12.5\n"
        )
    if seeds is not None:
        summary["seeds"] = [{"seed": RUN_SEED + i, "success": 0.5 + i / 100,
                             "behaviour_flow_success": 0.0} for i in range(seeds)]
    (run / "summary.json").write_text(json.dumps(summary))
    return steps
