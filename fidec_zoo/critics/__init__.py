"""Critics: the Q- and value networks, and the critic components that train them.

- Networks: `QEnsemble` (independent Q-functions `Q_j(s, a)`), `ValueNet` (`V(s)`).
- For the flow Q-learning families (FQL, DeFlow, FiDec): `AbstractCritic`, the contract they use;
  `TwinCritic`, which bootstraps on the agent's own next actions; `FixedCritic`, a known Q that is
  never trained.
- For IQL, IFQL and IDQL: `ExpectileCritic` (expectile values, no out-of-dataset action).
- Shared TD pieces: `aggregate` (reduce the ensemble) and `td_loss`.

Target copies are `fidec_zoo.nn.Frozen` modules moved by `fidec_zoo.nn.polyak`.
"""

from ._expectile import ExpectileCritic as ExpectileCritic
from ._networks import QEnsemble as QEnsemble
from ._networks import ValueNet as ValueNet
from ._td import aggregate as aggregate
from ._td import td_loss as td_loss
from ._twin import AbstractCritic as AbstractCritic
from ._twin import FixedCritic as FixedCritic
from ._twin import TwinCritic as TwinCritic
