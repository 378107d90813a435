"""A natural-looking test photograph made procedurally (no network, no bundled photo needed).

A landscape: graded sky with a sun glow, two mountain ridges from 1/f noise, and a textured field in the
foreground. Natural images have roughly 1/f amplitude spectra, which these layers imitate, so resizing and
the VAE see photo-like statistics rather than flat colours.
"""

from __future__ import annotations

import numpy as np


def _pink_noise(shape, rng, beta=1.0):
    """2-D noise with a 1/f^beta amplitude spectrum, scaled to zero mean and unit std."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0
    spectrum = np.fft.rfft2(white) / f ** beta
    spectrum[0, 0] = 0
    out = np.fft.irfft2(spectrum, s=shape)
    return (out - out.mean()) / (out.std() + 1e-12)


def _ridge(width, rng, base, amplitude):
    """A 1-D mountain profile (fraction of image height) from summed octaves."""
    x = np.linspace(0, 1, width)
    y = np.full(width, base)
    for octave in range(1, 7):
        phase = rng.uniform(0, 2 * np.pi)
        y += amplitude / octave ** 1.3 * np.sin(2 * np.pi * octave * 1.7 * x + phase)
    return y


def make_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A landscape picture as RGB uint8 [height, width, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    # Sky: deep blue at the top to pale near the horizon, a warm glow around the sun.
    sky = np.stack([0.35 + 0.45 * yy, 0.55 + 0.35 * yy, 0.85 + 0.1 * yy], axis=-1)
    sun = np.exp(-(((xx - 0.72) * width / height) ** 2 + (yy - 0.25) ** 2) / 0.01)
    sky = sky + sun[..., None] * np.array([0.6, 0.45, 0.2])
    img = sky + 0.02 * _pink_noise((height, width), rng)[..., None]
    # Far and near mountain ridges with rocky texture.
    texture = _pink_noise((height, width), rng, beta=0.8)
    for base, amp, colour in ((0.45, 0.08, (0.42, 0.46, 0.55)), (0.58, 0.07, (0.25, 0.32, 0.22))):
        ridge = _ridge(width, rng, base, amp)[None, :]
        mask = yy > ridge
        shade = np.array(colour) * (1 + 0.12 * texture[..., None])
        img = np.where(mask[..., None], shade, img)
    # Foreground field: greener and brighter towards the bottom, grass-like streaks.
    grass = _pink_noise((height, width), rng, beta=0.6)
    field = yy > 0.75 + 0.02 * np.sin(7 * xx)
    field_colour = np.stack([0.30 + 0.1 * yy, 0.45 + 0.15 * yy, 0.15 + 0.0 * yy], axis=-1)
    field_colour = field_colour * (1 + 0.2 * grass[..., None])
    img = np.where(field[..., None], field_colour, img)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
