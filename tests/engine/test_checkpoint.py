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


def _saved(tmp_path):
    torch.manual_seed(0)
    m = create_model("resnet10t", 3, input_size=16)
    return save_checkpoint(tmp_path / "ck", m, ["a", "b", "c"], stage="student")


@pytest.mark.parametrize("keep", [0, 7, 100, -1000])
def test_a_truncated_safetensors_file_is_a_checkpoint_error_naming_it(tmp_path, keep):
    weights = _saved(tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(CheckpointError, match=rf"weights file '{weights}' .*truncated or corrupt") as err:
        load_checkpoint(tmp_path / "ck")
    assert "\n" not in str(err.value)


def test_a_corrupt_safetensors_header_is_a_checkpoint_error(tmp_path):
    weights = _saved(tmp_path)
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\xff" * 32  # garbage in the JSON header
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"'{weights}' .*truncated or corrupt"):
        load_checkpoint(weights)


def test_unreadable_or_incomplete_metadata_is_a_checkpoint_error(tmp_path):
    _saved(tmp_path)
    meta_path = tmp_path / "ck.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta)[:50])
    with pytest.raises(CheckpointError, match=rf"metadata '{meta_path}' is unreadable or truncated"):
        load_checkpoint(tmp_path / "ck")
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "preprocess"}))
    with pytest.raises(CheckpointError, match="lacks preprocess"):
        load_checkpoint(tmp_path / "ck")


def test_tensor_shapes_are_checked_against_the_rebuilt_model_in_one_line(tmp_path):
    from safetensors.torch import load_file, save_file

    weights = _saved(tmp_path)
    state = load_file(str(weights))
    state["fc.weight"] = state["fc.weight"][:2]  # a head for 2 classes where the metadata says 3
    save_file(state, str(weights))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "ck")
    msg = str(err.value)
    assert "\n" not in msg and str(weights) in msg
    assert "do not fit model 'resnet10t': fc.weight is [2, 512] in the file, [3, 512] in the model" in msg
    del state["fc.bias"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"fc\.weight is \[2, 512\].*; missing fc\.bias; unexpected extra\.weight"):
        load_checkpoint(tmp_path / "ck")
