"""BC flow: a flow-matching behaviour-cloning policy (no critic)."""

from jaxtyping import PRNGKeyArray

from ..dataset import Dataset
from ..policies import FlowPolicy
from ..types import Diagnostics, Scalar
from ._base import AbstractAgent, Step, flow_matching_loss


class FlowBC(AbstractAgent):
    """Behaviour cloning with a flow: minimises the flow-matching loss, acts with the flow."""

    flow: FlowPolicy

    @property
    def policy(self) -> FlowPolicy:
        return self.flow

    def loss(self, batch: Dataset, *, key: PRNGKeyArray, step: Step) -> tuple[Scalar, Diagnostics]:
        bc = flow_matching_loss(self.flow, batch.observations, batch.actions, key)
        return bc, {"bc_loss": bc}

    def update_targets(self, previous: AbstractAgent, step: Step) -> "FlowBC":
        return self
