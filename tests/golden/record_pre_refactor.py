"""Records golden outputs from the pre-refactor main (commit in tests/golden/README.md)."""
import csv
import os
import sys
import tempfile
from pathlib import Path

import equinox as eqx
import jax
import jax.random as jr
import numpy as np

os.environ.setdefault("FIDEC_ZOO_DATA", "/tmp/golden_data")
from fidec_zoo import recipes, zoo
from fidec_zoo.data import load_ogbench
from fidec_zoo.train import fit

ENV = "cube-single-play-singletask-task2-v0"
out = {}
_, train, val = load_ogbench(ENV, episodes=2, seed=0)
out["data_obs_sum"] = np.asarray(train.observations).sum(dtype=np.float64)
for name in ("fql", "deflow", "fidec"):
    agent = recipes.make(name, obs_dim=train.obs_dim, action_dim=train.action_dim, env_name=ENV,
                         key=jr.key(0), hidden=(32, 32))
    p = recipes.config(name, env_name=ENV, hidden=(32, 32)).params
    d = Path(tempfile.mkdtemp())
    res = fit(agent, train, steps=50, run_dir=d, key=jr.key(1), batch_size=64, lr=p["lr"],
              grad_clip=p["grad_clip"], chunk=10, log_every=10, progress=False)
    leaves = jax.tree.leaves(eqx.filter(res.agent, eqx.is_array))
    for i, leaf in enumerate(leaves):
        out[f"{name}/leaf{i:03d}"] = np.asarray(leaf)
    with open(d / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for k in rows[0]:
        if k != "wall_time":
            out[f"{name}/metrics/{k}"] = np.array([float(r[k]) for r in rows])
    print(name, rows[-1])
policy = zoo.load("fidec/cube-single-play-singletask-task2-v0")
obs = jr.normal(jr.key(0), (8, policy.obs_dim))
z = jr.normal(jr.key(1), (8, policy.action_dim))
out["zoo/obs"] = np.asarray(obs)
out["zoo/z"] = np.asarray(z)
out["zoo/actions"] = np.asarray(jax.vmap(policy)(obs, z))
np.savez_compressed(sys.argv[1], **out)
print(len(out), "arrays")
