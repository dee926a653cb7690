"""BC: Gaussian behaviour cloning (the references' Gaussian actor, maximum likelihood)."""

import jax
from jaxtyping import PRNGKeyArray

from ..dataset import Dataset
from ..policies import GaussianPolicy
from ..types import Diagnostics, Scalar
from ._base import AbstractAgent, Step


class BC(AbstractAgent):
    """Maximises `log pi(a | s)` of dataset actions; acts with the mean (temperature 0)."""

    actor: GaussianPolicy

    @property
    def policy(self) -> GaussianPolicy:
        return self.actor

    def loss(self, batch: Dataset, *, key: PRNGKeyArray, step: Step) -> tuple[Scalar, Diagnostics]:
        log_prob = jax.vmap(self.actor.log_prob)(batch.observations, batch.actions)
        loss = -log_prob.mean()
        return loss, {"actor_loss": loss}

    def update_targets(self, previous: AbstractAgent, step: Step) -> "BC":
        return self
