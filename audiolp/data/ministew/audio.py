"""Small audio helpers for MiniStew: read any soundfile format, resample to 16 kHz mono, fit 1-10 s, write FLAC."""
from __future__ import annotations

import os
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from audiolp.data.schema import SAMPLING_RATE

MIN_S = 1.0
MAX_S = 10.0


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLING_RATE) -> np.ndarray:
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def load_audio(path: str | os.PathLike, sr: int = SAMPLING_RATE) -> np.ndarray:
    """Read a WAV/FLAC/OGG/AIFF file as float32 mono at ``sr``."""
    try:
        x, sr_in = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types; name the file either way
        raise ValueError(f"cannot decode audio file {path}: {e}") from e
    return resample(x.mean(axis=1), sr_in, sr)


def trim_silence(x: np.ndarray, thresh_db: float = -45.0, pad: int = 800) -> np.ndarray:
    """Cut leading/trailing near-silence (relative to the peak) so clip lengths describe the sound."""
    if x.size == 0:
        return x
    peak = float(np.abs(x).max())
    if peak <= 0:
        return x
    above = np.flatnonzero(np.abs(x) > peak * 10 ** (thresh_db / 20))
    lo, hi = max(0, above[0] - pad), min(x.size, above[-1] + pad)
    return x[lo:hi]


def fit_length(x: np.ndarray, rng: np.random.Generator | None = None, min_s: float = MIN_S, max_s: float = MAX_S,
               sr: int = SAMPLING_RATE) -> tuple[np.ndarray, float]:
    """Pad short clips with silence (placing the sound at a seeded offset) and crop long ones to ``max_s``.

    Returns the clip and the onset (s) of the original sound inside it.
    """
    n_min, n_max = int(min_s * sr), int(max_s * sr)
    if x.size > n_max:
        start = int(rng.integers(0, x.size - n_max + 1)) if rng is not None else 0
        return x[start:start + n_max], -start / sr
    if x.size < n_min:
        off = int(rng.integers(0, n_min - x.size + 1)) if rng is not None else 0
        y = np.zeros(n_min, dtype=np.float32)
        y[off:off + x.size] = x
        return y, off / sr
    return x, 0.0


def normalize(x: np.ndarray, peak_db: float = -1.0) -> np.ndarray:
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak <= 1e-9:
        return x.astype(np.float32)
    return (x * (10 ** (peak_db / 20) / peak)).astype(np.float32)


def write_flac(path: str | os.PathLike, x: np.ndarray, sr: int = SAMPLING_RATE) -> int:
    """Write 16-bit FLAC atomically (tmp + rename) and return the number of samples."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.flac")
    x = np.clip(np.nan_to_num(x), -1.0, 1.0)
    sf.write(str(tmp), x, sr, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
    return int(x.size)

