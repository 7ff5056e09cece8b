"""Per-image transforms on hand-made arrays with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from data_pipeline.transforms import (
    bbox_from_mask,
    clahe,
    crop,
    decode_png,
    detection_image,
    downscale,
    downscale_long_side,
    encode_png,
    expand_box,
    largest_contour_bbox,
    lesion_crop,
    to_uint8,
    tumour_crop,
    whole_image,
)


def mammogram(shape=(600, 400), seed=0) -> np.ndarray:
    """Dim uint16 noise standing in for breast tissue."""
    return np.random.default_rng(seed).integers(5000, 9000, shape, dtype=np.uint16)


def box_mask(shape, box, value=255) -> np.ndarray:
    x0, y0, x1, y1 = box
    mask = np.zeros(shape, np.uint8)
    mask[y0:y1, x0:x1] = value
    return mask


# --- intensity ------------------------------------------------------------------------------


def test_to_uint8_scales_min_to_0_and_max_to_255():
    img = np.array([[1000, 1800, 3000]], np.uint16)
    assert to_uint8(img).tolist() == [[0, 102, 255]]
    assert to_uint8(img).dtype == np.uint8


def test_to_uint8_of_a_constant_image_is_zero():
    assert not to_uint8(np.full((5, 5), 777, np.uint16)).any()


def test_clahe_keeps_shape_and_needs_uint8():
    img = to_uint8(mammogram((128, 96)))
    out = clahe(img, clip_limit=2.0, tile=8)
    assert out.shape == img.shape and out.dtype == np.uint8
    with pytest.raises(TypeError, match="uint8"):
        clahe(mammogram((32, 32)))


# --- resizing -------------------------------------------------------------------------------


def test_downscale_large_uint16_image():
    img = mammogram((3000, 5000))
    out = downscale(img, 512)
    assert out.shape == (512, 512) and out.dtype == np.uint16
    assert downscale(img, (300, 500)).shape == (300, 500)
    assert 6500 < out.mean() < 7500  # area averaging keeps the mean level


def test_downscale_averages_a_constant_image_exactly():
    assert np.all(downscale(np.full((3001, 4999), 4242, np.uint16), (224, 224)) == 4242)


def test_downscale_can_enlarge_a_small_crop():
    out = downscale(mammogram((30, 40)), (224, 224))
    assert out.shape == (224, 224) and out.dtype == np.uint16


def test_downscale_long_side_keeps_aspect():
    out, scale = downscale_long_side(mammogram((3000, 5000)), 1024)
    assert out.shape == (614, 1024) and scale == pytest.approx(1024 / 5000)


def test_outputs_of_one_image_leave_it_unchanged():
    """prepare makes every output of an image from one decoded array: none may write into it."""
    img, mask = mammogram((1000, 700)), box_mask((1000, 700), (300, 200, 500, 400))
    img_before, mask_before = img.copy(), mask.copy()
    whole_image(img, 256)
    lesion_crop(img, mask, 64)
    tumour_crop(img, mask, 64)
    detection_image(img, [mask], 128)
    assert np.array_equal(img, img_before) and np.array_equal(mask, mask_before)


def test_whole_image_is_uint8_at_size():
    out = whole_image(mammogram((3000, 5000)), (320, 512))
    assert out.shape == (320, 512) and out.dtype == np.uint8


# --- boxes ----------------------------------------------------------------------------------


def test_bbox_from_mask_is_tight_with_exclusive_max():
    mask = np.zeros((50, 60), bool)
    mask[10, 20] = mask[30, 45] = True
    assert bbox_from_mask(mask) == (20, 10, 46, 31)
    assert bbox_from_mask(np.zeros((5, 5), np.uint8)) is None


@given(
    arrays(
        st.sampled_from([np.uint8, np.uint16, np.int16, np.bool_]),
        array_shapes(min_dims=2, max_dims=2, max_side=40),
    )
)
def test_bbox_from_mask_agrees_with_opencv(mask):
    x, y, w, h = cv2.boundingRect((mask != 0).astype(np.uint8))
    assert bbox_from_mask(mask) == ((x, y, x + w, y + h) if w else None)


def test_largest_contour_bbox_ignores_smaller_blobs():
    mask = box_mask((100, 100), (10, 10, 40, 30))
    mask[80:83, 80:83] = 255  # speck
    mask[50:52, 5:95] = 255  # one long thin line: large bbox, small area
    assert largest_contour_bbox(mask) == (10, 10, 40, 30)
    assert bbox_from_mask(mask) == (5, 10, 95, 83)
    assert largest_contour_bbox(np.zeros((9, 9), np.uint8)) is None


def test_expand_box_adds_fractional_and_minimum_margins_and_clips():
    assert expand_box((100, 100, 200, 150), 0.1, (1000, 1000), min_pixels=0) == (90, 95, 210, 155)
    assert expand_box((100, 100, 110, 110), 0.1, (1000, 1000), min_pixels=8) == (92, 92, 118, 118)
    assert expand_box((0, 5, 50, 95), 0.2, (100, 60)) == (0, 0, 60, 100)


@st.composite
def boxes_in_images(draw):
    height, width = draw(st.integers(1, 500)), draw(st.integers(1, 500))
    x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    x1, y1 = draw(st.integers(x0 + 1, width)), draw(st.integers(y0 + 1, height))
    return (x0, y0, x1, y1), (height, width)


@given(boxes_in_images(), st.floats(0.0, 1.0), st.integers(0, 50))
def test_expand_box_stays_inside_image_and_contains_input(box_shape, margin, min_pixels):
    box, (height, width) = box_shape
    x0, y0, x1, y1 = expand_box(box, margin, (height, width), min_pixels=min_pixels)
    assert 0 <= x0 <= box[0] and 0 <= y0 <= box[1]
    assert box[2] <= x1 <= width and box[3] <= y1 <= height


def test_crop_returns_box_content_and_refuses_empty_box():
    img = np.arange(100).reshape(10, 10)
    assert crop(img, (2, 3, 5, 4)).tolist() == [[32, 33, 34]]
    with pytest.raises(ValueError, match="empty"):
        crop(img, (4, 4, 4, 8))


# --- task inputs ----------------------------------------------------------------------------


def test_lesion_crop_centres_lesion_without_distorting_it():
    image = mammogram()
    lesion = (150, 300, 250, 325)  # 100 wide, 25 tall
    image[300:325, 150:250] = 60000
    out = lesion_crop(image, box_mask(image.shape, lesion), 64, margin=0.1)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    x0, y0, x1, y1 = bbox_from_mask(out > 200)
    assert (x1 - x0) / (y1 - y0) == pytest.approx(4, rel=0.3)  # still 4:1, not squashed
    assert abs((x0 + x1) / 2 - 32) <= 2 and abs((y0 + y1) / 2 - 32) <= 2


def test_lesion_crop_rejects_empty_and_misaligned_masks():
    image = mammogram()
    with pytest.raises(ValueError, match="empty ROI mask"):
        lesion_crop(image, np.zeros(image.shape, np.uint8), 64)
    with pytest.raises(ValueError, match="sizes differ"):
        lesion_crop(image, np.zeros((10, 10), np.uint8), 64)


def test_tumour_crop_keeps_image_and_mask_aligned():
    image = mammogram()
    image[200:260, 100:180] = 60000  # the tumour, bright
    image[500:560, 300:380] = 60000  # bright tissue outside the mask
    mask = box_mask(image.shape, (100, 200, 180, 260))
    mask[20:22, 20:22] = 255  # a speck far away: not the largest contour
    out, out_mask = tumour_crop(image, mask, 128, margin=0.2)
    assert out.shape == out_mask.shape == (128, 128)
    assert out.dtype == out_mask.dtype == np.uint8
    assert set(np.unique(out_mask).tolist()) == {0, 1}
    assert out[out_mask == 1].mean() > 200 > out[out_mask == 0].mean() + 100
    x0, y0, x1, y1 = bbox_from_mask(out_mask)
    assert 10 < x0 < x1 < 118 and 10 < y0 < y1 < 118  # the margin surrounds the tumour


def test_tumour_crop_rejects_empty_mask():
    image = mammogram()
    with pytest.raises(ValueError, match="empty ROI mask"):
        tumour_crop(image, np.zeros(image.shape, np.uint8), 64)


def test_detection_boxes_are_scaled_to_output_pixels():
    image = mammogram((3000, 5000))
    boxes_in = [(1000, 500, 1500, 900), (4000, 2000, 4100, 2950)]
    masks = [box_mask(image.shape, box) for box in boxes_in]
    out, boxes = detection_image(image, masks, 1024)
    assert out.shape == (614, 1024) and out.dtype == np.uint8
    assert boxes.shape == (2, 4) and boxes.dtype == np.float32
    scale = np.array([1024 / 5000, 614 / 3000, 1024 / 5000, 614 / 3000])
    np.testing.assert_allclose(boxes, np.array(boxes_in) * scale, rtol=1e-6)


def test_detection_image_without_lesions_and_with_an_empty_mask():
    image = mammogram()
    out, boxes = detection_image(image, [], 256)
    assert out.shape == (256, 171) and boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="empty ROI mask"):
        detection_image(image, [np.zeros(image.shape, np.uint8)], 256)


# --- PNG ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_round_trip_is_lossless(dtype):
    img = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, (37, 53), dtype=dtype)
    back = decode_png(encode_png(img))
    assert back.dtype == img.dtype and np.array_equal(back, img)


def test_decode_png_rejects_garbage():
    with pytest.raises(ValueError, match="PNG"):
        decode_png(b"not a png")
