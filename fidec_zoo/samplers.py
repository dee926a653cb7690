"""ODE integration strategies for flow policies.

A flow policy transports noise `x(0) = z` to an action `x(1)` along `dx/dt = v(s, x, t)`. How the
ODE is integrated is a strategy object held by `FlowPolicy`:

- `DiffraxSampler`: `diffrax.diffeqsolve` with any diffrax solver (Euler by default), fixed steps.
- `EulerSampler`: the references' loop `x <- x + v(s, x, i/N) / N` written as a `lax.scan`.

With Euler and the same number of steps both give the same actions (tested). Neither clips: the
policy clips once, at the end, as the references do.
"""

import abc
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["AbstractSampler", "EulerSampler", "DiffraxSampler", "VelocityFn"]

#: A velocity field already bound to its observation: `(x, t) -> dx/dt`.
VelocityFn = Callable[[Float[Array, "*shape"], Float[Array, ""]], Float[Array, "*shape"]]


class AbstractSampler(eqx.Module):
    """Integrates `dx/dt = field(x, t)` from `t=0` to `t=1`."""

    num_steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def integrate(self, field: VelocityFn, x0: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """Returns `x(1)` starting from `x(0) = x0`. `x0` may have any shape (e.g. a batch)."""


def _check_steps(num_steps: int) -> None:
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")


class EulerSampler(AbstractSampler):
    """Fixed-step explicit Euler as a `lax.scan` (times `i / num_steps`)."""

    num_steps: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        _check_steps(self.num_steps)

    def integrate(self, field: VelocityFn, x0: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        dt = 1.0 / self.num_steps

        def step(x, i):
            return x + field(x, i * dt) * dt, None

        x1, _ = jax.lax.scan(step, x0, jnp.arange(self.num_steps, dtype=x0.dtype))
        return x1


class DiffraxSampler(AbstractSampler):
    """`diffrax.diffeqsolve` over `t in [0, 1]` with `num_steps` fixed steps of `solver`.

    Runs with `throw=False` (no runtime error branch, so it costs what a scan costs) and a
    recursive-checkpoint adjoint sized to the number of steps, so gradients through it are cheap
    when solved once over a batched state. Any diffrax solver works, e.g. `diffrax.Heun()`.
    """

    solver: diffrax.AbstractSolver = diffrax.Euler()
    num_steps: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        _check_steps(self.num_steps)

    def integrate(self, field: VelocityFn, x0: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        term = diffrax.ODETerm(lambda t, x, args: field(x, t))
        solution = diffrax.diffeqsolve(
            term,
            self.solver,
            t0=0.0,
            t1=1.0,
            dt0=1.0 / self.num_steps,
            y0=x0,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=self.num_steps,
            adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=self.num_steps),
            throw=False,
        )
        return solution.ys[0]
