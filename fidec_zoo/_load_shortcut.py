"""`fidec_zoo.load(name)`: a shortcut for `fidec_zoo.zoo.load` that imports the zoo (and Orbax)
only when called, so `import fidec_zoo` stays light."""

import os

from .policies import AbstractPolicy


def load(
    name: str, *, root: str | os.PathLike | None = None, verify: bool = True
) -> AbstractPolicy:
    """The pretrained policy `name`, ready to act; see `fidec_zoo.zoo.load`."""
    from .zoo import load as load_from_zoo

    return load_from_zoo(name, root=root, verify=verify)
