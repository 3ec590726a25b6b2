import json

import pytest
import torch

from taskdistill.engine.checkpoint import load_checkpoint, save_checkpoint
from taskdistill.errors import CheckpointError
from taskdistill.models.registry import create_model


def test_round_trip_describes_itself(tmp_path):
    torch.manual_seed(0)
    m = create_model("resnet10t", 3, input_size=24).eval()
    path = save_checkpoint(tmp_path / "ck", m, ["a", "b", "c"], stage="student", config={"seed": 1})
    assert path.suffix == ".safetensors"
    meta = json.loads((tmp_path / "ck.json").read_text())
    assert meta["model"]["name"] == "resnet10t" and meta["class_names"] == ["a", "b", "c"]
    assert meta["preprocess"]["input_size"] == 24 and meta["config"] == {"seed": 1}
    assert "taskdistill_version" in meta
    loaded, _ = load_checkpoint(path)
    x = torch.randn(2, 3, 24, 24)
    assert torch.allclose(loaded(x), m(x), atol=1e-5)
    assert not list(tmp_path.glob("*.tmp"))


def test_class_mismatch_is_an_error_that_names_both(tmp_path):
    m = create_model("resnet10t", 2, input_size=16)
    save_checkpoint(tmp_path / "ck", m, ["cat", "dog"], stage="x")
    with pytest.raises(CheckpointError, match=r"trained on classes \['cat', 'dog'\].*data has \['cat', 'cow'\]"):
        load_checkpoint(tmp_path / "ck", expect_classes=["cat", "cow"])


def test_missing_or_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no metadata file"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(CheckpointError, match="is not a taskdistill-checkpoint"):
        load_checkpoint(tmp_path / "other")


def test_weights_that_do_not_fit(tmp_path):
    a = create_model("resnet10t", 3, input_size=16)
    save_checkpoint(tmp_path / "a", a, ["x", "y", "z"], stage="s")
    with pytest.raises(CheckpointError, match="do not fit"):
        create_model("resnet10t", 5, input_size=16, checkpoint=str(tmp_path / "a.safetensors"))
