"""Speech as a set of frame vectors: WAV reading, filterbank / MFCC features, and the Free Spoken
Digit Dataset (FSDD).

An utterance becomes a sequence of ``T`` frame vectors ``[T, F]`` (one every 10 ms by default);
an attention model then treats the frames as the nodes of a graph (``graphattn.patterns``).

* **Reading** (:func:`read_wav`): PCM 8/16/24/32-bit integer and 32/64-bit float WAV files via
  ``scipy.io.wavfile``, scaled to floats in ``[-1, 1]``; stereo is averaged to mono; optional
  resampling (:func:`resample`, ``scipy.signal.resample_poly``). Compressed WAV (ADPCM, A-law,
  MP3, ...), files that are not WAV and empty files raise :class:`WavFormatError` naming the file
  and what was found.
* **Features**: :func:`frames` -> :func:`power_spectrum` -> :func:`log_mel` -> :func:`mfcc`, with
  :func:`mel_filterbank`, :func:`delta` and per-utterance :func:`cmvn`. :class:`FeatureConfig`
  holds every setting in one frozen dataclass and :func:`compute_features` applies it.
* **FSDD** (:func:`load_fsdd`): ``recordings/<digit>_<speaker>_<index>.wav``, 8 kHz mono, the
  official split (takes 0-4 are test, 5-49 train) or a speaker-independent one
  (``holdout_speaker``); :func:`collate` pads a batch to ``[B, T, F]`` with lengths and, for CTC
  or sequence-to-sequence training, the letters of the spoken word (:data:`CHARACTERS`,
  :func:`encode_characters`, :func:`decode_characters`).

Conventions (HTK / Kaldi; where they differ, the choice is named):

=========================  =====================================================================
frame length               ``W = round(sample_rate * window_ms / 1000)`` samples (8 kHz, 25 ms:
                           200), hop ``H = round(sample_rate * hop_ms / 1000)`` (10 ms: 80)
frame count                ``pad="none"`` (HTK, Kaldi ``snip_edges=true``):
                           ``1 + (T - W) // H`` frames, 0 when ``T < W``; frame ``t`` covers
                           samples ``[t H, t H + W)``. ``pad="center"`` (``torch.stft``
                           ``center=True``): ``1 + T // H`` frames, the signal reflect-padded by
                           ``W // 2`` on both sides, frame ``t`` centred on sample ``t H``.
                           ``pad="end"`` (python_speech_features): ``1 + ceil((T - W) / H)``
                           frames (at least 1), zeros appended to fill the last one. ``T = 0``
                           gives no frame. See :func:`num_frames`.
per-frame processing       in this order, each frame on its own (so frames do not depend on their
                           neighbours): optional DC removal (Kaldi ``remove_dc_offset``; off by
                           default as in HTK), pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` with
                           ``y[0] = x[0] - 0.97 x[0]`` (HTK, Kaldi), window. No dither.
window                     symmetric, over ``W`` samples: ``hamming`` ``0.54 - 0.46 cos(2 pi n /
                           (W - 1))`` (HTK; the default), ``hann`` ``0.5 - 0.5 cos(...)``,
                           ``povey`` ``hann ** 0.85`` (Kaldi's default), ``rectangular``
spectrum                   ``|rfft(frame, n_fft)|^2``, ``n_fft`` = the next power of two
                           ``>= W`` (Kaldi ``round_to_power_of_two``), no ``1 / n_fft`` scaling
                           (Kaldi); ``n_fft // 2 + 1`` bins. HTK's default is the magnitude.
mel scale                  HTK: ``mel(f) = 2595 log10(1 + f / 700)`` (= ``1127 ln(1 + f / 700)``,
                           Kaldi)
filterbank                 ``num_filters`` triangles with centres equally spaced in mel between
                           ``low_hz`` and ``high_hz`` (default: Nyquist); filter ``i`` rises from
                           edge ``i`` to centre ``i + 1`` and falls to edge ``i + 2``, **linear in
                           mel** (HTK, Kaldi; librosa and python_speech_features are linear in
                           Hz), peak 1, unnormalized, so neighbours sum to 1 between the first
                           and the last centre.
log                        natural log of ``max(energy, log_floor)``, ``log_floor = 1e-10``
MFCC                       orthonormal DCT-II of the log-mel (Kaldi; ``scipy.fft.dct(...,
                           norm="ortho")``), the first ``num_ceps`` coefficients (``c0``
                           included, no energy replacement), liftered by ``1 + (L / 2) sin(pi i /
                           L)`` with ``L = 22`` (HTK ``CEPLIFTER``, Kaldi ``cepstral-lifter``;
                           ``lifter=0`` disables it)
deltas                     HTK / Kaldi regression ``d_t = sum_n n (c_{t+n} - c_{t-n}) / (2 sum_n
                           n^2)``, ``n = 1..2``, edge frames repeated; delta-deltas are deltas of
                           the deltas; appended as ``[c, d, dd]``
CMVN                       per utterance: subtract the mean over frames and (``mean_variance``)
                           divide by the standard deviation (population, floored at 1e-8)
=========================  =====================================================================

Signal-level functions take a 1-D array (NumPy, a list, or a CPU ``torch.Tensor``), compute in
float64 and return NumPy ``float32`` arrays; the FSDD loader returns ``torch`` float32 tensors.

Example:
    >>> rate = 8000
    >>> tone = np.sin(2 * np.pi * 1000 * np.arange(rate) / rate)  # 1 s at 1 kHz
    >>> frames(tone, rate).shape  # 1 + (8000 - 200) // 80
    (98, 200)
    >>> features = log_mel(tone, rate, num_filters=40)
    >>> features.shape, features.dtype
    ((98, 40), dtype('float32'))
    >>> centres = mel_frequencies(40, 0, rate / 2)[1:-1]
    >>> int(features.mean(0).argmax()) == int(np.abs(centres - 1000).argmin())
    True
    >>> mfcc(tone, rate, delta_order=2).shape
    (98, 39)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    # reading
    "Waveform",
    "WavFormatError",
    "read_wav",
    "resample",
    # features
    "PADDINGS",
    "WINDOWS",
    "CMVN_MODES",
    "FEATURE_KINDS",
    "num_frames",
    "frames",
    "window_function",
    "power_spectrum",
    "hz_to_mel",
    "mel_to_hz",
    "mel_frequencies",
    "mel_filterbank",
    "log_mel",
    "mfcc",
    "delta",
    "cmvn",
    "FeatureConfig",
    "compute_features",
    # characters
    "PAD",
    "BLANK",
    "BOS",
    "EOS",
    "FIRST_CHARACTER",
    "CHARACTERS",
    "CHARACTER_VOCAB_SIZE",
    "encode_characters",
    "decode_characters",
    # FSDD
    "DIGIT_WORDS",
    "FSDD_SPLITS",
    "FSDD_SAMPLE_RATE",
    "FsddRecording",
    "SpokenDigit",
    "SpokenDigitDataset",
    "SpeechBatch",
    "fsdd_recordings",
    "fsdd_speakers",
    "load_fsdd",
    "collate",
    "clear_feature_cache",
]

PathLike = Union[str, "os.PathLike[str]"]
ArrayLike = Union[np.ndarray, Tensor, Sequence[float]]

# ----------------------------------------------------------------------------------------------
# reading WAV files
# ----------------------------------------------------------------------------------------------


class Waveform(NamedTuple):
    """A mono recording: ``samples`` float32 ``[T]`` (integer PCM scaled into ``[-1, 1]``; float
    files as stored) and its ``sample_rate`` in Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate


