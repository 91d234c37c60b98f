"""BT.2100 (PQ or HLG) to SDR BT.709 tone mapping, on RGB pictures as numpy arrays. No I/O.

The operator, chosen to be simple, documented and good enough to review HDR material on an
SDR screen (it is not a grading tool):

1. Decode the BT.2100 signal to display light in cd/m²: PQ with the SMPTE ST 2084 EOTF; HLG
   with its inverse OETF and the BT.2100 OOTF for a 1000 cd/m² display (system gamma 1.2).
2. Convert BT.2020 primaries to BT.709 in linear light (BT.2087 matrix); out-of-gamut
   colours clip at 0.
3. Scale so that HDR reference white (203 cd/m², BT.2408) becomes SDR white, and compress
   the highlights with extended Reinhard on each pixel's largest component (so hues do not
   shift), with 1000 cd/m² (the usual mastering peak) mapping to white.
4. Encode for an SDR display with the BT.1886 gamma of 2.4, and quantise to 8 bits.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

REFERENCE_WHITE = 203.0
"""cd/m² of HDR reference (diffuse) white, BT.2408: it becomes SDR 100 %."""
PEAK = 1000.0
"""cd/m² that maps to SDR white: the mastering peak of most HDR material."""
HLG_DISPLAY_PEAK = 1000.0
"""cd/m² of the nominal HLG display (BT.2100 OOTF with system gamma 1.2)."""
SDR_GAMMA = 2.4
"""BT.1886 display gamma."""

# SMPTE ST 2084 constants.
_M1 = 2610 / 16384
_M2 = 2523 / 4096 * 128
_C1 = 3424 / 4096
_C2 = 2413 / 4096 * 32
_C3 = 2392 / 4096 * 32
# BT.2100 HLG constants.
_HLG_A = 0.17883277
_HLG_B = 1 - 4 * _HLG_A
_HLG_C = 0.5 - _HLG_A * np.log(4 * _HLG_A)
_HLG_GAMMA = 1.2
# BT.2020 luminance weights (for the HLG OOTF).
_LUMA_2020 = np.array([0.2627, 0.6780, 0.0593], dtype=np.float32)
# BT.2087: linear BT.2020 RGB to linear BT.709 RGB.
_BT2020_TO_BT709 = np.array(
    [
        [1.6605, -0.5876, -0.0728],
        [-0.1246, 1.1329, -0.0083],
        [-0.0182, -0.1006, 1.1187],
    ],
    dtype=np.float32,
)


def pq_to_nits(signal: FloatArray) -> FloatArray:
    """SMPTE ST 2084 EOTF: PQ signal in [0, 1] to display light in cd/m²."""
    power = np.power(np.clip(signal, 0.0, 1.0), 1.0 / _M2)
    ratio = np.maximum(power - _C1, 0.0) / (_C2 - _C3 * power)
    return np.asarray(np.power(ratio, 1.0 / _M1) * 10000.0, dtype=np.float32)


def hlg_to_nits(signal: FloatArray) -> FloatArray:
    """BT.2100 HLG: signal in [0, 1] (RGB, last axis) to display light in cd/m²."""
    e = np.clip(signal, 0.0, 1.0)
    low = e * e / 3.0
    high = (np.exp((e - _HLG_C) / _HLG_A) + _HLG_B) / 12.0
    scene = np.where(e <= 0.5, low, high).astype(np.float32)
    luma = np.maximum(scene @ _LUMA_2020, 1e-6)[..., None]
    return np.asarray(HLG_DISPLAY_PEAK * np.power(luma, _HLG_GAMMA - 1.0) * scene, dtype=np.float32)


def reinhard(x: FloatArray, white: float) -> FloatArray:
    """Extended Reinhard: ``x (1 + x / white²) / (1 + x)``; 0 -> 0 and ``white`` -> 1."""
    return np.asarray(x * (1.0 + x / (white * white)) / (1.0 + x), dtype=np.float32)


def tone_map(rgb: FloatArray, curve: Literal["pq", "hlg"]) -> npt.NDArray[np.uint8]:
    """BT.2100 non-linear RGB (float, ``(..., 3)``, in [0, 1]) to 8-bit BT.709 SDR RGB."""
    nits = pq_to_nits(rgb) if curve == "pq" else hlg_to_nits(rgb)
    linear = np.maximum(nits @ _BT2020_TO_BT709.T, 0.0) / REFERENCE_WHITE
    peak = np.max(linear, axis=-1, keepdims=True)
    mapped = reinhard(peak, PEAK / REFERENCE_WHITE)
    scale = np.where(peak > 0, mapped / np.maximum(peak, 1e-9), 0.0)
    sdr = np.clip(linear * scale, 0.0, 1.0)
    encoded = np.power(sdr, 1.0 / SDR_GAMMA)
    return np.asarray(np.round(encoded * 255.0), dtype=np.uint8)
