"""Loading real DICOM/NIfTI test files shipped with pydicom and nibabel, and photos made here."""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLSLossless

from essa_monai.data import (
    ImageLoadError,
    LoadImage2Dd,
    LoadMask2Dd,
    detect_format,
    load_image_2d,
    load_mask_2d,
    read_nifti,
)
from essa_monai.data.dicom import apply_modality_lut  # pydicom 3 or 2.4

NIBABEL_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")


def _gray(path, **kwargs) -> np.ndarray:
    """Load and return the (H, W) first channel, checking the 3 channels are identical."""
    image = load_image_2d(path, **kwargs)
    assert image.dtype.is_floating_point and image.shape[0] == 3
    np.testing.assert_array_equal(image[0].numpy(), image[1].numpy())
    np.testing.assert_array_equal(image[0].numpy(), image[2].numpy())
    return image[0].numpy()


# ---------------------------------------------------------------- DICOM


def test_ct_small_without_window_is_minmax_of_hounsfield_units():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds)  # slope 1, intercept -1024
    assert hu.min() == 128 - 1024
    image = load_image_2d(path)
    assert tuple(image.shape) == (3, 128, 128) and str(image.dtype) == "torch.float32"
    expected = (hu - hu.min()) / (hu.max() - hu.min())
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-6)
    assert image.meta["filename_or_obj"] == path and image.meta["format"] == "dicom"