class WavFormatError(ValueError):
    """A file that :func:`read_wav` cannot read: not a WAV file, empty, compressed, or damaged."""


# WAVE format tags (RFC 2361, mmreg.h) of the common compressed encodings, for error messages
_WAVE_FORMATS = {
    0x0001: "PCM",
    0x0002: "Microsoft ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3 (MP3)",
    0x0161: "Windows Media Audio",
    0x1610: "AAC",
    0xF1AC: "FLAC",
    0xFFFE: "extensible",
}
_SUPPORTED_TAGS = (0x0001, 0x0003)


def _wav_format_tag(path: Path) -> tuple[int, int]:
    """``(format tag, bits per sample)`` from the ``fmt`` chunk, the sub-format for
    WAVE_FORMAT_EXTENSIBLE; raises :class:`WavFormatError` for what is not a WAV file."""
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) == 0:
            raise WavFormatError(f"Cannot read {path}: the file is empty (0 bytes); expected a WAV file")
        if len(header) < 12 or header[:4] not in (b"RIFF", b"RIFX", b"RF64") or header[8:12] != b"WAVE":
            raise WavFormatError(
                f"Cannot read {path}: not a WAV file (expected a RIFF/RIFX/RF64 header followed by "
                f"'WAVE', found {header[:12]!r}); convert it to PCM WAV first, e.g. "
                f"`ffmpeg -i {path.name} -acodec pcm_s16le out.wav`"
            )
        endian = ">" if header[:4] == b"RIFX" else "<"
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                raise WavFormatError(f"Cannot read {path}: a WAV header without a 'fmt ' chunk (truncated file?)")
            name, size = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
            if name == b"fmt ":
                body = handle.read(size)
                if len(body) < 16:
                    raise WavFormatError(f"Cannot read {path}: its 'fmt ' chunk has {len(body)} bytes, expected >= 16")
                tag, _, _, _, _, bits = struct.unpack(endian + "HHIIHH", body[:16])
                if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the GUID starts with the tag
                    tag = struct.unpack(endian + "H", body[24:26])[0]
                return tag, bits
            handle.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to an even size


def read_wav(path: PathLike, *, sample_rate: int | None = None) -> Waveform:
    """Read a WAV file as mono float32 samples.

    Integer PCM is scaled to ``[-1, 1)``: 8-bit (unsigned) as ``(x - 128) / 128``, 16-bit as
    ``x / 2**15``, 24- and 32-bit as ``x / 2**31`` (``scipy.io.wavfile`` returns 24-bit data
    left-justified in int32, so a 24-bit sample ``s`` becomes ``s / 2**23``). Float WAV (32/64-bit
    IEEE) is returned as stored (normally within ``[-1, 1]``; not clipped). Several channels are
    **averaged** into one.

    Args:
        path: the ``.wav`` file.
        sample_rate: resample to this rate (Hz) with :func:`resample` when the file's rate
            differs; ``None`` keeps the file's rate.

    Returns:
        :class:`Waveform` ``(samples float32 [T], sample_rate)``.

    Raises:
        FileNotFoundError: the file does not exist.
        WavFormatError: an empty file, not a WAV file, a compressed encoding (ADPCM, A-law,
            mu-law, MP3, ...) or a file ``scipy.io.wavfile`` rejects; the message names the
            file and what was found.

    Example:
        >>> import tempfile, pathlib, scipy.io.wavfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.wav"
        >>> scipy.io.wavfile.write(path, 8000, np.array([0, 16384, -32768], dtype=np.int16))
        >>> read_wav(path).samples.tolist()
        [0.0, 0.5, -1.0]
        >>> len(read_wav(path, sample_rate=16000).samples)
        6
    """
    import scipy.io.wavfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No WAV file at {path}")
    tag, bits = _wav_format_tag(path)
    if tag not in _SUPPORTED_TAGS:
        found = _WAVE_FORMATS.get(tag, "unknown encoding")
        raise WavFormatError(
            f"Cannot read {path}: it is a compressed or unsupported WAV ({found}, format tag "
            f"0x{tag:04X}, {bits} bits); expected PCM integer or IEEE float samples. Convert it, "
            f"e.g. `ffmpeg -i {path.name} -acodec pcm_s16le out.wav`"
        )
    try:
        rate, data = scipy.io.wavfile.read(path)
    except ValueError as error:
        raise WavFormatError(f"Cannot read {path} with scipy.io.wavfile: {error}") from error
    samples = _to_float(data, path)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    waveform = Waveform(samples, int(rate))
    if sample_rate is not None and sample_rate != waveform.sample_rate:
        waveform = Waveform(resample(samples, waveform.sample_rate, sample_rate), int(sample_rate))
    return waveform


