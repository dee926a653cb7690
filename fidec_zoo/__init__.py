"""fidec_zoo: composable offline RL with flow policies (FiDec, DeFlow, FQL and baselines).

Every policy is a transport map `a = T(s, z)`; FQL, DeFlow and FiDec differ in the *metric*
that limits how far the learned map may move from the behaviour flow. Set
`FIDEC_ZOO_TYPECHECK=1` to check every jaxtyping annotation at run time (trace time under jit).
"""

import contextlib
import os

__version__ = "0.1.0"

_typecheck = contextlib.nullcontext()
if os.environ.get("FIDEC_ZOO_TYPECHECK", "0") == "1":
    from jaxtyping import install_import_hook

    _typecheck = install_import_hook("fidec_zoo", "beartype.beartype")

with _typecheck:
    from . import constraints as constraints
    from . import critics as critics
    from . import metrics as metrics
    from . import nn as nn
    from . import policies as policies
    from . import samplers as samplers
    from . import types as types
    from ._load_shortcut import load as load
