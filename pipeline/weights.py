"""The model weights the production path uses, pinned to revisions, and where they live.

Four Hugging Face repositories, each downloaded at a fixed commit into its own folder under
`WEIGHTS_DIR`:
  TRELLIS.2-4B          microsoft/TRELLIS.2-4B (MIT): pipeline.json and the flow models and
                        decoders in ckpts/
  TRELLIS-image-large   microsoft/TRELLIS-image-large (MIT): only the sparse-structure decoder
                        that TRELLIS.2-4B's pipeline.json names
                        ("microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16")
  dinov3-vitl16-...     facebook/dinov3-vitl16-pretrain-lvd1689m (DINOv3 licence, gated: the
                        download needs HF_TOKEN of an account that accepted it)
  BiRefNet              ZhengPeng7/BiRefNet (MIT): our matting, and what TRELLIS.2's loader
                        is pointed at instead of briaai/RMBG-2.0 (CC BY-NC, never downloaded)
A folder counts as present only once its download completed: a marker file holding the repo and
revision is written last, so an interrupted or outdated download is fetched again.

TRELLIS.2's `from_pretrained(path, config_file)` resolves each model of pipeline.json under
`path` and otherwise asks the Hub for the repository's current `main`; DINOv3 and the matting
model are Hub names too. `pinned_pipeline_config` rewrites every such reference to the local
pinned folders, so a load needs no network and can take nothing unpinned.

The revisions are real commit hashes of those repositories, taken from public records of their
snapshots (Hub cache paths `models--<org>--<name>/snapshots/<commit>`); these machines cannot
reach the Hub, so they were not re-checked against it here.

`python -m pipeline.weights --dir DIR [--only NAME ...]` (or `docker/fetch_weights.py`) fetches
what is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BIREFNET",
    "DINOV3",
    "PINNED",
    "PINNED_CONFIG",
    "SS_DECODER",
    "TRELLIS2",
    "WeightRepo",
    "WeightsError",
    "ensure",
    "fetch",
    "main",
    "missing",
    "pinned_pipeline_config",
    "weights_root",
    "write_marker",
]

log = logging.getLogger("pipeline.weights")

MARKER = ".pinned-revision"
# What TRELLIS.2's loader reads instead of pipeline.json (written beside it at load time).
PINNED_CONFIG = "pipeline.pinned.json"


class WeightsError(RuntimeError):
    """A weights folder is missing, incomplete, or names something that is not pinned."""


@dataclass(frozen=True)
class WeightRepo:
    name: str  # short name, for --only and log lines
    repo_id: str
    revision: str  # a commit hash of the repository
    folder: str  # under WEIGHTS_DIR
    allow_patterns: tuple[str, ...] | None = None  # None: the whole repository
    gated: bool = False  # the Hub needs HF_TOKEN of an account that accepted its licence

    def path(self, root: Path) -> Path:
        return root / self.folder

    def describe(self) -> str:
        return f"{self.repo_id}@{self.revision[:12]}"


TRELLIS2 = WeightRepo(
    "trellis2",
    "microsoft/TRELLIS.2-4B",
    "af44b45f2e35a493886929c6d786e563ec68364d",
    "TRELLIS.2-4B",
    ("pipeline.json", "ckpts/*"),
)
SS_DECODER = WeightRepo(
    "ss_decoder",
    "microsoft/TRELLIS-image-large",
    "25e0d31ffbebe4b5a97464dd851910efc3002d96",
    "TRELLIS-image-large",
    ("ckpts/ss_dec_conv3d_16l8_fp16.*",),
)
DINOV3 = WeightRepo(
    "dinov3",
    "facebook/dinov3-vitl16-pretrain-lvd1689m",
    "ea8dc2863c51be0a264bab82070e3e8836b02d51",
    "dinov3-vitl16-pretrain-lvd1689m",
    gated=True,
)
BIREFNET = WeightRepo(
    "birefnet",
    "ZhengPeng7/BiRefNet",
    "e2bf8e4460fc8fa32bba5ea4d94b3233d367b0e4",
    "BiRefNet",
)
PINNED = (TRELLIS2, SS_DECODER, DINOV3, BIREFNET)
# pipeline.json names models of other repositories as "<org>/<name>/<path in repo>".
_EXTERNAL_MODEL_REPOS = {SS_DECODER.repo_id: SS_DECODER}
_IMAGE_COND_REPOS = {DINOV3.repo_id: DINOV3}


def weights_root(text: str) -> Path:
    """The WEIGHTS_DIR setting as a path (`~` expanded)."""
    return Path(os.path.expanduser(text))


def write_marker(root: Path, repo: WeightRepo) -> None:
    """Mark `repo`'s folder complete at its pinned revision (the last step of a download)."""
    folder = repo.path(root)
    folder.mkdir(parents=True, exist_ok=True)
    marker = {"repo_id": repo.repo_id, "revision": repo.revision}
    (folder / MARKER).write_text(json.dumps(marker) + "\n")