def _to_float(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype == np.uint8:
        return ((data.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if data.dtype.kind == "i":
        return (data.astype(np.float64) / float(2 ** (8 * data.dtype.itemsize - 1))).astype(np.float32)
    if data.dtype.kind == "f":
        return data.astype(np.float32)
    raise WavFormatError(f"Cannot read {path}: unsupported sample type {data.dtype} (expected PCM integer or float)")


def resample(samples: ArrayLike, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a 1-D signal from ``from_rate`` to ``to_rate`` Hz with a polyphase filter
    (``scipy.signal.resample_poly`` with ``up / down`` = the reduced ratio ``to_rate /
    from_rate``, its default Kaiser-windowed low-pass). Output length ``ceil(T * to_rate /
    from_rate)``, float32.

    Example:
        >>> resample(np.zeros(100), 8000, 16000).shape
        (200,)
    """
    import scipy.signal

    for name, value in (("from_rate", from_rate), ("to_rate", to_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"Expected {name} to be a positive int (Hz), got {value!r}")
    x = _as_signal(samples)
    if from_rate == to_rate:
        return x.astype(np.float32)
    divisor = math.gcd(int(from_rate), int(to_rate))
    if len(x) == 0:
        return np.zeros(0, dtype=np.float32)
    return scipy.signal.resample_poly(x, int(to_rate) // divisor, int(from_rate) // divisor).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# framing and spectra
# ----------------------------------------------------------------------------------------------

PADDINGS = ("none", "center", "end")
WINDOWS = ("hamming", "hann", "povey", "rectangular")


def _as_signal(x: ArrayLike, name: str = "x") -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if array.ndim != 1:
        raise ValueError(
            f"Expected {name} to be a 1-D signal [T], got shape {list(array.shape)}; "
            f"average or pick the channels of a multi-channel signal first"
        )
    if array.dtype.kind not in "iuf":
        raise TypeError(f"Expected {name} to hold real numbers, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def _check_rate(sample_rate: Any) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float)) or sample_rate <= 0:
        raise ValueError(f"Expected sample_rate to be a positive number of Hz, got {sample_rate!r}")


def _samples(milliseconds: float, sample_rate: float, name: str) -> int:
    if not isinstance(milliseconds, (int, float, np.integer, np.floating)) or milliseconds <= 0:
        raise ValueError(f"Expected {name} > 0 (milliseconds), got {milliseconds!r}")
    count = int(round(sample_rate * milliseconds / 1000.0))
    if count < 1:
        raise ValueError(
            f"Expected {name} to span at least one sample, got {milliseconds} ms at {sample_rate} Hz "
            f"({sample_rate * milliseconds / 1000.0:.3g} samples)"
        )
    return count


def num_frames(num_samples: int, window_length: int, hop_length: int, pad: str = "none") -> int:
    """The number of frames of a ``num_samples`` signal (window and hop in samples).

    * ``"none"``: ``1 + (T - W) // H``, or 0 when ``T < W``.
    * ``"center"``: ``1 + T // H`` (0 when ``T = 0``).
    * ``"end"``: ``1 + ceil(max(T - W, 0) / H)`` (0 when ``T = 0``).

    Example:
        >>> [num_frames(t, 200, 80) for t in (0, 199, 200, 279, 280, 8000)]
        [0, 0, 1, 1, 2, 98]
        >>> [num_frames(t, 200, 80, "center") for t in (1, 79, 80, 8000)]
        [1, 1, 2, 101]
        >>> [num_frames(t, 200, 80, "end") for t in (1, 200, 201, 280, 281)]
        [1, 1, 2, 2, 3]
    """
    for name, value, least in (("num_samples", num_samples, 0), ("window_length", window_length, 1),
                               ("hop_length", hop_length, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"Expected {name} to be an int >= {least}, got {value!r}")
    if pad not in PADDINGS:
        raise ValueError(f"Expected pad to be one of {PADDINGS}, got {pad!r}")
    if num_samples == 0:
        return 0
    if pad == "none":
        return 0 if num_samples < window_length else 1 + (num_samples - window_length) // hop_length
    if pad == "center":
        return 1 + num_samples // hop_length
    return 1 + -(-max(num_samples - window_length, 0) // hop_length)


def frames(
    x: ArrayLike,
    sample_rate: float,
    window_ms: float = 25.0,
    hop_ms: float = 10.0,
    *,
    pad: str = "none",
) -> np.ndarray:
    """Cut a signal into overlapping frames (a copy; no pre-emphasis, no window).

    Args:
        x: the signal ``[T]``.
        sample_rate: in Hz.
        window_ms, hop_ms: frame length and shift in milliseconds, rounded to whole samples
            ``W`` and ``H``.
        pad: ``"none"``, ``"center"`` or ``"end"`` (see :func:`num_frames` and the module
            docstring).

    Returns:
        float32 ``[num_frames, W]``; frame ``t`` starts at sample ``t H`` (of the padded signal).

    Example:
        >>> frames(np.arange(10.0), 1000, window_ms=4, hop_ms=3).tolist()
        [[0.0, 1.0, 2.0, 3.0], [3.0, 4.0, 5.0, 6.0], [6.0, 7.0, 8.0, 9.0]]
        >>> frames(np.arange(4.0), 1000, window_ms=4, hop_ms=2, pad="center").tolist()
        [[2.0, 1.0, 0.0, 1.0], [0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 2.0, 1.0]]
    """
    return _frames64(_as_signal(x), sample_rate, window_ms, hop_ms, pad).astype(np.float32)


def _frames64(x: np.ndarray, sample_rate: float, window_ms: float, hop_ms: float, pad: str) -> np.ndarray:
    _check_rate(sample_rate)
    window = _samples(window_ms, sample_rate, "window_ms")
    hop = _samples(hop_ms, sample_rate, "hop_ms")
    count = num_frames(len(x), window, hop, pad)
    if count == 0:
        return np.zeros((0, window), dtype=np.float64)
    if pad == "center":
        # frame t covers original samples [t H - W // 2, t H - W // 2 + W): centred on t H
        x = np.pad(x, (window // 2, window - window // 2), mode="reflect" if len(x) > 1 else "edge")
    elif pad == "end":
        x = np.pad(x, (0, max((count - 1) * hop + window - len(x), 0)))
    view = np.lib.stride_tricks.sliding_window_view(x, window)[::hop][:count]
    return np.array(view, dtype=np.float64)


def window_function(name: str, length: int) -> np.ndarray:
    """A symmetric analysis window of ``length`` samples, float64 (see the module docstring for
    the formulas; ``length = 1`` gives ``[1.0]``).

    Example:
        >>> window_function("hamming", 5).round(2).tolist()
        [0.08, 0.54, 1.0, 0.54, 0.08]
        >>> window_function("povey", 3).tolist()
        [0.0, 1.0, 0.0]
    """
    if name not in WINDOWS:
        raise ValueError(f"Expected window to be one of {WINDOWS}, got {name!r}")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"Expected a window length >= 1, got {length!r}")
    if name == "rectangular" or length == 1:
        return np.ones(length)
    phase = 2 * np.pi * np.arange(length) / (length - 1)
    if name == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    hann = 0.5 - 0.5 * np.cos(phase)
    return hann if name == "hann" else hann**0.85


def _check_n_fft(n_fft: int | None, window: int) -> int:
    if n_fft is None:
        return 1 << (window - 1).bit_length()
    if isinstance(n_fft, bool) or not isinstance(n_fft, (int, np.integer)) or n_fft < window:
        raise ValueError(
            f"Expected n_fft >= the window length ({window} samples), got {n_fft!r}; leave it None for "
            f"the next power of two ({1 << (window - 1).bit_length()})"
        )
    return int(n_fft)


def power_spectrum(
    x: ArrayLike,
    sample_rate: float,
    *,
    window_ms: float = 25.0,
    hop_ms: float = 10.0,
    pad: str = "none",
    preemphasis: float = 0.97,
    remove_dc_offset: bool = False,
    window: str = "hamming",
    n_fft: int | None = None,
) -> np.ndarray:
    """The power spectrum ``|rfft(frame, n_fft)|^2`` of every frame, float32
    ``[num_frames, n_fft // 2 + 1]``.

    Each frame is processed on its own: DC removal (if asked), pre-emphasis ``y[n] = x[n] - a
    x[n-1]``, ``y[0] = (1 - a) x[0]`` (``preemphasis=0`` turns it off), then the window.
    ``n_fft`` defaults to the next power of two ``>= W``.

    Example:
        >>> power_spectrum(np.random.default_rng(0).normal(size=8000), 8000).shape
        (98, 129)
    """
    return _power64(_as_signal(x), sample_rate, window_ms, hop_ms, pad, preemphasis, remove_dc_offset, window, n_fft)[
        0
    ].astype(np.float32)


def _power64(
    x: np.ndarray,
    sample_rate: float,
    window_ms: float,
    hop_ms: float,
    pad: str,
    preemphasis: float,
    remove_dc_offset: bool,
    window: str,
    n_fft: int | None,
) -> tuple[np.ndarray, int]:
    if not 0.0 <= preemphasis < 1.0:
        raise ValueError(f"Expected 0 <= preemphasis < 1 (0 turns it off), got {preemphasis!r}")
    chunks = _frames64(x, sample_rate, window_ms, hop_ms, pad)
    width = chunks.shape[1]
    size = _check_n_fft(n_fft, width)
    taper = window_function(window, width)
    if remove_dc_offset:
        chunks = chunks - chunks.mean(axis=1, keepdims=True)
    if preemphasis:
        shifted = np.concatenate([chunks[:, :1], chunks[:, :-1]], axis=1)
        chunks = chunks - preemphasis * shifted
    spectrum = np.fft.rfft(chunks * taper, n=size, axis=1)
    return spectrum.real**2 + spectrum.imag**2, size


# ----------------------------------------------------------------------------------------------
# mel filterbank, log-mel, MFCC, deltas, CMVN
# ----------------------------------------------------------------------------------------------


def hz_to_mel(hz: ArrayLike | float) -> np.ndarray:
    """HTK mel scale ``2595 log10(1 + f / 700)`` (float64, same shape).

    Example:
        >>> float(hz_to_mel(1000.0).round(2))  # about 1000 mel at 1 kHz
        999.99
    """
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: ArrayLike | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`: ``700 (10 ** (m / 2595) - 1)``."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def _check_band(num_filters: int, low_hz: float, high_hz: float, nyquist: float | None) -> None:
    if isinstance(num_filters, bool) or not isinstance(num_filters, (int, np.integer)) or num_filters < 1:
        raise ValueError(f"Expected num_filters to be a positive int, got {num_filters!r}")
    if not 0 <= low_hz < high_hz:
        raise ValueError(f"Expected 0 <= low_hz < high_hz, got low_hz={low_hz!r}, high_hz={high_hz!r}")
    if nyquist is not None and high_hz > nyquist * (1 + 1e-12):
        raise ValueError(
            f"Expected high_hz <= the Nyquist frequency {nyquist:g} Hz (half the sample rate), got {high_hz!r}"
        )


def mel_frequencies(num_filters: int, low_hz: float, high_hz: float) -> np.ndarray:
    """The ``num_filters + 2`` band edges in Hz, equally spaced in mel from ``low_hz`` to
    ``high_hz``: filter ``i`` has left edge ``[i]``, centre ``[i + 1]`` and right edge ``[i + 2]``,
    so ``mel_frequencies(...)[1:-1]`` are the centres.

    Example:
        >>> mel_frequencies(2, 0, 4000).round(1).tolist()
        [0.0, 620.6, 1791.3, 4000.0]
    """
    _check_band(num_filters, low_hz, high_hz, None)
    return mel_to_hz(np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), num_filters + 2))


def mel_filterbank(
    num_filters: int,
    n_fft: int,
    sample_rate: float,
    low_hz: float = 0.0,
    high_hz: float | None = None,
) -> np.ndarray:
    """Triangular mel filters as a matrix float64 ``[num_filters, n_fft // 2 + 1]``.

    Filter ``i`` weighs FFT bin ``k`` (frequency ``k * sample_rate / n_fft``) by ``max(0,
    min((m_k - e_i) / (e_{i+1} - e_i), (e_{i+2} - m_k) / (e_{i+2} - e_{i+1})))`` where ``m_k``
    is the bin's mel and ``e`` the mel edges of :func:`mel_frequencies`: a triangle linear in
    mel with peak 1 at its centre (HTK, Kaldi).

    Args:
        num_filters: number of filters.
        n_fft: FFT size (the spectrum has ``n_fft // 2 + 1`` bins).
        sample_rate: in Hz.
        low_hz, high_hz: the band covered (``high_hz=None``: the Nyquist frequency).

    Raises:
        ValueError: bad sizes or band, or a filter that contains no FFT bin (too many filters
            for ``n_fft``).

    Example:
        >>> bank = mel_filterbank(4, 16, 8000)
        >>> bank.shape
        (4, 9)
        >>> mel_frequencies(4, 0, 4000)[[1, -2]].round(1).tolist()  # first and last centre (Hz)
        [324.5, 2511.4]
        >>> bank.sum(0)[1:6].round(6).tolist()  # bins 500-2500 Hz lie between them: sum 1
        [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    _check_rate(sample_rate)
    if isinstance(n_fft, bool) or not isinstance(n_fft, (int, np.integer)) or n_fft < 2:
        raise ValueError(f"Expected n_fft to be an int >= 2, got {n_fft!r}")
    nyquist = sample_rate / 2.0
    high = nyquist if high_hz is None else float(high_hz)
    _check_band(num_filters, float(low_hz), high, nyquist)
    edges = hz_to_mel(mel_frequencies(num_filters, float(low_hz), high))  # [num_filters + 2]
    bins = hz_to_mel(np.arange(n_fft // 2 + 1) * sample_rate / n_fft)  # [K]
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - left) / (centre - left)
    falling = (right - bins[None, :]) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))  # [num_filters, K]
    empty = np.flatnonzero(weights.max(axis=1) <= 0)
    if len(empty):
        raise ValueError(
            f"Mel filter(s) {empty.tolist()} of {num_filters} contain no FFT bin (n_fft={n_fft}, "
            f"{sample_rate:g} Hz, band {float(low_hz):g}-{high:g} Hz); use fewer filters, a larger n_fft "
            f"or a higher low_hz"
        )
    return weights


def log_mel(
    x: ArrayLike,
    sample_rate: float,
    num_filters: int = 40,
    *,
    window_ms: float = 25.0,
    hop_ms: float = 10.0,
    pad: str = "none",
    preemphasis: float = 0.97,
    remove_dc_offset: bool = False,
    window: str = "hamming",
    n_fft: int | None = None,
    low_hz: float = 0.0,
    high_hz: float | None = None,
    log_floor: float = 1e-10,
) -> np.ndarray:
    """Log mel filterbank energies ``log(max(power @ mel_filterbank.T, log_floor))``, float32
    ``[num_frames, num_filters]``.

    Args:
        x: the signal ``[T]`` (any scale; ``[-1, 1]`` from :func:`read_wav`).
        sample_rate: in Hz.
        num_filters: number of mel bands.
        window_ms, hop_ms, pad: framing (:func:`frames`).
        preemphasis, remove_dc_offset, window, n_fft: per-frame processing
            (:func:`power_spectrum`).
        low_hz, high_hz: the band of the filterbank (:func:`mel_filterbank`).
        log_floor: energies below it are raised to it before the log.

    Scaling ``x`` by ``c`` adds ``2 log c`` to every value that is above the floor.

    Example:
        >>> log_mel(np.random.default_rng(0).normal(size=4000), 8000, num_filters=23).shape
        (48, 23)
    """
    return _log_mel64(
        _as_signal(x), sample_rate, num_filters, window_ms, hop_ms, pad, preemphasis, remove_dc_offset, window,
        n_fft, low_hz, high_hz, log_floor,
    ).astype(np.float32)


def _log_mel64(
    x: np.ndarray,
    sample_rate: float,
    num_filters: int,
    window_ms: float,
    hop_ms: float,
    pad: str,
    preemphasis: float,
    remove_dc_offset: bool,
    window: str,
    n_fft: int | None,
    low_hz: float,
    high_hz: float | None,
    log_floor: float,
) -> np.ndarray:
    if not log_floor > 0:
        raise ValueError(f"Expected log_floor > 0, got {log_floor!r}")
    power, size = _power64(x, sample_rate, window_ms, hop_ms, pad, preemphasis, remove_dc_offset, window, n_fft)
    bank = mel_filterbank(num_filters, size, sample_rate, low_hz, high_hz)
    return np.log(np.maximum(power @ bank.T, log_floor))


def _check_order(delta_order: int) -> None:
    if delta_order not in (0, 1, 2) or isinstance(delta_order, bool):
        raise ValueError(
            f"Expected delta_order 0 (none), 1 (+deltas) or 2 (+deltas and delta-deltas), got {delta_order!r}"
        )


def mfcc(
    x: ArrayLike,
    sample_rate: float,
    num_ceps: int = 13,
    *,
    num_filters: int = 40,
    lifter: float = 22.0,
    delta_order: int = 0,
    window_ms: float = 25.0,
    hop_ms: float = 10.0,
    pad: str = "none",
    preemphasis: float = 0.97,
    remove_dc_offset: bool = False,
    window: str = "hamming",
    n_fft: int | None = None,
    low_hz: float = 0.0,
    high_hz: float | None = None,
    log_floor: float = 1e-10,
) -> np.ndarray:
    """Mel-frequency cepstral coefficients, float32 ``[num_frames, num_ceps * (1 + delta_order)]``.

    ``c = dct(log_mel, type=2, norm="ortho")[:, :num_ceps]``, then ``c[:, i] *= 1 + (lifter /
    2) sin(pi i / lifter)`` (``lifter=0``: no liftering), then (``delta_order`` 1 or 2) the
    deltas and delta-deltas of :func:`delta` appended: ``[c, d, dd]``.

    Args:
        x, sample_rate: the signal ``[T]`` and its rate.
        num_ceps: coefficients kept (``<= num_filters``), ``c0`` included.
        num_filters: mel bands before the DCT.
        lifter: the HTK / Kaldi cepstral lifter ``L`` (22), 0 for none.
        delta_order: 0, 1 or 2.
        window_ms, ..., log_floor: as in :func:`log_mel`.

    Example:
        >>> mfcc(np.random.default_rng(0).normal(size=4000), 8000).shape
        (48, 13)
    """
    import scipy.fft

    if isinstance(num_ceps, bool) or not isinstance(num_ceps, (int, np.integer)) or not 1 <= num_ceps <= num_filters:
        raise ValueError(f"Expected 1 <= num_ceps <= num_filters ({num_filters}), got {num_ceps!r}")
    if lifter < 0:
        raise ValueError(f"Expected lifter >= 0 (0 turns it off), got {lifter!r}")
    _check_order(delta_order)
    energies = _log_mel64(
        _as_signal(x), sample_rate, num_filters, window_ms, hop_ms, pad, preemphasis, remove_dc_offset, window,
        n_fft, low_hz, high_hz, log_floor,
    )
    ceps = scipy.fft.dct(energies, type=2, norm="ortho", axis=1)[:, :num_ceps]
    if lifter:
        ceps = ceps * (1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_ceps) / lifter))
    return _with_deltas(ceps, delta_order).astype(np.float32)


def _with_deltas(features: np.ndarray, order: int) -> np.ndarray:
    parts = [features]
    for _ in range(order):
        parts.append(_delta64(parts[-1], 2))
    return np.concatenate(parts, axis=1) if order else features


def _delta64(features: np.ndarray, window: int) -> np.ndarray:
    count = len(features)
    if count == 0:
        return np.zeros_like(features)
    padded = np.concatenate([np.repeat(features[:1], window, 0), features, np.repeat(features[-1:], window, 0)])
    out = np.zeros_like(features)
    for n in range(1, window + 1):
        out += n * (padded[window + n : window + n + count] - padded[window - n : window - n + count])
    return out / (2.0 * sum(n * n for n in range(1, window + 1)))


def delta(features: ArrayLike, window: int = 2) -> np.ndarray:
    """Regression deltas over time of ``features`` ``[T, F]`` (HTK / Kaldi): ``d_t = sum_{n=1}^N
    n (c_{t+n} - c_{t-n}) / (2 sum_{n=1}^N n^2)`` with ``N = window``, the first and last frame
    repeated beyond the edges. Same shape, float32.

    Example:
        >>> np.round(delta(np.arange(6.0)[:, None]).astype(float), 3).ravel().tolist()  # slope 1 inside
        [0.5, 0.8, 1.0, 1.0, 0.8, 0.5]
    """
    if isinstance(features, Tensor):
        features = features.detach().cpu().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"Expected features of shape [T, F], got {list(array.shape)}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"Expected window to be a positive int, got {window!r}")
    return _delta64(array, int(window)).astype(np.float32)


CMVN_MODES = ("none", "mean", "mean_variance")


def cmvn(features: ArrayLike, mode: str = "mean_variance", eps: float = 1e-8) -> np.ndarray:
    """Per-utterance cepstral mean (and variance) normalization of ``[T, F]`` features: subtract
    each column's mean over the frames and, for ``"mean_variance"``, divide by its population
    standard deviation (at least ``eps``; a constant column becomes 0). float32, same shape.

    A gain ``c`` on the waveform shifts every log-mel value by ``2 log c`` (and only ``c0`` of
    the MFCC): CMVN removes it.

    Example:
        >>> cmvn([[1.0, 5.0], [3.0, 5.0]]).tolist()
        [[-1.0, 0.0], [1.0, 0.0]]
    """
    if mode not in CMVN_MODES:
        raise ValueError(f"Expected mode to be one of {CMVN_MODES}, got {mode!r}")
    if isinstance(features, Tensor):
        features = features.detach().cpu().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"Expected features of shape [T, F], got {list(array.shape)}")
    if mode == "none" or len(array) == 0:
        return array.astype(np.float32)
    array = array - array.mean(axis=0, keepdims=True)
    if mode == "mean_variance":
        array = array / np.maximum(array.std(axis=0, keepdims=True), eps)
    return array.astype(np.float32)


FEATURE_KINDS = ("log_mel", "mfcc")


@dataclass(frozen=True)
class FeatureConfig:
    """Every feature setting in one place (what a cache key and an experiment record hold).

    Attributes:
        kind: ``"log_mel"`` (``num_filters`` values per frame) or ``"mfcc"`` (``num_ceps``).
        num_filters: mel bands.
        num_ceps: cepstra kept (``mfcc`` only).
        lifter: cepstral lifter (``mfcc`` only; 0: none).
        delta_order: 0, 1 or 2: append deltas / delta-deltas (both kinds).
        cmvn: ``"none"``, ``"mean"`` or ``"mean_variance"``, per utterance, applied last.
        sample_rate: resample every recording to this rate first; ``None`` keeps the file's.
        window_ms, hop_ms, pad, preemphasis, remove_dc_offset, window, n_fft, low_hz, high_hz,
            log_floor: as in :func:`log_mel`.

    Example:
        >>> FeatureConfig("mfcc", delta_order=2).num_features
        39
    """

    kind: str = "log_mel"
    num_filters: int = 40
    num_ceps: int = 13
    lifter: float = 22.0
    delta_order: int = 0
    cmvn: str = "mean_variance"
    sample_rate: int | None = None
    window_ms: float = 25.0
    hop_ms: float = 10.0
    pad: str = "none"
    preemphasis: float = 0.97
    remove_dc_offset: bool = False
    window: str = "hamming"
    n_fft: int | None = None
    low_hz: float = 0.0
    high_hz: float | None = None
    log_floor: float = 1e-10

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"Expected kind to be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.cmvn not in CMVN_MODES:
            raise ValueError(f"Expected cmvn to be one of {CMVN_MODES}, got {self.cmvn!r}")
        if self.pad not in PADDINGS:
            raise ValueError(f"Expected pad to be one of {PADDINGS}, got {self.pad!r}")
        if self.window not in WINDOWS:
            raise ValueError(f"Expected window to be one of {WINDOWS}, got {self.window!r}")
        _check_order(self.delta_order)
        if self.kind == "mfcc" and not 1 <= self.num_ceps <= self.num_filters:
            raise ValueError(f"Expected 1 <= num_ceps <= num_filters ({self.num_filters}), got {self.num_ceps!r}")
        if self.sample_rate is not None and (not isinstance(self.sample_rate, int) or self.sample_rate <= 0):
            raise ValueError(f"Expected sample_rate to be None or a positive int (Hz), got {self.sample_rate!r}")

    @property
    def num_features(self) -> int:
        """Values per frame: ``(num_filters or num_ceps) * (1 + delta_order)``."""
        base = self.num_filters if self.kind == "log_mel" else self.num_ceps
        return base * (1 + self.delta_order)


def compute_features(x: ArrayLike, sample_rate: int, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """The features ``config`` describes, float32 ``[num_frames, config.num_features]``:
    resampling (``config.sample_rate``), :func:`log_mel` or :func:`mfcc`, deltas, :func:`cmvn`.

    Example:
        >>> noise = np.random.default_rng(0).normal(size=8000)
        >>> compute_features(noise, 8000, FeatureConfig("mfcc", delta_order=1)).shape
        (98, 26)
        >>> compute_features(noise, 8000, FeatureConfig(sample_rate=16000)).shape  # 400-sample frames
        (98, 40)
    """
    if not isinstance(config, FeatureConfig):
        raise TypeError(f"Expected a FeatureConfig, got {type(config).__name__}")
    signal = _as_signal(x)
    rate = sample_rate
    if config.sample_rate is not None and config.sample_rate != sample_rate:
        signal, rate = resample(signal, int(sample_rate), config.sample_rate).astype(np.float64), config.sample_rate
    if config.kind == "mfcc":
        spectral = dict(
            window_ms=config.window_ms, hop_ms=config.hop_ms, pad=config.pad, preemphasis=config.preemphasis,
            remove_dc_offset=config.remove_dc_offset, window=config.window, n_fft=config.n_fft,
            low_hz=config.low_hz, high_hz=config.high_hz, log_floor=config.log_floor,
        )
        out = mfcc(signal, rate, config.num_ceps, num_filters=config.num_filters, lifter=config.lifter,
                   delta_order=config.delta_order, **spectral)
    else:
        energies = _log_mel64(
            signal, rate, config.num_filters, config.window_ms, config.hop_ms, config.pad, config.preemphasis,
            config.remove_dc_offset, config.window, config.n_fft, config.low_hz, config.high_hz, config.log_floor,
        )
        out = _with_deltas(energies, config.delta_order).astype(np.float32)
    return cmvn(out, config.cmvn)


# ----------------------------------------------------------------------------------------------
# character targets
# ----------------------------------------------------------------------------------------------

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

PAD = 0  # padding of targets, and the CTC blank
BLANK = PAD
BOS, EOS = 1, 2
FIRST_CHARACTER = 3
CHARACTERS = "".join(sorted(set("".join(DIGIT_WORDS))))  # "efghinorstuvwxz": the letters of the ten words
CHARACTER_VOCAB_SIZE = FIRST_CHARACTER + len(CHARACTERS)
_CHARACTER_IDS = {character: FIRST_CHARACTER + i for i, character in enumerate(CHARACTERS)}


def encode_characters(word: str, *, bos_eos: bool = False) -> list[int]:
    """The ids of the letters of ``word``: ``FIRST_CHARACTER + CHARACTERS.index(letter)``;
    with ``bos_eos`` wrapped as ``[BOS, ..., EOS]`` (sequence-to-sequence targets). Ids:
    ``PAD = BLANK = 0``, ``BOS = 1``, ``EOS = 2``, letters ``3 .. 17``
    (:data:`CHARACTER_VOCAB_SIZE` = 18).

    Raises:
        ValueError: a character outside :data:`CHARACTERS`.

    Example:
        >>> CHARACTERS
        'efghinorstuvwxz'
        >>> encode_characters("one"), encode_characters("one", bos_eos=True)
        ([9, 8, 3], [1, 9, 8, 3, 2])
    """
    ids = []
    for position, character in enumerate(word.lower()):
        if character not in _CHARACTER_IDS:
            raise ValueError(
                f"Cannot encode {word!r}: character {character!r} at position {position} is not in the "
                f"alphabet {CHARACTERS!r} (the letters of the digit words zero..nine)"
            )
        ids.append(_CHARACTER_IDS[character])
    return [BOS, *ids, EOS] if bos_eos else ids


def decode_characters(ids: Iterable[int] | Tensor) -> str:
    """The letters of ``ids``: ``PAD``/``BLANK`` and ``BOS`` are skipped, reading stops at the
    first ``EOS``. (Collapse CTC repeats before calling this.)

    Example:
        >>> decode_characters([1, 9, 8, 3, 2, 0, 0])
        'one'
    """
    if isinstance(ids, Tensor):
        ids = ids.tolist()
    letters = []
    for position, value in enumerate(ids):
        value = int(value)
        if value == EOS:
            break
        if value in (PAD, BOS):
            continue
        if not FIRST_CHARACTER <= value < CHARACTER_VOCAB_SIZE:
            raise ValueError(
                f"Expected character ids in [0, {CHARACTER_VOCAB_SIZE}), got {value} at position {position}"
            )
        letters.append(CHARACTERS[value - FIRST_CHARACTER])
    return "".join(letters)


# ----------------------------------------------------------------------------------------------
# the Free Spoken Digit Dataset
# ----------------------------------------------------------------------------------------------

FSDD_SPLITS = ("train", "test", "all")
FSDD_SAMPLE_RATE = 8000
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")
_FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset"
_CACHE_FORMAT = "graphattn.speech_features/1"


class SpokenDigit(NamedTuple):
    """One FSDD utterance: ``features`` float32 ``[T, F]``, the ``label`` (0-9), the
    ``speaker``, the take ``index`` (0-49) and the spoken ``word`` (``"zero"`` .. ``"nine"``)."""

    features: Tensor
    label: int
    speaker: str
    index: int
    word: str


class SpeechBatch(NamedTuple):
    """A zero-padded batch: ``features`` float32 ``[B, T, F]``, ``lengths`` int64 ``[B]`` (real
    frames per row), ``labels`` int64 ``[B]``; with character targets, ``targets`` int64 ``[B,
    S]`` (padding :data:`PAD`) and ``target_lengths`` int64 ``[B]``, else ``None``."""

    features: Tensor
    lengths: Tensor
    labels: Tensor
    targets: Tensor | None = None
    target_lengths: Tensor | None = None


@dataclass(frozen=True, eq=False)
class SpokenDigitDataset:
    """A list-like set of :class:`SpokenDigit` utterances (a map-style ``torch`` dataset; use
    ``collate_fn=collate``).

    Attributes:
        examples: the utterances, sorted by speaker, take index, digit.
        split: how they were chosen, e.g. ``"train"`` or ``"test (holdout jackson)"``.
        config: the :class:`FeatureConfig` that made the features.
    """

    examples: tuple[SpokenDigit, ...]
    split: str
    config: FeatureConfig

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> SpokenDigit:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"Expected an int index, got {type(index).__name__}; use subset() for several examples")
        return self.examples[index]

    def subset(self, indices: Tensor | Sequence[int] | slice) -> "SpokenDigitDataset":
        """The examples at ``indices`` (a slice, a list or an integer tensor), in that order."""
        if isinstance(indices, slice):
            indices = range(len(self))[indices]
        return SpokenDigitDataset(tuple(self.examples[int(i)] for i in indices), self.split, self.config)

    @property
    def num_features(self) -> int:
        """Values per frame (``F``)."""
        return self.config.num_features

    def speakers(self) -> tuple[str, ...]:
        """The speakers present, sorted."""
        return tuple(sorted({example.speaker for example in self.examples}))

    def speaker_counts(self) -> dict[str, int]:
        """Utterances per speaker."""
        counts: dict[str, int] = {}
        for example in self.examples:
            counts[example.speaker] = counts.get(example.speaker, 0) + 1
        return dict(sorted(counts.items()))

    def label_counts(self) -> Tensor:
        """Utterances per digit, int64 ``[10]``."""
        return torch.bincount(torch.tensor([e.label for e in self.examples], dtype=torch.long), minlength=10)

    def lengths(self) -> Tensor:
        """Frames per utterance, int64 ``[N]``."""
        return torch.tensor([len(e.features) for e in self.examples], dtype=torch.long)

    def __repr__(self) -> str:
        lengths = self.lengths()
        span = f"frames {int(lengths.min())}-{int(lengths.max())}" if len(self) else "empty"
        return (
            f"SpokenDigitDataset({self.split}: {len(self)} utterances, {len(self.speakers())} speakers, "
            f"{self.config.kind} [T, {self.num_features}], {span})"
        )


class FsddRecording(NamedTuple):
    """One FSDD file: its ``path``, the digit ``label``, the ``speaker`` and the take ``index``."""

    path: Path
    label: int
    speaker: str
    index: int


def _recordings_dir(root: PathLike) -> Path:
    root = Path(root)
    for candidate in (root / "recordings", root):
        if candidate.is_dir() and any(_FSDD_NAME.match(p.name) for p in candidate.iterdir() if p.suffix == ".wav"):
            return candidate
    raise FileNotFoundError(
        f"FSDD recordings not found: expected WAV files named <digit>_<speaker>_<index>.wav in "
        f"{root / 'recordings'} (or in {root} itself). Clone {_FSDD_URL} and pass the clone's folder; "
        f"on this project's machines it is ../shared/data/speech/fsdd"
    )


def fsdd_recordings(root: PathLike) -> list[FsddRecording]:
    """Every recording of an FSDD folder (``root`` or ``root/recordings``), sorted by speaker,
    take index and digit, as :class:`FsddRecording` records.

    Raises:
        FileNotFoundError: no FSDD recordings there (the message gives the expected path).
        ValueError: a ``.wav`` file whose name is not ``<digit>_<speaker>_<index>.wav``.
    """
    folder = _recordings_dir(root).resolve()
    records = []
    for path in folder.iterdir():
        if path.suffix.lower() != ".wav":
            continue
        match = _FSDD_NAME.match(path.name)
        if match is None:
            raise ValueError(
                f"Unexpected file {path}: FSDD recordings are named <digit>_<speaker>_<index>.wav "
                f"(e.g. 7_jackson_32.wav); move or rename it"
            )
        records.append(FsddRecording(path, int(match.group(1)), match.group(2), int(match.group(3))))
    records.sort(key=lambda r: (r.speaker, r.index, r.label))
    return records


def fsdd_speakers(root: PathLike) -> tuple[str, ...]:
    """The speakers of an FSDD folder, sorted (the 2020 release: george, jackson, lucas, nicolas,
    theo, yweweler)."""
    return tuple(sorted({record.speaker for record in fsdd_recordings(root)}))


# features of single files, keyed by (path, size, mtime, settings)
_MEMORY_CACHE: "OrderedDict[tuple[Any, ...], Tensor]" = OrderedDict()
_MEMORY_CACHE_ENTRIES = 50_000


def clear_feature_cache() -> None:
    """Forget the features :func:`load_fsdd` keeps in memory (the disk cache is untouched)."""
    _MEMORY_CACHE.clear()


def _file_key(path: Path, config: FeatureConfig) -> tuple[Any, ...]:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns, config)


def _featurize(record: FsddRecording, config: FeatureConfig, expected_rate: list[int]) -> Tensor:
    key = _file_key(record.path, config)
    cached = _MEMORY_CACHE.get(key)
    if cached is not None:
        return cached
    waveform = read_wav(record.path)
    if config.sample_rate is None:
        if expected_rate and waveform.sample_rate != expected_rate[0]:
            raise ValueError(
                f"{record.path} is sampled at {waveform.sample_rate} Hz, other recordings at {expected_rate[0]} Hz; "
                f"pass FeatureConfig(sample_rate=...) to resample them all to one rate"
            )
        expected_rate[:] = [waveform.sample_rate]
    features = torch.from_numpy(compute_features(waveform.samples, waveform.sample_rate, config))
    _MEMORY_CACHE[key] = features
    while len(_MEMORY_CACHE) > _MEMORY_CACHE_ENTRIES:
        _MEMORY_CACHE.popitem(last=False)
    return features


def _disk_cache_file(records: Sequence[FsddRecording], config: FeatureConfig, cache_dir: PathLike) -> Path:
    digest = hashlib.sha256()
    files = []
    for record in records:
        stat = record.path.stat()
        files.append([record.path.name, stat.st_size, stat.st_mtime_ns])
    digest.update(json.dumps({"format": _CACHE_FORMAT, "config": asdict(config), "files": files}).encode())
    return Path(cache_dir) / f"fsdd.{digest.hexdigest()[:24]}.pt"


def _read_disk_cache(file: Path, records: Sequence[FsddRecording]) -> list[Tensor] | None:
    if not file.exists():
        return None
    try:
        store = torch.load(file, weights_only=True)
    except Exception as error:  # unreadable: rebuild it
        warnings.warn(f"Ignoring the unreadable cache file {file} ({error}); rebuilding it", stacklevel=3)
        return None
    if (
        not isinstance(store, dict)
        or store.get("format") != _CACHE_FORMAT
        or store.get("names") != [record.path.name for record in records]
    ):
        return None
    return list(store["features"])


def _write_disk_cache(file: Path, records: Sequence[FsddRecording], features: Sequence[Tensor]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=file.name, suffix=".tmp")
    os.close(handle)
    try:
        store = {"format": _CACHE_FORMAT, "names": [r.path.name for r in records], "features": list(features)}
        torch.save(store, temporary)
        os.replace(temporary, file)  # atomic: a reader never sees half a file
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_fsdd(
    root: PathLike,
    *,
    split: str = "train",
    features: str | FeatureConfig = "log_mel",
    holdout_speaker: str | None = None,
    speakers: Iterable[str] | None = None,
    limit: int | None = None,
    cache_dir: PathLike | None = None,
) -> SpokenDigitDataset:
    """Load the Free Spoken Digit Dataset as frame features.

    Splits:

    * official (``holdout_speaker=None``): takes 0-4 of every speaker and digit are ``"test"``
      (10%: 300 of 3,000 recordings), takes 5-49 ``"train"`` -- the split of the FSDD README;
      every speaker is in both.
    * speaker-independent (``holdout_speaker="jackson"``, ...): ``"test"`` is every recording of
      that speaker (500), ``"train"`` every recording of the others (2,500); no speaker is in
      both, so test accuracy measures generalization to an unseen voice.

    ``"all"`` gives both parts. Utterances are sorted by speaker, take index, digit.

    Args:
        root: the FSDD folder (holding ``recordings/``) or the ``recordings`` folder itself.
        split: ``"train"``, ``"test"`` or ``"all"``.
        features: ``"log_mel"`` or ``"mfcc"`` (a default :class:`FeatureConfig` of that kind: 40
            mel bands / 13 MFCCs, 25 ms Hamming frames every 10 ms, per-utterance mean and
            variance normalization), or a :class:`FeatureConfig`.
        holdout_speaker: the speaker of a speaker-independent split.
        speakers: keep only these speakers (after the split).
        limit: keep only the first ``limit`` utterances (after the split and ``speakers``):
            quick experiments and tests.
        cache_dir: also store the features in a file there, keyed by the settings and the
            files' names, sizes and modification times; a later call with the same selection
            reads it instead of the WAV files. Features are always cached in memory, per file
            (:func:`clear_feature_cache`).

    Returns:
        A :class:`SpokenDigitDataset`.

    Raises:
        FileNotFoundError: no recordings under ``root`` (the message gives the expected path).
        ValueError: an unknown split, feature kind or speaker.
    """
    if split not in FSDD_SPLITS:
        raise ValueError(f"Expected split to be one of {FSDD_SPLITS}, got {split!r}")
    if isinstance(features, str):
        if features not in FEATURE_KINDS:
            raise ValueError(
                f"Expected features to be one of {FEATURE_KINDS} or a FeatureConfig, got {features!r}"
            )
        config = FeatureConfig(kind=features)
    elif isinstance(features, FeatureConfig):
        config = features
    else:
        raise TypeError(f"Expected features to be a str or a FeatureConfig, got {type(features).__name__}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"Expected limit to be None or a non-negative int, got {limit!r}")
    records = fsdd_recordings(root)
    present = sorted({r.speaker for r in records})
    if holdout_speaker is not None and holdout_speaker not in present:
        raise ValueError(f"Unknown holdout_speaker {holdout_speaker!r}; the speakers are {', '.join(present)}")
    keep = None
    if speakers is not None:
        keep = [speakers] if isinstance(speakers, str) else list(speakers)
        unknown = sorted(set(keep) - set(present))
        if unknown:
            raise ValueError(f"Unknown speaker(s) {unknown}; the speakers are {', '.join(present)}")

    def in_test(record: FsddRecording) -> bool:
        return record.speaker == holdout_speaker if holdout_speaker is not None else record.index <= 4

    if split != "all":
        records = [r for r in records if in_test(r) == (split == "test")]
    if keep is not None:
        records = [r for r in records if r.speaker in keep]
    if limit is not None:
        records = records[:limit]

    cache_file = _disk_cache_file(records, config, cache_dir) if cache_dir is not None else None
    tensors = _read_disk_cache(cache_file, records) if cache_file is not None else None
    if tensors is None:
        rate: list[int] = []
        tensors = [_featurize(record, config, rate) for record in records]
        if cache_file is not None:
            _write_disk_cache(cache_file, records, tensors)
    examples = tuple(
        SpokenDigit(tensor.clone(), r.label, r.speaker, r.index, DIGIT_WORDS[r.label])
        for r, tensor in zip(records, tensors)
    )
    name = split if holdout_speaker is None else f"{split} (holdout {holdout_speaker})"
    return SpokenDigitDataset(examples, name, config)


def collate(
    examples: Sequence[SpokenDigit],
    *,
    targets: str | None = None,
    pad_to: int | None = None,
) -> SpeechBatch:
    """Zero-pad utterances into a :class:`SpeechBatch`.

    Args:
        examples: :class:`SpokenDigit` items (or any tuples ``(features [T_i, F], label, ...,
            word)`` with the word last).
        targets: ``None``; ``"ctc"``: the letters of the word (:func:`encode_characters`),
            padded with :data:`PAD` (= :data:`BLANK`, id 0 -- ``torch.nn.CTCLoss(blank=0)``);
            ``"seq2seq"``: ``[BOS, letters, EOS]`` padded with :data:`PAD`.
        pad_to: pad the time axis to this many frames (at least the longest utterance).

    Returns:
        ``SpeechBatch(features [B, T, F], lengths [B], labels [B], targets, target_lengths)``.

    Example:
        >>> a = SpokenDigit(torch.ones(3, 2), 1, "x", 0, "one")
        >>> b = SpokenDigit(torch.ones(1, 2), 6, "x", 0, "six")
        >>> batch = collate([a, b], targets="ctc")
        >>> batch.features.shape, batch.lengths.tolist(), batch.labels.tolist()
        (torch.Size([2, 3, 2]), [3, 1], [1, 6])
        >>> batch.targets.tolist(), batch.target_lengths.tolist()
        ([[9, 8, 3], [11, 7, 16]], [3, 3])
    """
    if len(examples) == 0:
        raise ValueError("Expected at least one example to collate, got none")
    if targets not in (None, "ctc", "seq2seq"):
        raise ValueError(f"Expected targets to be None, 'ctc' or 'seq2seq', got {targets!r}")
    rows = []
    for position, example in enumerate(examples):
        features = torch.as_tensor(example[0])
        if features.dim() != 2 or not features.dtype.is_floating_point:
            raise ValueError(
                f"Expected example {position} to hold float features of shape [T, F], got "
                f"{features.dtype} {list(features.shape)}"
            )
        if rows and features.shape[1] != rows[0].shape[1]:
            raise ValueError(
                f"Expected every example to have {rows[0].shape[1]} features per frame, example {position} "
                f"has {features.shape[1]}"
            )
        rows.append(features)
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    width = int(lengths.max())
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"Expected pad_to >= the longest utterance ({width} frames), got {pad_to}")
        width = pad_to
    batch = torch.zeros(len(rows), width, rows[0].shape[1], dtype=torch.float32)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    labels = torch.tensor([int(example[1]) for example in examples], dtype=torch.long)
    if targets is None:
        return SpeechBatch(batch, lengths, labels)
    sequences = [encode_characters(str(example[-1]), bos_eos=targets == "seq2seq") for example in examples]
    target_lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    padded = torch.full((len(sequences), int(target_lengths.max())), PAD, dtype=torch.long)
    for i, sequence in enumerate(sequences):
        padded[i, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return SpeechBatch(batch, lengths, labels, padded, target_lengths)
