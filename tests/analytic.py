"""Closed-form models used by the tests: exact velocity / noise predictors of Gaussian data."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class GaussianVelocity(eqx.Module):
    """Exact flow-matching velocity of the linear path from N(0, I) to N(mu, sigma).

    With `C_t = (1-t)^2 I + t^2 Sigma`: `v(x, t) = mu + (t Sigma - (1-t) I) C_t^{-1} (x - t mu)`,
    and the marginal `p_t = N(t mu, C_t)` has score `-C_t^{-1} (x - t mu)`.
    """

    mu: Float[Array, " a"]
    sigma: Float[Array, "a a"]

    def cov(self, t):
        eye = jnp.eye(self.mu.shape[0])
        return (1 - t) ** 2 * eye + t**2 * self.sigma

    def score(self, x, t):
        return -jnp.linalg.solve(self.cov(t), x - t * self.mu)

    def __call__(self, obs, x, t):
        eye = jnp.eye(self.mu.shape[0])
        return self.mu + (t * self.sigma - (1 - t) * eye) @ jnp.linalg.solve(
            self.cov(t), x - t * self.mu
        )


class GaussianNoisePredictor(eqx.Module):
    """Exact `E[eps | x_u]` for data N(mu, diag(var)) under `x_u = sqrt(ab) a + sqrt(1-ab) eps`."""

    mu: Float[Array, " a"]
    var: Float[Array, " a"]

    def __call__(self, obs, x, u):
        from fidec_zoo.policies import alpha_bar

        ab = alpha_bar(u)
        return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * self.mu) / (ab * self.var + 1 - ab)
