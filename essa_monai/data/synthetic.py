"""Small synthetic images for the demo data set and tests: skin lesions, chest radiographs, volumes.

Everything is drawn from a :class:`numpy.random.Generator`, so a seed fixes every pixel. These are
pictures that *look like* the real modalities at a glance (shapes, textures, intensity ranges); they
carry no medical meaning.
"""

from __future__ import annotations

import numpy as np
from skimage.filters import gaussian

__all__ = ["LESION_CLASS_COLORS", "skin_lesion", "chest_radiograph", "labelled_volume"]

#: RGB lesion colour per ISIC 2018 task 3 class (MEL, NV, BCC, AKIEC, BKL, DF, VASC).
LESION_CLASS_COLORS = np.array(
    [[60, 35, 30], [125, 80, 55], [190, 120, 125], [170, 95, 80], [140, 110, 85], [150, 105, 90], [150, 40, 70]],
    dtype=float,
)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise ``(H, W)``."""
    noise = gaussian(rng.standard_normal(shape), sigma=sigma)
    return (noise - noise.mean()) / (noise.std() + 1e-8)


def skin_lesion(
    rng: np.random.Generator, height: int, width: int, class_index: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A dermoscopy-like photo with one irregular pigmented lesion.

    Returns:
        ``(rgb, mask)``: uint8 ``(H, W, 3)`` and bool ``(H, W)`` lesion mask. ``class_index`` (0-6)
        picks the lesion colour and texture (globules for some classes); ``None`` picks one at random.
    """
    cls = int(rng.integers(0, len(LESION_CLASS_COLORS))) if class_index is None else class_index
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    skin = np.array([225.0, 180.0, 155.0]) + rng.normal(0, 10, 3)
    light = 1.0 + 0.08 * (xx / width - 0.5) * rng.choice([-1, 1]) + 0.03 * _smooth_noise(rng, (height, width), 8)
    image = skin[None, None, :] * light[..., None] + 6.0 * _smooth_noise(rng, (height, width), 1.0)[..., None]
    # irregular star-convex lesion outline: radius modulated by a few harmonics
    cy, cx = height * (0.5 + rng.uniform(-0.1, 0.1)), width * (0.5 + rng.uniform(-0.1, 0.1))
    radius = min(height, width) * rng.uniform(0.2, 0.33)
    aspect, angle = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / radius
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / (radius * aspect)
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    outline = 1.0 + sum(rng.uniform(0.02, 0.12) * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 7))
    mask = rho <= outline
    # pigment: class colour, darker centre, mottled texture, optional globules
    depth = np.clip(1.0 - rho / outline, 0.0, 1.0)
    texture = 1.0 + 0.12 * _smooth_noise(rng, (height, width), 2.0)
    lesion = LESION_CLASS_COLORS[cls][None, None, :] * (1.3 - 0.5 * depth)[..., None] * texture[..., None]
    if cls in (0, 1, 4):
        dots = gaussian((rng.random((height, width)) > 0.985).astype(float), sigma=1.0) * 6.0
        lesion = lesion * (1.0 - np.clip(dots, 0, 0.6))[..., None]
    alpha = gaussian(mask.astype(float), sigma=1.2)[..., None]
    image = image * (1 - alpha) + lesion * alpha
    # dermoscope vignette
    r = np.hypot((yy - height / 2) / (height / 2), (xx - width / 2) / (width / 2))
    image *= np.clip(1.25 - 0.35 * r**2, 0.3, 1.0)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), mask


def chest_radiograph(rng: np.random.Generator, size: int, findings: tuple[int, ...] = ()) -> np.ndarray:
    """A frontal chest-radiograph-like image, float64 ``(size, size)`` in ``[0, 1]`` (1 = dense/bright).

    ``findings`` are ChestX-ray14 label indices; each adds a bright opacity (effusion: lower lung
    fill; cardiomegaly: larger heart; others: round or hazy blobs at random places in the lungs).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(float) / size
    image = 0.55 * (((xx - 0.5) / 0.46) ** 2 + ((yy - 0.55) / 0.55) ** 2 < 1.0)  # body
    lungs = np.zeros_like(image, dtype=bool)
    for side in (-1, 1):
        lungs |= ((xx - 0.5 - side * 0.19) / 0.15) ** 2 + ((yy - 0.48) / 0.3) ** 2 < 1.0
    image = np.where(lungs, 0.18, image)
    image += 0.08 * lungs * (np.sin(yy * 2 * np.pi * 9 + 2 * np.abs(xx - 0.5) * 6) > 0.6)  # ribs
    image += 0.35 * (np.abs(xx - 0.5) < 0.035)  # spine
    heart_r = 0.17 if 1 in findings else 0.12
    image = np.maximum(image, 0.6 * (((xx - 0.53) / (heart_r * 1.2)) ** 2 + ((yy - 0.62) / heart_r) ** 2 < 1.0))
    for f in findings:
        if f == 2:  # effusion: fluid level at a lung base
            side = rng.choice([-1, 1])
            image += 0.3 * lungs * (yy > 0.66) * (side * (xx - 0.5) > 0)
        elif f != 1:
            cy, cx = rng.uniform(0.3, 0.7), 0.5 + rng.choice([-1, 1]) * rng.uniform(0.12, 0.25)
            r = 0.03 if f == 5 else rng.uniform(0.05, 0.1)
            image += 0.3 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2)))
    image = gaussian(image, sigma=size / 200) + 0.02 * rng.standard_normal(image.shape)
    return np.clip(image, 0.0, 1.0)


def labelled_volume(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume in Hounsfield units with an organ and a lesion.

    Returns:
        ``(hu, labels)``: int16 ``shape`` (air -1000, soft tissue ~40, organ ~60, lesion ~120) and uint8
        labels (0 background, 1 organ, 2 lesion).
    """
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    body = (grid[0] / 0.9) ** 2 + (grid[1] / 0.75) ** 2 < 1.0
    centre = rng.uniform(-0.2, 0.2, 3)
    organ = (((grid - centre[:, None, None, None]) / np.array([0.45, 0.35, 0.6])[:, None, None, None]) ** 2).sum(0) < 1
    lesion_centre = centre + rng.uniform(-0.12, 0.12, 3)
    lesion = (((grid - lesion_centre[:, None, None, None]) / 0.15) ** 2).sum(0) < 1
    labels = np.where(lesion & organ, 2, np.where(organ, 1, 0)).astype(np.uint8)
    hu = np.where(body, 40.0, -1000.0) + np.where(organ, 20.0, 0.0) + np.where(labels == 2, 60.0, 0.0)
    hu += 8.0 * rng.standard_normal(shape)
    return np.rint(hu).astype(np.int16), labels
