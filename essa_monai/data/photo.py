"""Photographs and PNG masks (dermoscopy, clinical photos, chest PNGs) read with Pillow.

EXIF orientation is applied (:func:`PIL.ImageOps.exif_transpose`), so a phone photo stored sideways
with ``Orientation=6`` comes out upright, and height/width are those of the upright image.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError
from .formats import check_file
from .intensity import minmax_to_unit

__all__ = ["read_photo", "read_photo_mask", "photo_size"]

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _open_upright(path: str | os.PathLike[str]) -> Image.Image:
    """Decode the whole file (so truncation is caught here) and apply EXIF orientation."""
    path = check_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not a recognised image file, or its header is corrupt (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageLoadError(path, f"corrupt or truncated image ({err})") from err


def read_photo(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a photo as display intensities.

    Returns:
        float32 array ``(H, W, C)`` in ``[0, 1]``, upright per EXIF. ``C == 1`` for grayscale
        (8-bit ``L``/``1``/``LA`` divided by 255; 16-bit ``I;16``/``I`` divided by 65535; float ``F``
        min-max scaled), ``C == 3`` for everything else (``RGB``; ``RGBA``/``P``/``CMYK``/``YCbCr``
        converted to RGB by Pillow, alpha dropped), divided by 255.

    Raises:
        ImageLoadError: missing, empty, non-image, corrupt or truncated file.
    """
    img = _open_upright(path)
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageLoadError(path, f"{mode} image with values outside the 16-bit range")
        return (arr / 65535.0).astype(np.float32)[..., None]
    if mode == "F":
        return minmax_to_unit(np.asarray(img))[..., None]
    if mode in ("1", "L", "LA"):
        gray = np.asarray(img.convert("L"), dtype=np.float32)
        return (gray / 255.0)[..., None]
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_photo_mask(path: str | os.PathLike[str], binary: bool = True) -> np.ndarray:
    """Read a segmentation mask saved as an image (e.g. ISIC ``*_segmentation.png``, values 0/255).

    Args:
        path: PNG (or other Pillow format) file, single-channel (``L``, ``1``, ``P``, 16-bit) or an
            RGB image whose three channels are equal.
        binary: ``True`` returns foreground ``{0, 1}``: for palette (``P``) masks any index > 0;
            otherwise values above half of full scale (127 for 8-bit, 32767 for 16-bit), or > 0 when the
            mask's maximum is 1 (masks saved as 0/1). ``False`` returns the stored values (label ids).

    Returns:
        float32 array ``(H, W)``, upright per EXIF.

    Raises:
        ImageLoadError: unreadable file, or an RGB mask whose channels differ.
    """
    img = _open_upright(path)
    mode = img.mode
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"))
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise ImageLoadError(
                path, "colour mask: R, G and B differ; save masks as single-channel (grayscale or palette) images"
            )
        arr, full_scale = rgb[..., 0], 255
    elif mode == "P":
        arr, full_scale = np.asarray(img), 1
    elif mode in _SIXTEEN_BIT_MODES:
        arr, full_scale = np.asarray(img), 65535
    elif mode in ("1", "L", "LA"):
        arr, full_scale = np.asarray(img.convert("L")), 255
    else:
        raise ImageLoadError(path, f"unsupported mask image mode {mode!r}")
    if binary:
        threshold = 0 if full_scale == 1 or arr.max() <= 1 else full_scale // 2
        arr = arr > threshold
    return arr.astype(np.float32)


def photo_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of the upright image from the header only (no pixel decoding)."""
    path = check_file(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not a recognised image file, or its header is corrupt (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(path, f"corrupt image header ({err})") from err
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)
