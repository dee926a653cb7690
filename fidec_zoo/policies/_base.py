"""`AbstractPolicy`: every policy is a transport map `a = T(s, z)` from a state and a noise draw."""

import abc

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..types import Action, Noise, Obs, ObsLike


class AbstractPolicy(eqx.Module):
    """A deterministic map from `(obs, noise)` to an action in `[-1, 1]^action_dim`.

    All randomness lives in `noise ~ N(0, I)` of shape `noise_shape`, so a policy is a plain
    function that can be `vmap`ped, differentiated and checkpointed. Inputs are **unbatched**;
    batch with `jax.vmap(policy)(obs_batch, noise_batch)`.
    """

    obs_dim: eqx.AbstractVar[int]
    action_dim: eqx.AbstractVar[int]

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of the noise `z` consumed by `__call__`."""
        return (self.action_dim,)

    @abc.abstractmethod
    def __call__(self, obs: Obs, noise: Noise) -> Action:
        """Transports `noise` to an action for state `obs` (both unbatched)."""

    @eqx.filter_jit
    def sample(self, obs: ObsLike, *, key: PRNGKeyArray) -> Action:
        """Draws `noise ~ N(0, I)` with `key` and returns `self(obs, noise)`.

        Compiled (`eqx.filter_jit`): called step by step in an environment, an eager residual
        flow policy dispatches every op of its ODE solve, 800 to 1000 times slower than
        compiled on a 2-core CPU (`benchmarks/act_speed.py`). Inside `jit`/`vmap` it is
        inlined as usual. The noise takes the dtype `obs` has as
        a JAX array, so a float64 NumPy observation straight from an environment acts in
        float32 without a warning (unless x64 is on)."""
        obs = jnp.asarray(obs)
        dtype = obs.dtype if jnp.issubdtype(obs.dtype, jnp.floating) else None
        return self(obs, jr.normal(key, self.noise_shape, dtype=dtype))


class AbstractWrapperPolicy(AbstractPolicy):
    """A policy built around another policy, `base`, whose states and actions it shares.

    `ResidualPolicy` and `BestOfNPolicy` are both: they change which action is taken, not the
    spaces, so `obs_dim` and `action_dim` are read from `base`.
    """

    base: eqx.AbstractVar[AbstractPolicy]

    @property
    def obs_dim(self) -> int:
        return self.base.obs_dim

    @property
    def action_dim(self) -> int:
        return self.base.action_dim


def check_inputs(policy: AbstractPolicy, obs: Array, noise: Array) -> None:
    """Raises a `ValueError` naming the expected shapes when `obs`/`noise` do not fit `policy`.

    Shapes are static under `jit`, so this costs nothing at run time.
    """
    if obs.shape != (policy.obs_dim,):
        hint = ""
        if obs.ndim == 2 and obs.shape[1] == policy.obs_dim:
            hint = (
                " For a batch, use jax.vmap(policy)(obs, noise), or "
                "jax.vmap(lambda o, k: policy.sample(o, key=k))(obs, jax.random.split(key, "
                f"{obs.shape[0]}))."
            )
        raise ValueError(
            f"{type(policy).__name__} expects an unbatched observation of shape "
            f"({policy.obs_dim},), got {obs.shape}.{hint}"
        )
    if noise.shape != policy.noise_shape:
        raise ValueError(
            f"{type(policy).__name__} expects noise of shape {policy.noise_shape}, got "
            f"{noise.shape}."
        )


def clip_action(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Clips to the OGBench action box `[-1, 1]` (done once, on the final action)."""
    return jnp.clip(x, -1.0, 1.0)