def test_mr_small_window_centre_width_follows_dicom_linear_formula():
    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (600.0, 1600.0)
    stored = ds.pixel_array.astype(float)
    expected = np.clip((stored - (600 - 0.5)) / (1600 - 1) + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1
    gray = _gray(path)
    assert gray.shape == (64, 64)
    np.testing.assert_allclose(gray, expected, atol=1e-5)
    assert gray.min() == pytest.approx(expected.min(), abs=1e-5) and gray.max() == 1.0  # 2145 > 1400 clips


def test_explicit_intensity_range_overrides_the_file_window():
    path = get_testdata_file("MR_small.dcm")
    stored = pydicom.dcmread(path).pixel_array.astype(float)
    np.testing.assert_allclose(_gray(path, intensity_range=(0, 4000)), stored / 4000, atol=1e-6)


def test_monochrome1_is_inverted_relative_to_monochrome2(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    mono1 = tmp_path / "mr_mono1.dcm"
    ds.save_as(mono1)
    as_mono2 = _gray(get_testdata_file("MR_small.dcm"))
    as_mono1 = _gray(mono1)
    np.testing.assert_allclose(as_mono1, 1.0 - as_mono2, atol=1e-6)
    assert as_mono1.max() == pytest.approx(1.0 - as_mono2.min(), abs=1e-6)


def _can_decode(ts) -> bool:
    """An installed pixel data handler decodes transfer syntax ``ts`` (pydicom 3 or 2.4)."""
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2.4 (the MONAI Label environment)
        return any(h.is_available() and h.supports_transfer_syntax(ts) for h in pydicom.config.pixel_data_handlers)
    return get_decoder(ts).is_available


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"])
def test_lossless_compressed_and_big_endian_decode_to_uncompressed_pixels(name):
    ts = pydicom.dcmread(get_testdata_file(name)).file_meta.TransferSyntaxUID
    if ts.is_compressed and not _can_decode(ts):
        pytest.skip(f"no installed decoder for {ts.name}")
    np.testing.assert_array_equal(_gray(get_testdata_file(name)), _gray(get_testdata_file("MR_small.dcm")))


def test_jpeg_ls_decodes_if_a_plugin_is_installed_else_error_names_file_and_transfer_syntax():
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    if _can_decode(JPEGLSLossless):
        np.testing.assert_array_equal(_gray(path), _gray(get_testdata_file("MR_small.dcm")))
        return
    with pytest.raises(ImageLoadError) as info:
        load_image_2d(path)
    message = str(info.value)
    assert "MR_small_jpeg_ls_lossless.dcm" in message
    assert "JPEG-LS Lossless Image Compression" in message and "1.2.840.10008.1.2.4.80" in message
    assert info.value.path == path


def test_multiframe_dicom_requires_a_frame_and_returns_the_chosen_one():
    path = get_testdata_file("rtdose.dcm")  # 15 frames of 10 x 10
    with pytest.raises(ImageLoadError, match="multi-frame DICOM with 15 frames"):
        load_image_2d(path)
    frames = pydicom.dcmread(path).pixel_array.astype(float)
    for index in (0, 7, -1):
        frame = frames[index]
        expected = (frame - frame.min()) / (frame.max() - frame.min())
        np.testing.assert_allclose(_gray(path, frame=index), expected, atol=1e-6)
    with pytest.raises(ImageLoadError, match="frame 15 out of range"):
        load_image_2d(path, frame=15)


def test_multiframe_rgb_dicom_frame_is_rgb_divided_by_255():
    path = get_testdata_file("SC_rgb_rle_2frame.dcm")
    image = load_image_2d(path, frame=1)
    expected = pydicom.dcmread(path).pixel_array[1].astype(np.float32) / 255
    assert tuple(image.shape) == (3, 100, 100)
    np.testing.assert_allclose(image.numpy().transpose(1, 2, 0), expected, atol=1e-6)


def test_dicom_without_extension_is_detected_by_magic(tmp_path):
    target = tmp_path / "IM000001"
    shutil.copy(get_testdata_file("CT_small.dcm"), target)
    assert detect_format(target) == "dicom"
    np.testing.assert_array_equal(_gray(target), _gray(get_testdata_file("CT_small.dcm")))


# ---------------------------------------------------------------- photos


def _quadrant_image(height: int, width: int) -> np.ndarray:
    """Upright test picture: top-left red, top-right green, bottom half blue."""
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 2, : width // 2] = (255, 0, 0)
    img[: height // 2, width // 2 :] = (0, 255, 0)
    img[height // 2 :] = (0, 0, 255)
    return img


@pytest.mark.parametrize("orientation, rot90_k", [(6, 1), (8, -1)])
def test_exif_rotated_jpeg_comes_out_upright(tmp_path, orientation, rot90_k):
    upright = _quadrant_image(40, 64)
    stored = np.ascontiguousarray(np.rot90(upright, k=rot90_k))  # what the camera wrote: 64 x 40
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"phone_{orientation}.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = load_image_2d(path).numpy()
    assert image.shape == (3, 40, 64)
    top_left, top_right, bottom = image[:, 5:15, 5:25], image[:, 5:15, 40:60], image[:, 25:35, :]
    np.testing.assert_allclose(top_left.mean(axis=(1, 2)), [1, 0, 0], atol=0.06)
    np.testing.assert_allclose(top_right.mean(axis=(1, 2)), [0, 1, 0], atol=0.06)
    np.testing.assert_allclose(bottom.mean(axis=(1, 2)), [0, 0, 1], atol=0.06)


def test_grayscale_png_is_replicated_to_three_channels(tmp_path):
    pixels = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    Image.fromarray(pixels, mode="L").save(tmp_path / "gray.png")
    np.testing.assert_allclose(_gray(tmp_path / "gray.png"), pixels / 255.0, atol=1e-7)


def test_sixteen_bit_png_is_divided_by_65535(tmp_path):
    pixels = np.array([[0, 1000, 40000, 65535]], dtype=np.uint16).repeat(3, axis=0)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    np.testing.assert_allclose(_gray(tmp_path / "deep.png"), pixels / 65535.0, atol=1e-7)


def test_rgba_png_keeps_colour_and_drops_alpha(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = 0  # fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    image = load_image_2d(tmp_path / "rgba.png").numpy()
    np.testing.assert_allclose(image[:, 0, 0], np.array([200, 100, 50]) / 255.0, atol=1e-7)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[..., 0] = 255  # pure cyan
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    image = load_image_2d(tmp_path / "cmyk.jpg").numpy()
    np.testing.assert_allclose(image.mean(axis=(1, 2)), [0.0, 1.0, 1.0], atol=0.03)


def test_palette_png_mask_keeps_indices_and_binarises(tmp_path):
    labels = np.zeros((10, 10), np.uint8)
    labels[2:5, 2:5], labels[6:9, 6:9] = 1, 2
    img = Image.fromarray(labels, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    img.save(tmp_path / "labels.png")
    ids = load_mask_2d(tmp_path / "labels.png", binary=False)
    assert sorted(np.unique(ids.numpy()).tolist()) == [0.0, 1.0, 2.0]
    assert float(load_mask_2d(tmp_path / "labels.png").sum()) == 18.0


def test_isic_style_0_255_png_mask_becomes_0_1(tmp_path):
    mask = np.zeros((30, 40), np.uint8)
    mask[5:15, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "ISIC_0000001_segmentation.png")
    loaded = load_mask_2d(tmp_path / "ISIC_0000001_segmentation.png")
    assert tuple(loaded.shape) == (1, 30, 40) and str(loaded.dtype) == "torch.float32"
    assert sorted(np.unique(loaded.numpy()).tolist()) == [0.0, 1.0]
    assert float(loaded.sum()) == 200.0


# ---------------------------------------------------------------- NIfTI


def test_anatomical_nii_axial_default_is_middle_slice_of_canonical_volume():
    path = os.path.join(NIBABEL_DATA, "anatomical.nii")  # (33, 41, 25), LAS
    assert nib.aff2axcodes(nib.load(path).affine) == ("L", "A", "S")
    canonical = np.asanyarray(nib.as_closest_canonical(nib.load(path)).dataobj).astype(float)
    expected = canonical[:, :, 12].T[::-1, ::-1]
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    gray = _gray(path)
    assert gray.shape == (41, 33)
    np.testing.assert_allclose(gray, expected, atol=1e-6)


@pytest.mark.parametrize("axis, shape", [("sagittal", (25, 41)), ("coronal", (25, 33)), ("axial", (41, 33))])
def test_las_and_ras_copies_of_a_volume_give_the_same_slice(tmp_path, axis, shape):
    img = nib.load(os.path.join(NIBABEL_DATA, "anatomical.nii"))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1  # voxel i -> n-1-i: same physical positions
    ras = nib.Nifti1Image(data[::-1].copy(), img.affine @ flip)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    nib.save(ras, tmp_path / "ras.nii.gz")
    nib.save(nib.Nifti1Image(data, img.affine), tmp_path / "las.nii.gz")
    from_las = read_nifti(tmp_path / "las.nii.gz", slice_axis=axis, slice_index=7)
    from_ras = read_nifti(tmp_path / "ras.nii.gz", slice_axis=axis, slice_index=7)
    assert from_las.shape == shape
    np.testing.assert_array_equal(from_las, from_ras)


def test_4d_nifti_needs_a_volume_index():
    path = os.path.join(NIBABEL_DATA, "example4d.nii.gz")  # (128, 96, 24, 2)
    with pytest.raises(ImageLoadError, match="4D NIfTI with 2 volumes"):
        load_image_2d(path)
    image = load_image_2d(path, frame=1, slice_index=10)
    assert tuple(image.shape) == (3, 96, 128)
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0


def test_standard_nii_gz_uint8_slice_values_and_hu_window(tmp_path):
    path = os.path.join(NIBABEL_DATA, "standard.nii.gz")  # (4, 5, 7) uint8, RAS
    raw = read_nifti(path, slice_axis=2, slice_index=3)
    data = np.asanyarray(nib.load(path).dataobj)
    np.testing.assert_array_equal(raw, data[:, :, 3].T[::-1, ::-1].astype(np.float32))
    windowed = _gray(path, slice_index=3, intensity_range=(0, 100))
    np.testing.assert_allclose(windowed, np.clip(raw / 100.0, 0, 1), atol=1e-6)


def test_2d_nifti_has_rows_from_second_axis(tmp_path):
    data = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "plane.nii")
    raw = read_nifti(tmp_path / "plane.nii")
    assert raw.shape == (30, 20)
    assert raw[0, 0] == data[19, 29] and raw[-1, -1] == data[0, 0]


def test_nifti_label_mask_binary_and_ids(tmp_path):
    labels = np.zeros((8, 9, 3), np.uint8)
    labels[2:4, 2:5, 1], labels[5:7, 5:8, 1] = 1, 2
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "seg.nii.gz")
    ids = load_mask_2d(tmp_path / "seg.nii.gz", binary=False, slice_index=1)
    assert tuple(ids.shape) == (1, 9, 8)
    assert sorted(np.unique(ids.numpy()).tolist()) == [0.0, 1.0, 2.0]
    assert float(load_mask_2d(tmp_path / "seg.nii.gz", slice_index=1).sum()) == 12.0


def test_dict_loaders_replace_paths_by_tensors(tmp_path):
    Image.fromarray(_quadrant_image(20, 30)).save(tmp_path / "img.png")
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(tmp_path / "mask.png")
    data = {"image": str(tmp_path / "img.png"), "label": str(tmp_path / "mask.png"), "id": "x"}
    out = LoadMask2Dd(keys="label")(LoadImage2Dd(keys="image")(data))
    assert tuple(out["image"].shape) == (3, 20, 30) and tuple(out["label"].shape) == (1, 20, 30)
    assert float(out["label"].mean()) == 1.0 and out["id"] == "x"
    assert out["image"].meta["filename_or_obj"] == str(tmp_path / "img.png")
