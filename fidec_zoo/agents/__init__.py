"""Offline-RL agents composed from policies, critics, metrics and constraints.

| agent | policy | learning signal |
|---|---|---|
| `BC` | Gaussian | maximum likelihood |
| `IQL` | Gaussian | expectile values + advantage-weighted regression |
| `ReBRAC` | tanh Gaussian (deterministic) | TD3+BC with behaviour penalties |
| `IDQL` | DDIM diffusion, best of N | diffusion BC + expectile values |
| `FlowBC` | flow | flow matching |
| `IFQL` | flow, best of N | flow matching + expectile values |
| `OneStepFlowQL` | one-step map | flow matching + Q + metric-constrained distillation (FQL) |
| `ResidualFlowQL` | flow + residual | flow matching + Q + constrained residual (DeFlow, FiDec) |

The critics they hold are in `fidec_zoo.critics`; `Frozen` and `polyak` in `fidec_zoo.nn`.
"""

from ._base import AbstractAgent as AbstractAgent
from ._base import flow_matching_loss as flow_matching_loss
from ._base import trainable as trainable
from .bc import BC as BC
from .flow_bc import FlowBC as FlowBC
from .flow_ql import OneStepFlowQL as OneStepFlowQL
from .flow_ql import ResidualFlowQL as ResidualFlowQL
from .ifql import IDQL as IDQL
from .ifql import IFQL as IFQL
from .iql import IQL as IQL
from .rebrac import ReBRAC as ReBRAC
