"""`Recipe`: a named agent config together with the training config it is meant to run with."""

import dataclasses

from jaxtyping import PRNGKeyArray

from ..agents import AbstractAgent
from ._agents import AbstractAgentConfig
from ._training import TrainConfig

__all__ = ["Recipe"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What `fidec_zoo.recipes.config` resolves: the agent to build and how to train it.

    `name` is the recipe it came from (`"fidec"`, or your own label), `env_name` and `preset`
    the environment and size preset whose values filled it in, and `hparams` the set of values
    (`"code"`: the reference code's flags, `"paper"`: the FiDec paper's table; `None` for a
    config composed by hand). `fit` trains with `train` unless
    told otherwise, so a recipe's clipping or batch size is never lost.
    """

    name: str
    agent: AbstractAgentConfig
    train: TrainConfig = TrainConfig()
    env_name: str | None = None
    preset: str | None = None
    hparams: str | None = None

    def __post_init__(self):
        if not isinstance(self.agent, AbstractAgentConfig):
            raise TypeError(f"Recipe.agent must be an agent config (fidec_zoo.configs), got "
                            f"{type(self.agent).__name__}.")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"Recipe.train must be a TrainConfig, got {type(self.train).__name__}.")

    def build(self, obs_dim: int, action_dim: int, *, key: PRNGKeyArray) -> AbstractAgent:
        """The agent of this recipe, freshly initialised."""
        return self.agent.build(obs_dim, action_dim, key=key)

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)
