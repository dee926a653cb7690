"""Typed, serialisable configuration: what to build and how to train it.

- Agent configs (`ResidualFlowQLConfig`, `OneStepFlowQLConfig`, ...): one frozen dataclass per
  agent family, with `build(obs_dim, action_dim, key=key)`. Compose your own by setting fields,
  metric and constraint objects included.
- Run configs: `OptimConfig` (optax Adam, clipping, schedule), `TrainConfig`, `EvalConfig`,
  `DataConfig`, `OnlineConfig` (online fine-tuning).
- `to_json`/`from_json` (and `to_dict`/`from_dict`): exact round trips of any of these, and of
  your own dataclasses (a custom metric with its options), by import path.

A named recipe (`fidec_zoo.recipes.config("fidec", env_name=...)`) is a `Recipe`: an agent
config and a `TrainConfig`, filled in from the reference code's per-environment tables.
"""

from ._agents import AbstractAgentConfig as AbstractAgentConfig
from ._agents import BCConfig as BCConfig
from ._agents import FlowBCConfig as FlowBCConfig
from ._agents import IDQLConfig as IDQLConfig
from ._agents import IFQLConfig as IFQLConfig
from ._agents import IQLConfig as IQLConfig
from ._agents import OneStepFlowQLConfig as OneStepFlowQLConfig
from ._agents import ReBRACConfig as ReBRACConfig
from ._agents import ResidualFlowQLConfig as ResidualFlowQLConfig
from ._recipe import Recipe as Recipe
from ._serial import ConfigError as ConfigError
from ._serial import constructor_arguments as constructor_arguments
from ._serial import from_dict as from_dict
from ._serial import from_json as from_json
from ._serial import to_dict as to_dict
from ._serial import to_json as to_json
from ._training import DataConfig as DataConfig
from ._training import EvalConfig as EvalConfig
from ._training import OnlineConfig as OnlineConfig
from ._training import OptimConfig as OptimConfig
from ._training import TrainConfig as TrainConfig
