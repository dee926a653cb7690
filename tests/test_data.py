"""fidec_zoo.data: offline generation, official-format files, loading and the Dataset pytree.

Datasets here are tiny (2 train + 1 val episodes), generated once per session.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_zoo.data import (
    EXPERT_ONLY_FAMILIES,
    SUPPORTED_DATASETS,
    Dataset,
    DatasetFileError,
    dataset_provenance,
    default_cache_dir,
    generate_ogbench,
    load_ogbench,
)

EPISODES = 2
STEPS = 1001
# dataset -> (single-task env, obs dim, qpos dim, qvel dim, buttons, subgoals)
FAMILIES = {
    "cube-single-play-v0": ("cube-single-play-singletask-v0", 28, 21, 20, 0, 1),
    "cube-double-play-v0": ("cube-double-play-singletask-v0", 37, 28, 26, 0, 2),
    "scene-play-v0": ("scene-play-singletask-v0", 40, 25, 24, 2, 5),
    "puzzle-3x3-play-v0": ("puzzle-3x3-play-singletask-v0", 55, 23, 23, 9, 9),
    "puzzle-4x4-play-v0": ("puzzle-4x4-play-singletask-v0", 83, 30, 30, 16, 16),
    "pointmaze-medium-navigate-v0": ("pointmaze-medium-navigate-singletask-v0", 2, 2, 2, 0, 1),
}


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """`generated(name, seed=0, workers=1, tag="")` -> directory; each generated once."""
    root = tmp_path_factory.mktemp("fidec_data")
    made = {}

    def get(name, seed=0, workers=1, tag=""):
        key = (name, seed, workers, tag)
        if key not in made:
            out = root / f"{name}-s{seed}-w{workers}{tag}"
            generate_ogbench(name, episodes=EPISODES, seed=seed, out_dir=out, workers=workers)
            made[key] = out
        return made[key]

    return get


def _arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_files_match_official_format(generated, name):
    _, obs_dim, nq, nv, buttons, _ = FAMILIES[name]
    out = generated(name)
    for fname, episodes in ((f"{name}.npz", EPISODES), (f"{name}-val.npz", 1)):
        a = _arrays(out / fname)
        keys = ["observations", "actions", "terminals", "qpos", "qvel"]
        assert list(a) == keys + (["button_states"] if buttons else [])
        n = episodes * STEPS
        assert a["observations"].shape == (n, obs_dim) and a["observations"].dtype == np.float32
        assert a["actions"].shape == (n, 2 if "maze" in name else 5)
        assert a["actions"].dtype == np.float32 and np.abs(a["actions"]).max() <= 1.0
        assert a["terminals"].dtype == np.bool_
        ends = np.zeros(n, bool)
        ends[STEPS - 1 :: STEPS] = True
        np.testing.assert_array_equal(a["terminals"], ends)
        assert a["qpos"].shape == (n, nq) and a["qpos"].dtype == np.float32
        assert a["qvel"].shape == (n, nv) and a["qvel"].dtype == np.float32
        if buttons:
            assert a["button_states"].shape == (n, buttons)
            assert a["button_states"].dtype == np.int64
    prov = json.loads((out / f"{name}.provenance.json").read_text())
    assert prov["source"] == "generated" and prov["episodes"] == EPISODES
    assert prov["val_episodes"] == 1 and prov["seed"] == 0
    assert prov["transitions"] == {"train": EPISODES * (STEPS - 1), "val": STEPS - 1}
    assert {"ogbench", "mujoco", "numpy"} <= set(prov["versions"])
    if "maze" not in name:
        assert prov["sanity"]["train+val"]["oracle_success_rate"] > 0.5
    assert not [p for p in os.listdir(out) if ".tmp" in p]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_load_singletask_rewards_and_masks(generated, name):
    env_name, obs_dim, *_, subgoals = FAMILIES[name]
    env, train, val = load_ogbench(env_name, dataset_dir=generated(name), generate=False)
    assert env.observation_space.shape == (obs_dim,)
    assert len(train) == EPISODES * (STEPS - 1) and len(val) == STEPS - 1
    assert train.obs_dim == obs_dim and train.action_dim == env.action_space.shape[0]
    d = train.to_numpy()
    assert all(v.dtype == np.float32 for v in d.values())
    r, m = d["rewards"], d["masks"]
    assert (r <= 0).all() and (r >= -subgoals).all() and np.array_equal(r, np.round(r))
    assert set(np.unique(m)) <= {0.0, 1.0}
    np.testing.assert_array_equal(r == 0, m == 0)  # solved <=> all subgoals met
    assert np.abs(d["actions"]).max() <= 1 - 1e-5
    t = d["terminals"]
    assert t.sum() == EPISODES and t[-1] == 1
    inner = np.flatnonzero(t[:-1] == 0)
    np.testing.assert_array_equal(d["next_observations"][inner], d["observations"][inner + 1])
    np.testing.assert_array_equal(d["next_actions"][inner], d["actions"][inner + 1])
    last = np.flatnonzero(t == 1)
    np.testing.assert_array_equal(d["next_actions"][last], d["actions"][last])


def test_cube_masks_are_zero_exactly_on_solved_states(generated):
    out = generated("cube-single-play-v0")
    raw = _arrays(out / "cube-single-play-v0.npz")
    keep = ~raw["terminals"]  # OGBench drops each episode's last row
    for task in range(1, 6):
        env, train, _ = load_ogbench(
            f"cube-single-play-singletask-task{task}-v0", dataset_dir=out, generate=False
        )
        env.reset(seed=0)
        goal = env.unwrapped.cur_task_info["goal_xyzs"][0]
        solved = np.linalg.norm(raw["qpos"][keep, 14:17] - goal, axis=-1) <= 0.04
        np.testing.assert_array_equal(np.asarray(train.masks) == 0, solved)


def test_same_seed_gives_identical_arrays(generated):
    a = _arrays(generated("cube-single-play-v0") / "cube-single-play-v0.npz")
    b = _arrays(generated("cube-single-play-v0", tag="-again") / "cube-single-play-v0.npz")
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_interrupted_generation_resumes_from_finished_blocks(generated, tmp_path, monkeypatch):
    from fidec_zoo.data import _generate

    monkeypatch.setattr(_generate, "BLOCK_EPISODES", 1)
    real, calls = _generate.collect_episodes, []

    def failing(name, seed, indices, on_episode=None):
        calls.append(indices[0])
        if indices[0] == 2 and len(calls) == 3:
            raise KeyboardInterrupt  # interrupted while generating the third episode
        return real(name, seed, indices, on_episode)

    monkeypatch.setattr(_generate, "collect_episodes", failing)
    name = "cube-single-play-v0"
    with pytest.raises(KeyboardInterrupt):
        generate_ogbench(name, episodes=EPISODES, out_dir=tmp_path)
    assert not (tmp_path / f"{name}.npz").exists()
    generate_ogbench(name, episodes=EPISODES, out_dir=tmp_path)
    assert calls == [0, 1, 2, 2]  # the rerun only generated what was missing
    reference = generated(name)
    for fname in (f"{name}.npz", f"{name}-val.npz"):
        a, b = _arrays(tmp_path / fname), _arrays(reference / fname)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(p.name.endswith(".parts") for p in tmp_path.iterdir())


def test_different_seed_differs(generated):
    name = "pointmaze-medium-navigate-v0"
    a = _arrays(generated(name, seed=0) / f"{name}.npz")
    b = _arrays(generated(name, seed=1) / f"{name}.npz")
    assert not np.array_equal(a["observations"], b["observations"])


def test_two_workers_equal_one_worker_and_load(generated):
    one, two = generated("cube-single-play-v0"), generated("cube-single-play-v0", workers=2)
    for fname in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz"):
        a, b = _arrays(one / fname), _arrays(two / fname)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{fname}:{k}")
    _, train, _ = load_ogbench("cube-single-play-singletask-v0", dataset_dir=two, generate=False)
    assert len(train) == EPISODES * (STEPS - 1)


def test_complete_files_are_reused(generated):
    out = generated("pointmaze-medium-navigate-v0")
    train = out / "pointmaze-medium-navigate-v0.npz"
    before = train.stat().st_mtime_ns
    path = generate_ogbench("pointmaze-medium-navigate-v0", episodes=EPISODES, out_dir=out)
    assert path == train and train.stat().st_mtime_ns == before


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_key"])
def test_damaged_file_raises_error_naming_it(generated, tmp_path, damage):
    out = _copy(generated("cube-single-play-v0"), tmp_path / "d")
    path = out / "cube-single-play-v0.npz"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # corrupt compressed payload in the middle of the file
        mid = len(data) // 3
        path.write_bytes(
            data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]
        )
    else:
        a = _arrays(path)
        del a["qpos"]
        with open(path, "wb") as f:
            np.savez_compressed(f, **a)
    with pytest.raises(DatasetFileError, match="cube-single-play-v0.npz"):
        load_ogbench("cube-single-play-singletask-v0", dataset_dir=out, generate=False)


def test_command_line_lists_shows_and_refuses(generated, tmp_path, capsys):
    """`python -m fidec_zoo.data list|info|generate`: what it prints, a damaged file reported
    as such, and bad input refused with the reason (exit 2)."""
    from fidec_zoo.data.__main__ import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUPPORTED_DATASETS) and "antmaze-*" in out
    directory = _copy(generated("cube-single-play-v0"), tmp_path / "d")
    assert main(["info", str(directory)]) == 0
    out = capsys.readouterr().out
    assert f"episodes        {EPISODES}" in out and '"seed": 0' in out and "CORRUPT" not in out
    path = directory / "cube-single-play-v0.npz"
    path.write_bytes(path.read_bytes()[:1000])
    assert main(["info", str(path)]) == 0
    assert "CORRUPT" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "empty")]) == 1
    assert "no .npz files" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "missing does not exist" in capsys.readouterr().err
    assert main(["generate", "cube-sextuple-play-v0", "--out-dir", str(tmp_path)]) == 2
    assert "no offline generator" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # tyro's usage error: no subcommand
        main([])
    assert stop.value.code == 2


def test_half_written_pair_is_not_complete(generated, tmp_path, monkeypatch):
    monkeypatch.setenv("FIDEC_ZOO_DATA", str(tmp_path / "cache"))
    cache = default_cache_dir("cube-single-play-v0", EPISODES, 0)
    cache.mkdir(parents=True)
    src = generated("cube-single-play-v0")
    shutil.copy(src / "cube-single-play-v0-val.npz", cache)  # val renamed, train still a tmp
    shutil.copy(src / "cube-single-play-v0.npz", cache / "cube-single-play-v0.npz.tmp-123")
    with pytest.raises(FileNotFoundError, match="python -m fidec_zoo.data generate"):
        load_ogbench(
            "cube-single-play-singletask-v0",
            episodes=EPISODES,
            dataset_dir=tmp_path / "none",
            generate=False,
        )


def test_cache_scheme_and_generation_through_load(tmp_path, monkeypatch):
    monkeypatch.setenv("FIDEC_ZOO_DATA", str(tmp_path))
    name = "pointmaze-medium-navigate-v0"
    assert default_cache_dir(name, 7, 3) == tmp_path / f"{name}-e7-s3"
    monkeypatch.delenv("FIDEC_ZOO_DATA")
    assert str(default_cache_dir(name, 7, 3)).endswith(f".cache/fidec_zoo/datasets/{name}-e7-s3")
    monkeypatch.setenv("FIDEC_ZOO_DATA", str(tmp_path))
    env_name = "pointmaze-medium-navigate-singletask-task1-v0"
    _, train, val = load_ogbench(env_name, episodes=2, seed=5, dataset_dir=tmp_path / "none")
    assert (tmp_path / f"{name}-e2-s5" / f"{name}.npz").exists()
    assert len(train) == 2 * (STEPS - 1) and len(val) == STEPS - 1
    prov = dataset_provenance(env_name, episodes=2, seed=5, dataset_dir=tmp_path / "none")
    assert prov["source"] == "generated" and prov["seed"] == 5


def test_unknown_and_unsupported_names(tmp_path):
    with pytest.raises(ValueError, match="cube-single-play-v0"):
        generate_ogbench("cube-sextuple-play-v0", episodes=1, out_dir=tmp_path)
    with pytest.raises(ValueError, match="(?i)single-task environments exist for"):
        load_ogbench("cube-sextuple-play-singletask-v0", dataset_dir=tmp_path)
    with pytest.raises(ValueError, match="not an OGBench single-task name"):
        load_ogbench("cube-single-play-v0", dataset_dir=tmp_path)
    with pytest.raises(ValueError, match="(?i)single-task environments exist for"):
        load_ogbench("cube-single-play-singletask-task9-v0", dataset_dir=tmp_path)
    for name in (
        "antmaze-large-navigate-v0",
        "humanoidmaze-medium-navigate-v0",
        "antsoccer-arena-navigate-v0",
    ):
        assert name.split("-")[0] in EXPERT_ONLY_FAMILIES
        with pytest.raises(ValueError, match="experts"):
            generate_ogbench(name, episodes=1, out_dir=tmp_path)
    with pytest.raises(ValueError, match="antmaze-large-navigate-v0-val.npz"):
        load_ogbench("antmaze-large-navigate-singletask-v0", dataset_dir=tmp_path)
    with pytest.raises(ValueError, match="Supported"):
        load_ogbench("cube-triple-play-singletask-v0", dataset_dir=tmp_path)
    assert "cube-single-play-v0" in SUPPORTED_DATASETS and len(SUPPORTED_DATASETS) == 9


def _random_dataset(n=100, obs_dim=7, action_dim=3):
    rng = np.random.default_rng(0)
    return Dataset.from_numpy(
        dict(
            observations=np.c_[np.arange(n), rng.normal(size=(n, obs_dim - 1))],
            actions=rng.uniform(-1, 1, size=(n, action_dim)),
            rewards=-np.ones(n),
            masks=rng.integers(0, 2, n),
            next_observations=rng.normal(size=(n, obs_dim)),
            next_actions=rng.uniform(-1, 1, size=(n, action_dim)),
            terminals=np.zeros(n),
        )
    )


def test_dataset_sample_is_jittable():
    data = _random_dataset()
    assert (len(data), data.obs_dim, data.action_dim) == (100, 7, 3)
    batch = jax.jit(lambda d, k: d.sample(k, 256))(data, jax.random.key(0))
    assert isinstance(batch, Dataset) and len(batch) == 256
    assert batch.observations.shape == (256, 7) and batch.actions.shape == (256, 3)
    assert batch.rewards.shape == (256,) and batch.observations.dtype == jnp.float32
    # rows stay aligned across fields: observations[:, 0] holds the row index
    idx = np.asarray(batch.observations)[:, 0].astype(int)
    np.testing.assert_array_equal(np.asarray(batch.actions), np.asarray(data.actions)[idx])
    np.testing.assert_array_equal(np.asarray(batch.masks), np.asarray(data.masks)[idx])
    assert len(np.unique(idx)) > 50  # not a constant index


def test_dataset_from_numpy_needs_all_fields():
    with pytest.raises(KeyError, match="masks"):
        Dataset.from_numpy(dict(observations=np.zeros((2, 3))))


@pytest.mark.parametrize("command_line", [False, True], ids=["python", "command-line"])
def test_generation_prints_progress_lines_without_a_terminal(tmp_path, capsys, command_line):
    """Output to a file or pipe (no terminal) gets plain progress lines, from Python and from
    `python -m fidec_zoo.data generate`, instead of nothing or a bar's carriage returns."""
    if command_line:
        from fidec_zoo.data.__main__ import main

        assert main(["generate", "pointmaze-medium-navigate-v0", "--episodes", "2",
                     "--out-dir", str(tmp_path)]) == 0
    else:
        generate_ogbench("pointmaze-medium-navigate-v0", episodes=2, out_dir=tmp_path)
    captured = capsys.readouterr()
    assert "\r" not in captured.err  # no tqdm bar
    lines = [x for x in captured.out.splitlines() if x.startswith("[generate ")]
    assert lines and lines[-1].startswith("[generate pointmaze-medium-navigate-v0] 3/3 episodes")
