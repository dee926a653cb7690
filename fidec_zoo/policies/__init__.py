"""Policies as transport maps `a = T(s, z)`: one interface for every family."""

from ._base import AbstractPolicy as AbstractPolicy
from ._base import check_inputs as check_inputs
from ._base import clip_action as clip_action
from ._best_of_n import BestOfNPolicy as BestOfNPolicy
from ._diffusion import DiffusionPolicy as DiffusionPolicy
from ._diffusion import alpha_bar as alpha_bar
from ._fields import ActionField as ActionField
from ._flow import FlowPolicy as FlowPolicy
from ._gaussian import GaussianPolicy as GaussianPolicy
from ._onestep import OneStepPolicy as OneStepPolicy
from ._residual import ResidualPolicy as ResidualPolicy
