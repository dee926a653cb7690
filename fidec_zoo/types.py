"""jaxtyping aliases shared by every module of `fidec_zoo`.

Modules act on **unbatched** inputs (as in Equinox); batching is `jax.vmap`. The aliases name the
shapes so that a wrong shape fails with a message naming the expected one when runtime checking is
on (always in the test-suite, and for users with `FIDEC_ZOO_TYPECHECK=1`).
"""

from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

Obs: TypeAlias = Float[Array, " obs_dim"]
#: An observation as an environment returns it (float64 NumPy, say): what `policy.sample` takes.
ObsLike: TypeAlias = Float[ArrayLike, " obs_dim"]
Action: TypeAlias = Float[Array, " action_dim"]
Noise: TypeAlias = Float[Array, " action_dim"]
BatchObs: TypeAlias = Float[Array, "batch obs_dim"]
BatchAction: TypeAlias = Float[Array, "batch action_dim"]
Matrix: TypeAlias = Float[Array, "action_dim action_dim"]
Scalar: TypeAlias = Float[Array, ""]
Time: TypeAlias = Float[Array, ""] | float
Key: TypeAlias = PRNGKeyArray
#: Scalar diagnostics a loss reports for logging (`critic_loss`, `q_mean`, ...), by name. Not to
#: be confused with `fidec_zoo.metrics`, the geometries that measure how far an action moves.
Diagnostics: TypeAlias = dict[str, Scalar]

__all__ = ["Obs", "ObsLike", "Action", "Noise", "BatchObs", "BatchAction", "Matrix", "Scalar",
           "Time", "Key", "Diagnostics"]
