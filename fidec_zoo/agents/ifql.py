"""IFQL (flow IDQL) and IDQL-style diffusion: a behaviour-cloned generative policy plus IQL
values, acting by picking the best of N samples."""

import equinox as eqx
import jax
import jax.random as jr
from jaxtyping import PRNGKeyArray

from ..critics import ExpectileCritic
from ..dataset import Dataset
from ..policies import BestOfNPolicy, DiffusionPolicy, FlowPolicy
from ..types import Diagnostics, Scalar
from ._base import AbstractAgent, Step, flow_matching_loss


class IFQL(AbstractAgent):
    """A BC flow trained only by flow matching, IQL values, and best-of-`num_samples` acting."""

    flow: FlowPolicy
    values: ExpectileCritic
    num_samples: int = eqx.field(static=True)

    @property
    def policy(self) -> BestOfNPolicy:
        return BestOfNPolicy(self.flow, self.values.critic, self.num_samples)

    def loss(self, batch: Dataset, *, key: PRNGKeyArray, step: Step) -> tuple[Scalar, Diagnostics]:
        value_loss, diagnostics = self.values.loss(batch)
        bc = flow_matching_loss(self.flow, batch.observations, batch.actions, key)
        return value_loss + bc, {**diagnostics, "bc_loss": bc}

    def update_targets(self, previous: "IFQL", step: Step) -> "IFQL":
        return eqx.tree_at(lambda a: a.values, self, self.values.update_targets(previous.values))


class IDQL(AbstractAgent):
    """IDQL-style: a DDPM behaviour model (deterministic DDIM sampling), IQL values, and
    best-of-`num_samples` acting."""

    diffusion: DiffusionPolicy
    values: ExpectileCritic
    num_samples: int = eqx.field(static=True)

    @property
    def policy(self) -> BestOfNPolicy:
        return BestOfNPolicy(self.diffusion, self.values.critic, self.num_samples)

    def loss(self, batch: Dataset, *, key: PRNGKeyArray, step: Step) -> tuple[Scalar, Diagnostics]:
        value_loss, diagnostics = self.values.loss(batch)
        keys = jr.split(key, len(batch))
        bc = jax.vmap(lambda s, a, k: self.diffusion.noise_prediction_loss(s, a, key=k))(
            batch.observations, batch.actions, keys).mean()
        return value_loss + bc, {**diagnostics, "bc_loss": bc}

    def update_targets(self, previous: "IDQL", step: Step) -> "IDQL":
        return eqx.tree_at(lambda a: a.values, self, self.values.update_targets(previous.values))
