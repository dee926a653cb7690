"""recipes/toy2d.py --quick: the figure and the JSON are written, every metric is finite and in
range, and a rerun with the same seed gives the same numbers."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFINED = ("fql", "deflow", "fidec")
TRAINING_FREE = ("natural_fisher", "natural_l2")


def _load_toy2d():
    spec = importlib.util.spec_from_file_location("toy2d", ROOT / "recipes" / "toy2d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    toy2d = _load_toy2d()
    outs = [tmp_path_factory.mktemp(f"toy2d{i}") for i in range(2)]
    for out in outs:  # the second run reuses the compiled functions, so it is quick
        toy2d.main(["--quick", "--out-dir", str(out), "--seed", "3"])
    return outs


def _numbers(node, path=""):
    """Every number in a JSON tree, with its path."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{path}/{i}")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def test_writes_figure_and_json(runs):
    png = runs[0] / "toy2d.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    report = json.loads((runs[0] / "toy2d.json").read_text())
    assert set(report["problems"]) == {"bimodal", "arc", "ridge", "isotropic"}
    assert report["quick"] and report["budget"] > 0 and report["wall_time_s"] > 0


def test_every_metric_is_finite_and_in_range(runs):
    report = json.loads((runs[0] / "toy2d.json").read_text())
    for path, value in _numbers(report["problems"]):
        assert math.isfinite(value), path
    for name, problem in report["problems"].items():
        methods = problem["methods"]
        assert set(methods) == {"behaviour", "bc_flow", *REFINED, *TRAINING_FREE}, name
        # by construction about 99% of the behaviour's own samples are inside its support
        assert 0.97 <= methods["behaviour"]["support_fraction"] <= 1.0, name
        assert problem["q_min_box"] <= problem["best_q_in_support"] <= problem["q_max_box"]
        for method, r in methods.items():
            where = f"{name}/{method}"
            assert problem["q_min_box"] - 1e-5 <= r["mean_q"] <= problem["q_max_box"] + 1e-5, where
            assert 0.0 <= r["support_fraction"] <= 1.0, where
            assert 0.0 <= r["msd"] <= 4.0, where  # actions lie in [-1, 1]^2
            if method in ("behaviour", "bc_flow"):
                assert r["msd"] == 0.0, where
            elif method in TRAINING_FREE:  # the closed-form step meets the budget everywhere
                assert r["penalty"]["mean"] == pytest.approx(report["budget"], rel=1e-4), where
                assert r["penalty"]["max"] == pytest.approx(report["budget"], rel=1e-4), where
            else:
                assert r["train"]["alpha"] > 0 and r["train"]["penalty"] >= 0, where
            if name == "bimodal":
                occupancy, inside = r["mode_occupancy"], r["mode_occupancy_in_support"]
                assert set(occupancy) == {"A", "B"} and abs(sum(occupancy.values()) - 1) < 1e-6
                for mode in occupancy:
                    assert 0.0 <= inside[mode] <= occupancy[mode] <= 1.0, where
                assert abs(sum(inside.values()) - r["support_fraction"]) < 1e-6, where
        geometry = problem["metric_geometry"]
        for path, value in _numbers(geometry):
            assert -1e-4 <= value <= 2.0 + 1e-4, f"{name}{path}"  # u^T G u with tr G = 2
        assert {"learned_flow", "exact_flow"} <= set(geometry["fidec"])


def test_same_seed_same_numbers(runs):
    first, second = (json.loads((out / "toy2d.json").read_text()) for out in runs)
    assert first["problems"] == second["problems"]
