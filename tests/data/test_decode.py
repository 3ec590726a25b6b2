"""The decode policy: crop (timm's eval transform) vs squash, colour modes, 16-bit and transparent files, JPEG draft."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskdistill.data.decode import DecodePolicy, decode_array


def save(arr: np.ndarray, path: Path, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


def test_square_image_gives_the_same_pixels_with_crop_and_squash(tmp_path):
    rng = np.random.default_rng(0)
    f = save(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), tmp_path / "sq.png")
    crop = decode_array(f, DecodePolicy(16))
    squash = decode_array(f, DecodePolicy(16, resize="squash"))
    direct = np.asarray(Image.open(f).convert("RGB").resize((16, 16), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    assert crop.shape == (3, 16, 16) and crop.dtype == np.uint8
    assert np.array_equal(crop, squash) and np.array_equal(crop, direct)


def test_crop_keeps_the_centre_of_a_wide_image_and_squash_keeps_everything(tmp_path):
    img = np.zeros((20, 60, 3), dtype=np.uint8)
    img[:, :20] = (255, 0, 0)   # left third red
    img[:, 20:40] = (0, 255, 0)  # centre green
    img[:, 40:] = (0, 0, 255)   # right third blue
    f = save(img, tmp_path / "wide.png")
    crop = decode_array(f, DecodePolicy(10))
    assert (crop[1] > 200).all() and (crop[0] < 60).all() and (crop[2] < 60).all()  # only the green centre
    squash = decode_array(f, DecodePolicy(12, resize="squash"))
    assert squash[0, :, 0].min() > 200 and squash[2, :, -1].min() > 200  # red left edge, blue right edge
    tight = decode_array(f, DecodePolicy(10, crop_pct=0.5))  # a 10-px centre of the 20-px square, scaled up
    assert (tight[1] == 255).all()


def test_gray_mode_has_one_channel_and_16_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    f = tmp_path / "deep.png"
    Image.fromarray(ramp).save(f)
    assert Image.open(f).mode.startswith("I")
    out = decode_array(f, DecodePolicy(64, color="gray", interpolation="nearest"))
    assert out.shape == (1, 64, 64)
    assert (out == 255).mean() < 0.01 and abs(float(out.mean()) - 127.5) < 2  # a ramp, not 99.6 % white
    rgb = decode_array(f, DecodePolicy(64))
    assert rgb.shape == (3, 64, 64) and np.array_equal(rgb[0], rgb[2])


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4, :, :] = (10, 20, 30, 255)  # top half opaque, bottom half fully transparent
    f = save(rgba, tmp_path / "alpha.png")
    out = decode_array(f, DecodePolicy(8, interpolation="nearest"))
    assert (out[:, 4:] == 255).all() and out[:, 0, 0].tolist() == [10, 20, 30]


def test_jpeg_draft_decodes_a_large_jpeg_at_a_reduced_scale_with_the_same_content(tmp_path):
    yy, xx = np.mgrid[:800, :1000]
    img = np.stack([xx * 255 // 1000, yy * 255 // 800, (xx + yy) % 256], -1).astype(np.uint8)
    f = save(img, tmp_path / "big.jpg", quality=95)
    with Image.open(f) as im:
        im.draft(None, (100, 100))
        assert im.size[0] < 1000  # libjpeg scales on decode
    fast = decode_array(f, DecodePolicy(64)).astype(int)
    full = decode_array(f, DecodePolicy(64, jpeg_draft=False)).astype(int)
    assert fast.shape == full.shape == (3, 64, 64)
    assert np.abs(fast - full).mean() < 3.0


def test_file_objects_and_bad_files(tmp_path):
    f = save(np.full((5, 7, 3), 9, dtype=np.uint8), tmp_path / "a.png")
    assert np.array_equal(decode_array(io.BytesIO(f.read_bytes()), DecodePolicy(4)), decode_array(f, DecodePolicy(4)))
    (tmp_path / "b.png").write_text("not an image")
    with pytest.raises(OSError):
        decode_array(tmp_path / "b.png", DecodePolicy(4))


@pytest.mark.parametrize("kw", [{"size": 0}, {"size": 8, "crop_pct": 1.5}, {"size": 8, "resize": "fit"},
                                {"size": 8, "interpolation": "cubic"}, {"size": 8, "color": "cmyk"}])
def test_bad_policy_values_are_rejected(kw):
    with pytest.raises(ValueError, match="bad decode policy"):
        DecodePolicy(**kw)


def test_policy_round_trips_through_a_dict():
    p = DecodePolicy(32, resize="squash", crop_pct=0.875, interpolation="bilinear", color="gray", jpeg_draft=False)
    assert DecodePolicy.from_dict(p.to_dict()) == p and p.row_shape == (1, 32, 32)


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((10, 20, 3), dtype=np.uint8)
    img[:, :10] = (255, 0, 0)  # left half red, right half green, as stored
    img[:, 10:] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the displayed image is 10 wide, 20 tall, red on top
    f = tmp_path / "turned.png"
    Image.fromarray(img).save(f, exif=exif)
    out = decode_array(f, DecodePolicy(10, resize="squash", interpolation="nearest"))
    assert (out[0, :4] > 200).all() and (out[1, -4:] > 200).all()  # red top rows, green bottom rows
