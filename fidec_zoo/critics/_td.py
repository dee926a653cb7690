"""Temporal-difference pieces shared by the critics (and ReBRAC, which holds its own Q)."""

import jax
from jaxtyping import Array, Float

from ..types import Scalar


def aggregate(q: Float[Array, "b num"], how: str) -> Float[Array, " b"]:
    """Reduces an ensemble of Q-values: `"mean"` or `"min"` over members."""
    if how == "mean":
        return q.mean(-1)
    if how == "min":
        return q.min(-1)
    raise ValueError(f"Unknown q_agg {how!r}; valid options are ['mean', 'min'].")


def td_loss(
    q: Float[Array, "b num"], target: Float[Array, " b"], *, sum_members: bool = False
) -> Scalar:
    """Squared TD error against a (stopped) target; averaged over members unless `sum_members`
    (IQL sums its two heads, the flow agents average them)."""
    err = (q - jax.lax.stop_gradient(target)[:, None]) ** 2
    return err.sum(-1).mean() if sum_members else err.mean()
