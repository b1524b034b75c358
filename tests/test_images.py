"""Every image mode PIL opens reaches the model the same way on every path; 16-bit is scaled, not clipped."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import onnx_predict
from expression.core.datasets import decode_split
from expression.core.images import standard_image
from expression.core.preprocessing import Preprocessing
from expression.inference.faces import image_to_rgb

rng = np.random.default_rng(0)
FACE = rng.integers(0, 256, (40, 36), dtype=np.uint8)  # any 8-bit gray picture
COLOUR = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)


def variants() -> dict[str, tuple[Image.Image, np.ndarray]]:
    """mode -> (image in that mode, the 8-bit gray or RGB pixels a person sees in it)."""
    gray, rgb = Image.fromarray(FACE, "L"), Image.fromarray(COLOUR, "RGB")
    i16 = Image.fromarray(FACE.astype(np.uint16) * 257)  # the 16-bit twin: same picture, full range
    assert i16.mode.startswith("I;16")
    binary = gray.convert("1")
    return {
        "L": (gray, FACE),
        "I;16": (i16, FACE),
        "I": (Image.fromarray(FACE.astype(np.int32) * 257, "I"), FACE),
        "F": (Image.fromarray(FACE.astype(np.float32) / 255.0, "F"), FACE),
        "1": (binary, np.asarray(binary.convert("L"))),
        "LA": (Image.merge("LA", (gray, Image.new("L", gray.size, 255))), FACE),
        "RGB": (rgb, COLOUR),
        "RGBA": (Image.merge("RGBA", (*rgb.split(), Image.new("L", rgb.size, 255))), COLOUR),
        "P": (rgb.quantize(64), np.asarray(rgb.quantize(64).convert("RGB"))),
        "CMYK": (rgb.convert("CMYK"), np.asarray(rgb.convert("CMYK").convert("RGB"))),
        "YCbCr": (rgb.convert("YCbCr"), np.asarray(rgb.convert("YCbCr").convert("RGB"))),
    }


@pytest.mark.parametrize("mode", list(variants()))
def test_standard_image_keeps_what_a_person_sees(mode):
    img, seen = variants()[mode]
    out = np.asarray(standard_image(img))
    assert out.dtype == np.uint8 and out.shape == seen.shape
    assert np.abs(out.astype(int) - seen.astype(int)).max() <= 1, mode


def test_transparency_is_white_and_first_frame_is_read(tmp_path):
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert np.asarray(standard_image(clear, alpha="white")).min() == 255
    assert np.asarray(standard_image(clear)).max() == 0  # ImageFolder's view: alpha ignored
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8), "L") for v in (10, 200)]
    frames[0].save(tmp_path / "two.tif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "two.tif") as img:
        assert img.n_frames == 2
        assert np.asarray(standard_image(img)).max() == 10


@pytest.mark.parametrize("mode", list(variants()))
def test_model_input_agrees_on_every_path(mode):
    """Preprocessing (training, evaluation, explanations), the face detector's RGB and the standalone
    ONNX script turn each mode into the same pixels."""
    img, _ = variants()[mode]
    for color in ("gray", "rgb"):
        prep = Preprocessing(48, color=color)
        meta = {"img_size": 48, "color": color}
        assert np.array_equal(prep.pixels(img), onnx_predict.pixels(img, meta)), (mode, color)
        if mode not in ("LA", "RGBA"):  # opaque: the detector's view is the model's view
            via_rgb = prep.pixels(image_to_rgb(img))
            assert np.abs(via_rgb.astype(int) - prep.pixels(img).astype(int)).max() <= 1, (mode, color)


def test_16_bit_files_train_like_their_8_bit_twins(tmp_path):
    for bits, folder in ((8, "eight"), (16, "sixteen")):
        for name in ("a", "b"):
            (tmp_path / folder / name).mkdir(parents=True)
            for i in range(3):
                pixels = np.roll(FACE, 5 * i, axis=1)
                img = Image.fromarray(pixels) if bits == 8 else Image.fromarray(pixels.astype(np.uint16) * 257)
                img.save(tmp_path / folder / name / f"{i}.png")
    eight = decode_split(tmp_path / "eight", ["a", "b"], 48)
    sixteen = decode_split(tmp_path / "sixteen", ["a", "b"], 48)
    assert eight.images.shape == sixteen.images.shape == (6, 1, 48, 48)
    assert (eight.images.int() - sixteen.images.int()).abs().max() <= 1
    assert sixteen.images.float().mean() < 200  # not clipped to near-white


@pytest.mark.parametrize("kind", ["path", "pil", "uint8", "float 0..1", "float 0..255", "uint16", "int64", "rgba",
                                  "gray (H, W)", "gray (H, W, 1)", "bool"])
def test_the_api_takes_a_picture_in_any_form(tmp_path, kind):
    from expression.core.images import rgb_uint8

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    gray = rgb[:, :, 0]
    Image.fromarray(rgb).save(tmp_path / "p.png")
    given, expected = {
        "path": (tmp_path / "p.png", rgb), "pil": (Image.fromarray(rgb), rgb), "uint8": (rgb, rgb),
        "float 0..1": (rgb / 255.0, rgb), "float 0..255": (rgb.astype(np.float32), rgb),
        "uint16": (rgb.astype(np.uint16) * 257, rgb), "int64": (rgb.astype(np.int64), rgb),
        "rgba": (np.dstack([rgb, np.zeros_like(gray)]), rgb),
        "gray (H, W)": (gray, np.dstack([gray] * 3)), "gray (H, W, 1)": (gray[:, :, None], np.dstack([gray] * 3)),
        "bool": (gray > 127, np.dstack([(gray > 127) * np.uint8(255)] * 3)),
    }[kind]
    got = rgb_uint8(given)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((4, 4, 2)), np.array([["a"]]), np.zeros((0, 3))])
def test_the_api_says_what_is_not_a_picture(bad):
    from expression.core.images import rgb_uint8

    with pytest.raises(ValueError, match="expected an image"):
        rgb_uint8(bad)
