"""`Evaluator`: when and how a policy is evaluated in its environment during training."""

import jax.random as jr
from jaxtyping import PRNGKeyArray

from ..configs import EvalConfig
from ..envs import EvalResult, evaluate
from ..policies import AbstractPolicy

__all__ = ["Evaluator"]


class Evaluator:
    """Evaluates a policy for `episodes` episodes in `env_name` every `every` updates and at the
    end (`every=None`: at the end only), stepping the envs in `workers` processes.

    Evaluation `step` draws its episode seed from `fold_in(key, step)`, so a resumed run
    evaluates on the episodes an uninterrupted one would.
    """

    def __init__(self, env_name: str, *, every: int | None = None, episodes: int = 50,
                 workers: int = 1):
        self.env_name = env_name
        self.config = EvalConfig(every=every, episodes=episodes, workers=workers)

    @classmethod
    def from_config(cls, env_name: str, config: EvalConfig) -> "Evaluator":
        return cls(env_name, every=config.every, episodes=config.episodes,
                   workers=config.workers)

    def due(self, step: int, last: int) -> bool:
        """Whether step `step` of a run of `last` updates is evaluated."""
        every = self.config.every
        return step == last or bool(every and step % every == 0)

    def __call__(self, policy: AbstractPolicy, key: PRNGKeyArray, step: int) -> EvalResult:
        seed = int(jr.randint(jr.fold_in(key, step), (), 0, 2**31 - 1))
        return evaluate(policy, self.env_name, episodes=self.config.episodes, seed=seed,
                        workers=self.config.workers)
