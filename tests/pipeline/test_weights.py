"""The pinned weights: what counts as present, the pinned loader config, and fetching (through a
fake huggingface_hub, in this process and in the child process the server starts)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from pipeline.weights import (
    BIREFNET,
    DINOV3,
    PINNED,
    SS_DECODER,
    TRELLIS2,
    WeightsError,
    ensure,
    fetch,
    main,
    missing,
    pinned_pipeline_config,
    write_marker,
)
from tests.fake_trellis2 import FAKES, write_fake_weights, write_repo_files

COMMIT = re.compile(r"[0-9a-f]{40}")


@pytest.fixture
def fake_hub(monkeypatch):
    """The fake huggingface_hub importable here and in child processes."""
    monkeypatch.syspath_prepend(str(FAKES / "hub"))
    monkeypatch.delitem(sys.modules, "huggingface_hub", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(FAKES / "hub"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield
    sys.modules.pop("huggingface_hub", None)


def test_every_pin_is_a_commit_of_its_own_folder():
    assert len({repo.folder for repo in PINNED}) == len({repo.name for repo in PINNED}) == 4
    for repo in PINNED:
        assert COMMIT.fullmatch(repo.revision), repo
    assert [repo.name for repo in PINNED if repo.gated] == ["dinov3"]


def test_a_folder_is_present_only_once_its_marker_names_the_pinned_revision(tmp_path):
    assert missing(tmp_path) == list(PINNED)
    write_repo_files(TRELLIS2.path(tmp_path), "trellis2")  # files, but an unfinished download
    assert TRELLIS2 in missing(tmp_path)
    marker = TRELLIS2.path(tmp_path) / ".pinned-revision"
    marker.write_text(json.dumps({"repo_id": TRELLIS2.repo_id, "revision": "0" * 40}))
    assert TRELLIS2 in missing(tmp_path)  # an older revision
    write_marker(tmp_path, TRELLIS2)
    assert missing(tmp_path) == [SS_DECODER, DINOV3, BIREFNET]


def test_the_pinned_config_names_only_local_pinned_folders(tmp_path):
    root = write_fake_weights(tmp_path)
    config = pinned_pipeline_config(root)
    args = config["args"]
    models = args["models"]
    assert models["sparse_structure_decoder"] == str(
        SS_DECODER.path(root) / "ckpts/ss_dec_conv3d_16l8_fp16"
    )
    assert models["shape_slat_decoder"] == "ckpts/shape_dec_next_dc_f16c32_fp16"  # in its folder
    assert args["image_cond_model"]["args"]["model_name"] == str(DINOV3.path(root))
    assert args["rembg_model"] == {
        "name": "BiRefNet",
        "args": {"model_name": str(BIREFNET.path(root))},
    }
    assert args["default_pipeline_type"] == "1024_cascade"  # the rest untouched


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model", "microsoft/TRELLIS-image-large/ckpts/missing_model", "not a pinned file"),
        ("model", "someone/else/ckpts/model", "not a pinned file"),
        ("cond", "facebook/dinov2-large", "not pinned"),
    ],
)
def test_the_pinned_config_refuses_what_is_not_pinned(tmp_path, key, value, message):
    root = write_fake_weights(tmp_path)
    path = TRELLIS2.path(root) / "pipeline.json"
    config = json.loads(path.read_text())
    if key == "model":
        config["args"]["models"]["sparse_structure_decoder"] = value
    else:
        config["args"]["image_cond_model"]["args"]["model_name"] = value
    path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=message):
        pinned_pipeline_config(root)


def test_fetch_gets_each_missing_repo_and_names_the_gated_one_it_could_not(tmp_path, fake_hub):
    write_fake_weights(tmp_path, (BIREFNET,))
    with pytest.raises(WeightsError, match=r"dinov3.*gated: set HF_TOKEN.*401") as failure:
        fetch(tmp_path)
    assert "TRELLIS.2-4B" not in str(failure.value)
    assert missing(tmp_path) == [DINOV3]
    fetch(tmp_path, token="hf_fake")
    assert missing(tmp_path) == []
    assert (TRELLIS2.path(tmp_path) / "pipeline.json").is_file()


def test_ensure_fetches_in_a_child_process_only_when_allowed(tmp_path, fake_hub, monkeypatch):
    assert ensure(tmp_path, (TRELLIS2, BIREFNET), allow_fetch=False) == [TRELLIS2, BIREFNET]
    assert not TRELLIS2.path(tmp_path).exists()
    assert ensure(tmp_path, (DINOV3,), allow_fetch=True) == [DINOV3]  # no token: refused
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    assert ensure(tmp_path, PINNED, allow_fetch=True) == []
    assert (SS_DECODER.path(tmp_path) / "ckpts/ss_dec_conv3d_16l8_fp16.json").is_file()


def test_the_command_line_lists_the_pins(tmp_path, capsys):
    assert main(["--dir", str(tmp_path), "--list"]) == 0
    listed = capsys.readouterr().out
    for repo in PINNED:
        assert f"{repo.repo_id}@{repo.revision}" in listed
    assert main(["--list"]) == 0  # no folder needed to list
    assert capsys.readouterr().out == listed


def test_the_command_line_needs_a_folder_to_fetch_into(capsys):
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2 and "--dir is required" in capsys.readouterr().err
