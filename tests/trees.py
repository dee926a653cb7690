"""Helpers shared by the training tests: pytree leaves, their comparison, and run-dir CSVs."""

import csv
from pathlib import Path

import equinox as eqx
import jax
import numpy as np


def arrays(tree) -> list:
    """The array leaves of a pytree (modules included), in tree order."""
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def assert_close_trees(a, b, *, rtol: float, atol: float) -> None:
    """Every array leaf of `a` equals the matching leaf of `b` within the tolerances."""
    for x, y in zip(arrays(a), arrays(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
