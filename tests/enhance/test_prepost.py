"""Shared pre/post-processing: colour order, layout, range, padding to the stride, NaN refused."""

from __future__ import annotations

import numpy as np
import pytest

from tests.enhance.helpers import frame
from vehicle_agent.enhance.manifest import InputSpec, OutputSpec
from vehicle_agent.enhance.prepost import (
    Crop,
    Postprocessor,
    Preprocessor,
    TensorError,
    padded_size,
)


@pytest.mark.parametrize(
    ("size", "stride", "min_size", "expected"),
    [
        ((720, 1280), 8, 8, (720, 1280)),
        ((720, 1280), 32, 32, (736, 1280)),
        ((45, 61), 8, 8, (48, 64)),
        ((2, 3), 16, 32, (32, 32)),
        ((481, 641), 1, 1, (481, 641)),
    ],
)
def test_padding_reaches_the_next_multiple_of_the_stride_and_the_minimum(
    size: tuple[int, int], stride: int, min_size: int, expected: tuple[int, int]
) -> None:
    assert padded_size(*size, stride, min_size) == expected


@pytest.mark.parametrize("color", ["RGB", "BGR"])
@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
@pytest.mark.parametrize("size", [(45, 61), (48, 64), (2, 3), (1, 7)])
def test_a_frame_survives_the_round_trip_exactly(
    color: str, value_range: tuple[float, float], size: tuple[int, int]
) -> None:
    image = frame(3, size)
    pre = Preprocessor(InputSpec(color=color, range=value_range, stride=16, min_size=16))  # type: ignore[arg-type]
    post = Postprocessor(OutputSpec(color=color, range=value_range))  # type: ignore[arg-type]
    tensor, crop = pre.to_tensor(image)
    assert tensor.dtype == np.float32
    assert tensor.shape == (1, 3, *padded_size(*size, 16, 16))
    assert tensor.flags.c_contiguous
    assert crop == Crop(*size)
    assert np.array_equal(post.to_image(tensor, crop), image)


def test_layout_colour_and_scale_are_what_the_spec_says() -> None:
    image = frame(4, (10, 12))
    tensor, _ = Preprocessor(
        InputSpec(color="RGB", range=(-1.0, 1.0), stride=4, min_size=4)
    ).to_tensor(image)
    red = image[:, :, 2].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(tensor[0, 0, :10, :12], red, atol=1e-6)
    # Padding mirrors the frame (no black border for the model to react to).
    np.testing.assert_allclose(tensor[0, 0, 10, :12], red[8], atol=1e-6)


def test_the_input_buffer_is_reused_and_an_external_one_is_written_in_place() -> None:
    pre = Preprocessor(InputSpec(stride=8, min_size=8))
    first, _ = pre.to_tensor(frame(0))
    second, _ = pre.to_tensor(frame(1))
    assert first is second
    pinned = np.zeros((1, 3, 48, 64), np.float32)  # e.g. page-locked memory
    out, _ = pre.to_tensor(frame(2), out=pinned)
    assert out is pinned
    assert pinned.any()
    with pytest.raises(TensorError, match="need float32 1×3×48×64"):
        pre.to_tensor(frame(2), out=np.zeros((1, 3, 8, 8), np.float32))


def test_the_output_saturates_instead_of_wrapping() -> None:
    tensor = np.full((1, 3, 4, 4), 1.7, np.float32)
    tensor[0, 1] = -0.4
    out = Postprocessor(OutputSpec()).to_image(tensor, Crop(4, 4))
    assert (out[:, :, 2] == 255).all()
    assert (out[:, :, 1] == 0).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_output_is_refused(bad: float) -> None:
    tensor = np.zeros((1, 3, 8, 8), np.float32)
    tensor[0, 2, 5, 5] = bad
    with pytest.raises(TensorError, match="NaN or infinite") as info:
        Postprocessor(OutputSpec()).to_image(tensor, Crop(8, 8))
    assert info.value.non_finite


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ((3, 8, 8), "expected 1×3×H×W"),
        ((1, 1, 8, 8), "expected 1×3×H×W"),
        ((1, 3, 4, 8), "smaller"),
    ],
)
def test_a_wrongly_shaped_output_is_refused(shape: tuple[int, ...], words: str) -> None:
    with pytest.raises(TensorError, match=words):
        Postprocessor(OutputSpec()).to_image(np.zeros(shape, np.float32), Crop(8, 8))
