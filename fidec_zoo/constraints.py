"""How a metric's penalty enters the actor loss: a fixed weight, or a Lagrangian budget.

`constraint.loss(penalty)` returns the term to add to the actor loss and diagnostics. A
`Lagrangian` holds a trainable `log_alpha` that is updated by the same optimiser as everything
else, through the dual term `-log_alpha * sg(penalty - target)`: gradient descent raises
`log_alpha` while the penalty exceeds its budget and lowers it otherwise.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .types import Scalar

__all__ = ["AbstractConstraint", "FixedPenalty", "Lagrangian"]


class AbstractConstraint(eqx.Module):
    """Turns a (batch-mean) penalty into an actor-loss term."""

    @abc.abstractmethod
    def loss(self, penalty: Scalar) -> tuple[Scalar, dict[str, Scalar]]:
        """The loss term for `penalty` and a dict of scalars to log."""


class FixedPenalty(AbstractConstraint):
    """`alpha * penalty` with a fixed weight (FQL's distillation coefficient)."""

    alpha: float = eqx.field(static=True)  # the penalty's fixed weight

    def __check_init__(self):
        if self.alpha < 0:
            raise ValueError(f"FixedPenalty alpha must be non-negative, got {self.alpha}.")

    def loss(self, penalty: Scalar) -> tuple[Scalar, dict[str, Scalar]]:
        return self.alpha * penalty, {"alpha": jnp.asarray(self.alpha, penalty.dtype)}


class Lagrangian(AbstractConstraint):
    """Keeps `penalty <= target` with a learned multiplier `alpha = exp(log_alpha)`.

    Loss: `sg(alpha) * penalty - log_alpha * sg(penalty - target)` (DeFlow/FiDec; no clamp on
    alpha). **Arguments:** `target` (the budget delta), `init_alpha` (10, as the FiDec code).
    """

    log_alpha: Float[Array, ""]
    target: float = eqx.field(static=True)  # the budget: keep the mean penalty below it
    init_alpha: float = eqx.field(static=True)  # the multiplier's initial value

    def __init__(self, target: float, init_alpha: float = 10.0):
        if target <= 0 or init_alpha <= 0:
            raise ValueError("Lagrangian target and init_alpha must be positive.")
        self.target, self.init_alpha = target, init_alpha
        self.log_alpha = jnp.asarray(math.log(init_alpha), dtype=jnp.float32)

    @property
    def alpha(self) -> Scalar:
        return jnp.exp(self.log_alpha)

    def loss(self, penalty: Scalar) -> tuple[Scalar, dict[str, Scalar]]:
        sg = jax.lax.stop_gradient
        dual = -self.log_alpha * sg(penalty - self.target)
        return sg(self.alpha) * penalty + dual, {"alpha": sg(self.alpha), "dual_loss": sg(dual)}
