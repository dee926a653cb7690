"""`DiffusionPolicy`: a DDPM noise-prediction model sampled with deterministic DDIM."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..types import Action, Noise, Obs, Scalar
from ._base import AbstractPolicy, check_inputs, clip_action
from ._flow import infer_dims

# Variance-preserving schedule (as IDQL): beta_k = 1 - exp(-b_min/T - (b_max-b_min)(2k-1)/(2T^2)),
# whose cumulative product has the closed form below; alpha_bar(1) = exp(-5.05) ~ 0.0064.
_BETA_MIN, _BETA_MAX = 0.1, 10.0


def alpha_bar(u: Float[Array, "*shape"] | float) -> Float[Array, "*shape"]:
    """Cumulative signal fraction `alpha_bar` at diffusion time `u = k / T` in `[0, 1]`."""
    u = jnp.asarray(u)
    return jnp.exp(-_BETA_MIN * u - 0.5 * (_BETA_MAX - _BETA_MIN) * u**2)


class DiffusionPolicy(AbstractPolicy):
    """`a = DDIM(z)`: deterministic (eta = 0) DDIM from `x_T = z` with a noise predictor.

    Training is DDPM's noise-prediction loss (`noise_prediction_loss`). Sampling uses
    `sample_steps` evenly spaced steps of the `diffusion_steps` schedule; with eta = 0 the map
    from `z` is a function, so this is a transport map like every other policy. One DDIM step
    returns the model's estimate of `E[a | x_T = z]`.

    **Arguments:**

    - `noise_net`: a module `noise_net(obs, x, u) -> eps` with `u = k / T`, e.g.
      `ActionField(obs_dim, action_dim, key=key)`.
    - `diffusion_steps`: `T` of the training schedule.
    - `sample_steps`: DDIM steps (default `T`).
    - `clip_denoised`: clip each predicted clean action to `[-1, 1]` during sampling (IDQL).
    - `obs_dim`, `action_dim`: needed only when `noise_net` is not an `ActionField`.
    """

    noise_net: eqx.Module
    obs_dim: int = eqx.field(static=True)
    action_dim: int = eqx.field(static=True)
    diffusion_steps: int = eqx.field(static=True)
    sample_steps: int = eqx.field(static=True)
    clip_denoised: bool = eqx.field(static=True)

    def __init__(
        self,
        noise_net: eqx.Module,
        *,
        diffusion_steps: int = 10,
        sample_steps: int | None = None,
        clip_denoised: bool = True,
        obs_dim: int | None = None,
        action_dim: int | None = None,
    ):
        self.noise_net = noise_net
        self.obs_dim, self.action_dim = infer_dims(noise_net, obs_dim, action_dim)
        self.diffusion_steps = diffusion_steps
        self.sample_steps = diffusion_steps if sample_steps is None else sample_steps
        self.clip_denoised = clip_denoised
        if not 1 <= self.sample_steps:
            raise ValueError(f"sample_steps must be >= 1, got {self.sample_steps}.")

    def noise_prediction_loss(self, obs: Obs, action: Action, *, key: PRNGKeyArray) -> Scalar:
        """DDPM loss `mean((eps_hat(s, x_k, k/T) - eps)^2)` with `k ~ U{1..T}`."""
        k_key, eps_key = jr.split(key)
        u = jr.randint(k_key, (), 1, self.diffusion_steps + 1) / self.diffusion_steps
        eps = jr.normal(eps_key, action.shape, action.dtype)
        ab = alpha_bar(u)
        x = jnp.sqrt(ab) * action + jnp.sqrt(1 - ab) * eps
        return jnp.mean((self.noise_net(obs, x, u) - eps) ** 2)

    def __call__(self, obs: Obs, noise: Noise) -> Action:
        check_inputs(self, obs, noise)
        times = jnp.linspace(1.0, 0.0, self.sample_steps + 1, dtype=noise.dtype)

        def step(x, u_pair):
            u, u_next = u_pair
            ab, ab_next = alpha_bar(u), alpha_bar(u_next)
            eps = self.noise_net(obs, x, u)
            x0 = (x - jnp.sqrt(1 - ab) * eps) / jnp.sqrt(ab)
            if self.clip_denoised:
                x0 = clip_action(x0)
            return jnp.sqrt(ab_next) * x0 + jnp.sqrt(1 - ab_next) * eps, None

        x, _ = jax.lax.scan(step, noise, (times[:-1], times[1:]))
        return clip_action(x)