def _is_complete(root: Path, repo: WeightRepo) -> bool:
    try:
        marker = json.loads((repo.path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"repo_id": repo.repo_id, "revision": repo.revision}


def missing(root: Path, repos: tuple[WeightRepo, ...] = PINNED) -> list[WeightRepo]:
    """The repos of `repos` not downloaded completely at their pinned revision under `root`."""
    return [repo for repo in repos if not _is_complete(root, repo)]


def fetch(root: Path, repos: tuple[WeightRepo, ...] = PINNED, token: str | None = None) -> None:
    """Download every repo of `repos` not yet complete, at its pinned revision.

    Raises WeightsError naming each repo that failed (a gated one without access says so).
    """
    from huggingface_hub import snapshot_download  # only the download needs it

    token = token or os.environ.get("HF_TOKEN") or None
    failures = []
    for repo in missing(root, repos):
        log.info("fetching %s into %s", repo.describe(), repo.path(root))
        try:
            snapshot_download(
                repo.repo_id,
                revision=repo.revision,
                local_dir=repo.path(root),
                allow_patterns=list(repo.allow_patterns) if repo.allow_patterns else None,
                token=token,
            )
        except Exception as error:  # network, 401/403 on a gated repo, disk full, ...
            hint = " (gated: set HF_TOKEN of an account that accepted it)" if repo.gated else ""
            failures.append(f"{repo.describe()}{hint}: {type(error).__name__}: {error}")
            continue
        write_marker(root, repo)
    if failures:
        raise WeightsError("; ".join(failures))


def ensure(root: Path, repos: tuple[WeightRepo, ...], allow_fetch: bool) -> list[WeightRepo]:
    """The repos of `repos` still missing after fetching them, when `allow_fetch`.

    The download runs in a child process (`python -m pipeline.weights`): the server's own
    process never talks to the Hub, so it can load with HF_HUB_OFFLINE=1 (the Hub client reads
    that once, at import) and any unpinned download fails instead of fetching `main`.
    """
    gone = missing(root, repos)
    if not gone or not allow_fetch:
        return gone
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, HF_HUB_OFFLINE="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (package_parent, env.get("PYTHONPATH"))))
    command = [sys.executable, "-m", "pipeline.weights", "--dir", str(root)]
    command += [f"--only={repo.name}" for repo in gone]
    log.info("fetching %s into %s", ", ".join(repo.describe() for repo in gone), root)
    completed = subprocess.run(command, env=env, check=False)
    if completed.returncode != 0:
        log.error("weights download exited with %d (see above)", completed.returncode)
    return missing(root, repos)


def pinned_pipeline_config(root: Path) -> dict[str, Any]:
    """TRELLIS.2-4B's pipeline.json with every reference outside its folder made local.

    - a model named "<org>/<repo>/<path>" of a pinned repo -> that repo's local folder + path;
    - image_cond_model's Hub name (DINOv3) -> its local folder;
    - rembg_model -> BiRefNet's local folder (upstream names briaai/RMBG-2.0, non-commercial;
      TRELLIS.2 constructs it on load, and we drop it right after: our matting runs first).
    Anything else that does not resolve inside the folder raises WeightsError.
    """
    base = TRELLIS2.path(root)
    config = json.loads((base / "pipeline.json").read_text())
    args = config["args"]
    for name, reference in args["models"].items():
        if (base / f"{reference}.json").is_file():
            continue
        org, repo_name, inner = ([*reference.split("/", 2), "", ""])[:3]
        repo = _EXTERNAL_MODEL_REPOS.get(f"{org}/{repo_name}")
        local = repo.path(root) / inner if repo and inner else None
        if local is None or not Path(f"{local}.json").is_file():
            raise WeightsError(f"pipeline.json model {name}={reference!r} is not a pinned file")
        args["models"][name] = str(local)
    cond = args["image_cond_model"]["args"]
    cond_repo = _IMAGE_COND_REPOS.get(cond["model_name"])
    if cond_repo is None:
        raise WeightsError(f"pipeline.json image_cond_model {cond['model_name']!r} is not pinned")
    cond["model_name"] = str(cond_repo.path(root))
    args["rembg_model"] = {"name": "BiRefNet", "args": {"model_name": str(BIREFNET.path(root))}}
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.weights",
        description="Download the pinned model weights that are missing (HF_TOKEN for DINOv3).",
    )
    parser.add_argument("--dir", type=Path, help="WEIGHTS_DIR (required unless --list)")
    parser.add_argument(
        "--only",
        action="append",
        choices=[repo.name for repo in PINNED],
        help="fetch only these (repeatable); default: all",
    )
    parser.add_argument("--list", action="store_true", help="print the pins and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.list:
        for repo in PINNED:
            print(f"{repo.name:11s} {repo.repo_id}@{repo.revision} -> {repo.folder}")
        return 0
    if args.dir is None:
        parser.error("--dir is required (where the weights go)")
    repos = tuple(repo for repo in PINNED if not args.only or repo.name in args.only)
    root = weights_root(str(args.dir))
    try:
        fetch(root, repos)
    except WeightsError as error:
        print(f"weights: {error}", file=sys.stderr)
        return 1
    print(f"weights complete in {root}: {', '.join(repo.describe() for repo in repos)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
