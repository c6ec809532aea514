"""Fake huggingface_hub for the weights download tests: `snapshot_download` writes the fake
weights of tests/fake_trellis2.py instead of downloading, and refuses the gated DINOv3 without a
token, as the Hub does (401)."""

from pathlib import Path

from pipeline.weights import PINNED
from tests.fake_trellis2 import write_repo_files

__all__ = ["snapshot_download"]


def snapshot_download(repo_id, *, revision=None, local_dir=None, allow_patterns=None, token=None):
    repo = next((repo for repo in PINNED if repo.repo_id == repo_id), None)
    if repo is None:
        raise ValueError(f"404 Repository Not Found: {repo_id}")
    if revision != repo.revision:
        raise ValueError(f"{repo_id}: revision {revision!r} is not the pinned one")
    if repo.gated and not token:
        raise PermissionError(f"401 Client Error: access to {repo_id} is restricted (gated)")
    write_repo_files(Path(local_dir), repo.name)
    return str(local_dir)
