"""`GaussianPolicy`: the references' Gaussian `Actor` (BC, IQL, ReBRAC) as a transport map."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import MLP, glorot_linear
from ..types import Action, Noise, Obs, Scalar
from ._base import AbstractPolicy, check_inputs, clip_action

_LOG_STD_RANGE = (-5.0, 2.0)


class GaussianPolicy(AbstractPolicy):
    """`a = clip(squash(mean(s) + temperature * std(s) * z))`.

    The trunk is an MLP with the activation after its last layer too; the mean head is
    Glorot-initialised with a small scale (1e-2). With `const_std=True` (the reference default)
    the standard deviation is 1. `temperature=0` (default) acts with the mean, which is how the
    references evaluate Gaussian agents; training uses `log_prob` or the mean directly.

    **Arguments:**

    - `obs_dim`, `action_dim`: sizes.
    - `hidden`: trunk widths.
    - `layer_norm`: LayerNorm in the trunk.
    - `tanh_squash`: squash the Gaussian with `tanh` (ReBRAC's deterministic actor).
    - `const_std`: fixed unit standard deviation; otherwise a learned state-independent `log_std`.
    - `temperature`: scale of the acting noise.
    - `key`: a JAX PRNG key. (Keyword only argument.)
    """

    trunk: MLP
    mean_head: eqx.nn.Linear
    log_std: Float[Array, " action_dim"] | None
    obs_dim: int = eqx.field(static=True)
    action_dim: int = eqx.field(static=True)
    tanh_squash: bool = eqx.field(static=True)
    temperature: float = eqx.field(static=True)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: tuple[int, ...] = (512, 512, 512, 512),
        *,
        layer_norm: bool = False,
        tanh_squash: bool = False,
        const_std: bool = True,
        temperature: float = 0.0,
        key: PRNGKeyArray,
    ):
        trunk_key, head_key = jr.split(key)
        self.trunk = MLP(
            obs_dim, hidden[-1], hidden[:-1], layer_norm=layer_norm, activate_final=True,
            key=trunk_key,
        )
        self.mean_head = glorot_linear(hidden[-1], action_dim, scale=1e-2, key=head_key)
        self.log_std = None if const_std else jnp.zeros(action_dim)
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.tanh_squash = tanh_squash
        self.temperature = temperature

    def mean_and_log_std(self, obs: Obs) -> tuple[Action, Action]:
        """Pre-squash mean and (clipped) log standard deviation."""
        mean = self.mean_head(self.trunk(obs))
        log_std = jnp.zeros_like(mean) if self.log_std is None else self.log_std
        return mean, jnp.clip(log_std, *_LOG_STD_RANGE)

    def log_prob(self, obs: Obs, action: Action) -> Scalar:
        """Log-density of `action` (tanh change of variables included when squashing)."""
        mean, log_std = self.mean_and_log_std(obs)
        if self.tanh_squash:
            action = jnp.clip(action, -1 + 1e-6, 1 - 1e-6)
            u = jnp.arctanh(action)
            log_jac = jnp.sum(jnp.log1p(-(action**2)))
        else:
            u, log_jac = action, 0.0
        z = (u - mean) / jnp.exp(log_std)
        return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)) - log_jac

    def mode(self, obs: Obs) -> Action:
        """The deterministic action (temperature 0)."""
        mean, _ = self.mean_and_log_std(obs)
        return clip_action(jnp.tanh(mean) if self.tanh_squash else mean)

    def __call__(self, obs: Obs, noise: Noise) -> Action:
        check_inputs(self, obs, noise)
        mean, log_std = self.mean_and_log_std(obs)
        u = mean + self.temperature * jnp.exp(log_std) * noise
        return clip_action(jnp.tanh(u) if self.tanh_squash else u)
