"""Which code produced a run, an entry or a dataset: `fidec_zoo.provenance`."""

import subprocess

import pytest

from fidec_zoo import provenance


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


def test_source_revision_names_the_commit_and_a_dirty_tree(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_SOURCE_ROOT", tmp_path)
    assert provenance.source_revision() is None  # not a checkout: an installed wheel
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "a")
    commit = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    assert provenance.source_revision() == f"git {commit}"
    (tmp_path / "new.txt").write_text("untracked files do not count\n")
    assert provenance.source_revision() == f"git {commit}"
    (tmp_path / "a.py").write_text("x = 2\n")
    assert provenance.source_revision() == f"git {commit}+dirty"
    versions = provenance.package_versions(["pytest", "no-such-package"])
    assert versions["pytest"] == pytest.__version__
    assert versions["no-such-package"] == "not installed"
    assert versions["fidec_zoo_source"] == f"git {commit}+dirty"


def test_source_revision_without_git(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    monkeypatch.setattr(provenance, "_SOURCE_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable
    assert provenance.source_revision() is None
    assert "fidec_zoo_source" not in provenance.package_versions([])
