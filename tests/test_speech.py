"""Tests for graphattn.data.speech: WAV reading (every PCM width and float, the errors), framing
counts, the filterbank against an independent triangle formula, pure tones in the right mel band,
gain / shift invariances, MFCC against scipy's DCT, deltas, CMVN, characters, batching, and the
FSDD loader on a synthetic folder and (when ../shared/data is present) on a few real files."""
from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import scipy.io.wavfile
import scipy.signal
import torch

from graphattn.data import speech
from graphattn.data.speech import (
    BLANK,
    BOS,
    CHARACTER_VOCAB_SIZE,
    CHARACTERS,
    DIGIT_WORDS,
    EOS,
    FIRST_CHARACTER,
    PAD,
    FeatureConfig,
    SpeechBatch,
    SpokenDigit,
    SpokenDigitDataset,
    WavFormatError,
    Waveform,
    clear_feature_cache,
    cmvn,
    collate,
    compute_features,
    decode_characters,
    delta,
    encode_characters,
    frames,
    fsdd_recordings,
    fsdd_speakers,
    hz_to_mel,
    load_fsdd,
    log_mel,
    mel_filterbank,
    mel_frequencies,
    mel_to_hz,
    mfcc,
    num_frames,
    power_spectrum,
    read_wav,
    resample,
    window_function,
)


def noise(length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=0.1, size=length)


# ----------------------------------------------------------------------------------------------
# framing
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 79, 199, 200, 201, 279, 280, 281, 359, 360, 1000, 3358])
@pytest.mark.parametrize("pad", ["none", "center", "end"])
def test_frame_count_formula(length: int, pad: str) -> None:
    window, hop = 200, 80  # 25 ms / 10 ms at 8 kHz
    if length == 0:
        expected = 0
    elif pad == "none":
        expected = 0 if length < window else 1 + (length - window) // hop
    elif pad == "center":
        expected = 1 + length // hop
    else:
        expected = 1 + math.ceil(max(length - window, 0) / hop)
    assert num_frames(length, window, hop, pad) == expected
    out = frames(noise(length), 8000, pad=pad)
    assert out.shape == (expected, window) and out.dtype == np.float32


def test_frame_contents() -> None:
    x = np.arange(1000, dtype=np.float64)
    plain = frames(x, 8000)  # W 200, H 80
    for t in range(len(plain)):
        assert np.array_equal(plain[t], x[80 * t : 80 * t + 200])
    centred = frames(x, 8000, pad="center")
    for t in range(len(centred)):
        if 80 * t < len(x):
            assert centred[t, 100] == x[80 * t]  # frame t is centred on sample t * hop
    assert np.array_equal(centred[2], x[60:260])
    end = frames(x, 8000, pad="end")
    assert np.array_equal(end[-1, : 1000 - 80 * (len(end) - 1)], x[80 * (len(end) - 1) :])
    assert not end[-1, 1000 - 80 * (len(end) - 1) :].any()  # zeros after the signal
    assert end[-1, 1000 - 80 * (len(end) - 1) - 1] == 999  # the last sample is covered


def test_frame_lengths_round_to_samples() -> None:
    assert frames(noise(16000), 16000).shape == (98, 400)
    assert frames(noise(22050), 22050, window_ms=20, hop_ms=10).shape == (1 + (22050 - 441) // 220, 441)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: frames(np.zeros((2, 100)), 8000), "1-D signal"),
        (lambda: frames(np.zeros(100), 8000, pad="same"), "pad"),
        (lambda: frames(np.zeros(100), 8000, window_ms=0), "window_ms"),
        (lambda: frames(np.zeros(100), 8000, hop_ms=0.01), "at least one sample"),
        (lambda: frames(np.zeros(100), -1), "sample_rate"),
        (lambda: num_frames(-1, 200, 80), "num_samples"),
        (lambda: power_spectrum(np.zeros(400), 8000, n_fft=128), "n_fft"),
        (lambda: power_spectrum(np.zeros(400), 8000, preemphasis=1.0), "preemphasis"),
        (lambda: power_spectrum(np.zeros(400), 8000, window="blackman"), "window"),
    ],
)
def test_framing_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------------------------
# windows and spectra
# ----------------------------------------------------------------------------------------------


def test_windows_match_numpy() -> None:
    assert np.allclose(window_function("hamming", 200), np.hamming(200))
    assert np.allclose(window_function("hann", 200), np.hanning(200))
    assert np.allclose(window_function("povey", 200), np.hanning(200) ** 0.85)
    assert np.allclose(window_function("hamming", 200), scipy.signal.get_window("hamming", 200, fftbins=False))
    assert np.array_equal(window_function("rectangular", 7), np.ones(7))
    assert window_function("hann", 1).tolist() == [1.0]


def test_power_spectrum_per_frame_processing() -> None:
    x = noise(1000, seed=1)
    raw = power_spectrum(x, 8000, preemphasis=0.0, window="rectangular")
    chunks = np.stack([x[80 * t : 80 * t + 200] for t in range(num_frames(1000, 200, 80))])
    assert np.allclose(raw, np.abs(np.fft.rfft(chunks, 256)) ** 2, rtol=1e-5, atol=1e-8)
    emphasized = chunks - 0.97 * np.concatenate([chunks[:, :1], chunks[:, :-1]], axis=1)  # y[0] = (1 - a) x[0]
    expected = np.abs(np.fft.rfft((emphasized - 0) * np.hamming(200), 256)) ** 2
    assert np.allclose(power_spectrum(x, 8000), expected, rtol=1e-5, atol=1e-8)
    centred = chunks - chunks.mean(1, keepdims=True)
    centred = centred - 0.97 * np.concatenate([centred[:, :1], centred[:, :-1]], axis=1)
    expected = np.abs(np.fft.rfft(centred * np.hanning(200) ** 0.85, 512)) ** 2
    got = power_spectrum(x, 8000, remove_dc_offset=True, window="povey", n_fft=512)
    assert got.shape == (len(chunks), 257) and np.allclose(got, expected, rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# mel filterbank
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_filters, n_fft, rate, low, high",
    [(40, 256, 8000, 0, None), (23, 512, 16000, 20, 7600), (80, 1024, 16000, 0, None)],
)
def test_filterbank_matches_triangle_formula(num_filters: int, n_fft: int, rate: int, low: float, high) -> None:
    bank = mel_filterbank(num_filters, n_fft, rate, low, high)
    high = rate / 2 if high is None else high
    edges = mel_frequencies(num_filters, low, high)
    assert np.isclose(edges[0], low) and np.isclose(edges[-1], high)
    assert np.allclose(np.diff(hz_to_mel(edges)), (hz_to_mel(high) - hz_to_mel(low)) / (num_filters + 1))
    bin_mel = hz_to_mel(np.arange(n_fft // 2 + 1) * rate / n_fft)
    for i in range(num_filters):  # independent: piecewise-linear interpolation in mel
        knots = hz_to_mel(edges[i : i + 3])
        assert np.allclose(bank[i], np.interp(bin_mel, knots, [0.0, 1.0, 0.0], left=0, right=0), atol=1e-12)
    assert bank.min() >= 0 and bank.max() <= 1
    assert ((bank > 0).sum(0) <= 2).all()  # only neighbours overlap
    inside = (bin_mel >= hz_to_mel(edges[1])) & (bin_mel <= hz_to_mel(edges[-2]))
    assert np.allclose(bank.sum(0)[inside], 1.0)  # a partition of unity between the outer centres
    assert (bank.sum(0)[~inside] < 1 + 1e-12).all()
    assert (np.diff(bank.argmax(1)) >= 0).all()


def test_filterbank_peaks_at_one_on_its_centres() -> None:
    rate, n_fft = 8000, 1 << 16  # 0.12 Hz bins: a bin sits next to every centre
    bank = mel_filterbank(40, n_fft, rate)
    centres = mel_frequencies(40, 0, rate / 2)[1:-1]
    bins = np.arange(n_fft // 2 + 1) * rate / n_fft
    spacing_hz = np.diff(mel_frequencies(40, 0, rate / 2))[:-1]  # centre - left edge of every filter
    assert np.all(1.0 - bank.max(1) <= 1.5 * (rate / n_fft) / spacing_hz)  # 1 up to the bin offset
    assert np.allclose(bank.max(1), 1.0, atol=5e-3)
    assert np.all(np.abs(bins[bank.argmax(1)] - centres) <= rate / n_fft)
    assert np.allclose(mel_to_hz(hz_to_mel(centres)), centres)


def test_filterbank_errors() -> None:
    with pytest.raises(ValueError, match="contain no FFT bin"):
        mel_filterbank(128, 64, 8000)
    with pytest.raises(ValueError, match="Nyquist"):
        mel_filterbank(10, 256, 8000, high_hz=5000)
    with pytest.raises(ValueError, match="low_hz < high_hz"):
        mel_filterbank(10, 256, 8000, low_hz=3000, high_hz=2000)
    with pytest.raises(ValueError, match="num_filters"):
        mel_filterbank(0, 256, 8000)


# ----------------------------------------------------------------------------------------------
# log-mel: pure tones, gain, time shift
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate, num_filters", [(8000, 40), (16000, 40), (8000, 23)])
@pytest.mark.parametrize("position", [0.1, 0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("offset", [-0.3, 0.0, 0.3])
def test_pure_tone_lands_in_the_nearest_band(rate: int, num_filters: int, position: float, offset: float) -> None:
    centres = hz_to_mel(mel_frequencies(num_filters, 0, rate / 2)[1:-1])
    spacing = centres[1] - centres[0]
    target = int(position * (num_filters - 1))
    frequency = float(mel_to_hz(centres[target] + offset * spacing))  # 30% of a band off-centre
    t = np.arange(rate // 4) / rate
    features = log_mel(np.sin(2 * np.pi * frequency * t + 0.3), rate, num_filters)
    nearest = int(np.abs(centres - hz_to_mel(frequency)).argmin())
    assert nearest == target
    assert (features.argmax(1) == nearest).all()


@pytest.mark.parametrize("gain", [0.01, 0.5, 3.0])
def test_gain_shifts_log_mel_by_twice_its_log(gain: float) -> None:
    x = noise(4000, seed=2) + 0.3 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000)
    base, scaled = log_mel(x, 8000), log_mel(gain * x, 8000)
    assert np.allclose(scaled - base, 2 * math.log(gain), atol=1e-4)
    assert np.allclose(cmvn(scaled), cmvn(base), atol=1e-3)
    assert np.allclose(cmvn(scaled, "mean"), cmvn(base, "mean"), atol=1e-4)
    ceps, ceps_scaled = mfcc(x, 8000), mfcc(gain * x, 8000)
    assert np.allclose(ceps_scaled[:, 0] - ceps[:, 0], 2 * math.log(gain) * math.sqrt(40), atol=1e-3)
    assert np.allclose(ceps_scaled[:, 1:], ceps[:, 1:], atol=1e-4)  # only c0 sees the gain
    config = FeatureConfig("mfcc", delta_order=2)  # mean_variance CMVN by default
    assert np.allclose(compute_features(gain * x, 8000, config), compute_features(x, 8000, config), atol=1e-3)


@pytest.mark.parametrize("pad", ["none", "center"])
def test_shift_by_a_hop_shifts_the_frames(pad: str) -> None:
    x = noise(3000, seed=3)
    hop = 80
    for function in (log_mel, mfcc):
        whole, shifted = function(x, 8000, pad=pad), function(x[hop:], 8000, pad=pad)
        if pad == "none":
            assert len(shifted) == len(whole) - 1 and np.allclose(shifted, whole[1:], atol=1e-5)
        else:  # interior frames only: the reflected edges differ
            assert np.allclose(shifted[2:-3], whole[3:-3], atol=1e-5)


def test_log_floor() -> None:
    silent = log_mel(np.zeros(1000), 8000)
    assert np.allclose(silent, math.log(1e-10))
    assert np.allclose(log_mel(np.zeros(1000), 8000, log_floor=1e-5), math.log(1e-5))
    assert log_mel(np.zeros(100), 8000).shape == (0, 40)


def test_inputs_may_be_tensors_and_lists() -> None:
    x = noise(1000, seed=4)
    reference = log_mel(x, 8000)
    assert np.array_equal(log_mel(torch.tensor(x, requires_grad=True), 8000), reference)
    assert np.array_equal(log_mel(x.tolist(), 8000), reference)


# ----------------------------------------------------------------------------------------------
# MFCC, deltas, CMVN
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lifter", [0.0, 22.0])
def test_mfcc_equals_scipy_dct_of_log_mel(lifter: float) -> None:
    x = noise(6000, seed=5)
    energies = log_mel(x, 8000, 26).astype(np.float64)
    reference = scipy.fft.dct(energies, type=2, norm="ortho", axis=-1)[:, :13]
    if lifter:
        reference = reference * (1 + 11 * np.sin(np.pi * np.arange(13) / 22))
    got = mfcc(x, 8000, 13, num_filters=26, lifter=lifter)
    assert got.shape == (len(energies), 13) and got.dtype == np.float32
    assert np.allclose(got, reference, rtol=1e-5, atol=1e-4)
    # the orthonormal DCT-II written out
    k = np.arange(26)
    basis = np.sqrt(2 / 26) * np.cos(np.pi * np.arange(13)[:, None] * (2 * k[None, :] + 1) / 52)
    basis[0] /= np.sqrt(2)
    plain = mfcc(x, 8000, 13, num_filters=26, lifter=0)
    assert np.allclose(plain, energies @ basis.T, rtol=1e-5, atol=1e-4)


def test_mfcc_deltas() -> None:
    x = noise(6000, seed=6)
    base = mfcc(x, 8000)
    full = mfcc(x, 8000, delta_order=2)
    assert full.shape == (len(base), 39)
    assert np.allclose(full[:, :13], base, atol=1e-5)
    assert np.allclose(full[:, 13:26], delta(base), atol=1e-4)
    assert np.allclose(full[:, 26:], delta(delta(base)), atol=1e-4)
    assert mfcc(x, 8000, delta_order=1).shape == (len(base), 26)
    with pytest.raises(ValueError, match="delta_order"):
        mfcc(x, 8000, delta_order=3)
    with pytest.raises(ValueError, match="num_ceps"):
        mfcc(x, 8000, 41)


@pytest.mark.parametrize("window", [1, 2, 3])
def test_delta_regression_formula(window: int) -> None:
    c = np.random.default_rng(7).normal(size=(9, 4))
    T = len(c)
    expected = np.zeros_like(c)
    for t in range(T):
        for n in range(1, window + 1):
            later, earlier = c[min(t + n, T - 1)], c[max(t - n, 0)]
            expected[t] += n * (later - earlier)
    expected /= 2 * sum(n * n for n in range(1, window + 1))
    assert np.allclose(delta(c, window), expected, atol=1e-6)
    line = np.arange(20.0)[:, None] * 3.0
    assert np.allclose(delta(line, window)[window:-window], 3.0)  # the slope of a ramp
    assert delta(np.zeros((0, 4))).shape == (0, 4)
    assert np.array_equal(delta(np.ones((1, 4))), np.zeros((1, 4)))


def test_cmvn() -> None:
    x = np.random.default_rng(8).normal(loc=3.0, scale=2.0, size=(50, 5))
    x[:, 4] = 7.0  # a constant column
    normalized = cmvn(x)
    assert np.allclose(normalized.mean(0), 0, atol=1e-6)
    assert np.allclose(normalized.std(0)[:4], 1, atol=1e-5) and np.allclose(normalized[:, 4], 0)
    assert np.allclose(cmvn(x, "mean").std(0), x.std(0), atol=1e-5)
    assert np.allclose(cmvn(x, "none"), x)
    assert cmvn(np.zeros((0, 3))).shape == (0, 3)
    with pytest.raises(ValueError, match="mode"):
        cmvn(x, "global")
    with pytest.raises(ValueError, match=r"\[T, F\]"):
        cmvn(np.zeros(5))


def test_feature_config() -> None:
    assert FeatureConfig().num_features == 40
    assert FeatureConfig("mfcc", num_ceps=20, delta_order=1).num_features == 40
    assert FeatureConfig(delta_order=2).num_features == 120
    x = noise(4000, seed=9)
    assert compute_features(x, 8000, FeatureConfig(delta_order=1)).shape == (48, 80)
    assert np.allclose(
        compute_features(x, 8000, FeatureConfig(cmvn="none")), log_mel(x, 8000), atol=1e-6
    )
    for bad in (dict(kind="spectrogram"), dict(cmvn="global"), dict(pad="same"), dict(window="kaiser"),
                dict(delta_order=3), dict(kind="mfcc", num_ceps=50), dict(sample_rate=0)):
        with pytest.raises(ValueError):
            FeatureConfig(**bad)
    with pytest.raises(TypeError, match="FeatureConfig"):
        compute_features(x, 8000, {"kind": "mfcc"})


# ----------------------------------------------------------------------------------------------
# WAV files
# ----------------------------------------------------------------------------------------------


def write_raw_wav(
    path: Path, body: bytes, *, tag: int, bits: int, channels: int = 1, rate: int = 8000,
    extensible_tag: int | None = None,
) -> None:
    """A WAV file written byte by byte (for 24-bit PCM and compressed formats scipy cannot write)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    if extensible_tag is not None:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", extensible_tag) + guid_tail
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")
    path.write_bytes(b"RIFF" + struct.pack("<I", len(chunks)) + chunks)


@pytest.mark.parametrize(
    "dtype, scale, offset",
    [
        (np.uint8, 128.0, 128.0),
        (np.int16, 2.0**15, 0.0),
        (np.int32, 2.0**31, 0.0),
        (np.float32, 1.0, 0.0),
        (np.float64, 1.0, 0.0),
    ],
)
def test_read_wav_round_trips_scipy_files(tmp_path: Path, dtype, scale: float, offset: float) -> None:
    rng = np.random.default_rng(10)
    if np.dtype(dtype).kind == "f":
        data = rng.uniform(-1, 1, size=500).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=500, endpoint=True).astype(dtype)
        data[:2] = [info.min, info.max]
    path = tmp_path / f"{np.dtype(dtype).name}.wav"
    scipy.io.wavfile.write(path, 11025, data)
    waveform = read_wav(path)
    assert isinstance(waveform, Waveform) and waveform.sample_rate == 11025
    assert waveform.samples.dtype == np.float32 and waveform.samples.shape == (500,)
    assert np.allclose(waveform.samples, (data.astype(np.float64) - offset) / scale, atol=1e-7)
    assert waveform.samples.min() >= -1.0 and waveform.samples.max() <= 1.0
    assert math.isclose(waveform.duration, 500 / 11025)


def test_read_wav_24_bit(tmp_path: Path) -> None:
    values = np.array([0, 1, -1, 4_194_304, 8_388_607, -8_388_608, 12345], dtype=np.int64)
    path = tmp_path / "pcm24.wav"  # 7 samples: an odd data chunk, padded
    write_raw_wav(path, b"".join(int(v).to_bytes(3, "little", signed=True) for v in values), tag=1, bits=24)
    samples = read_wav(path).samples
    assert np.allclose(samples, values / 2.0**23, atol=1e-7)
    assert samples[3] == 0.5 and samples[5] == -1.0


def test_read_wav_averages_channels(tmp_path: Path) -> None:
    stereo = np.stack([np.full(100, 16384, np.int16), np.full(100, -8192, np.int16)], axis=1)
    scipy.io.wavfile.write(tmp_path / "stereo.wav", 8000, stereo)
    assert np.allclose(read_wav(tmp_path / "stereo.wav").samples, (0.5 - 0.25) / 2)


def test_read_wav_resamples(tmp_path: Path) -> None:
    t = np.arange(8000) / 8000
    scipy.io.wavfile.write(tmp_path / "tone.wav", 8000, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    up = read_wav(tmp_path / "tone.wav", sample_rate=16000)
    assert up.sample_rate == 16000 and len(up.samples) == 16000
    ideal = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(up.samples - ideal)[200:-200].max() < 1e-2  # away from the filter's edge effects
    down = read_wav(tmp_path / "tone.wav", sample_rate=6000)
    assert len(down.samples) == 6000
    assert np.array_equal(resample(up.samples, 16000, 16000), up.samples)
    with pytest.raises(ValueError, match="to_rate"):
        resample(up.samples, 16000, 0)


def test_read_wav_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(WavFormatError, match=r"empty\.wav.*empty \(0 bytes\)"):
        read_wav(tmp_path / "empty.wav")
    (tmp_path / "notes.wav").write_text("hello, this is not audio")
    with pytest.raises(WavFormatError, match=r"notes\.wav: not a WAV file.*found b'hello, this '"):
        read_wav(tmp_path / "notes.wav")
    compressed = [
        ("adpcm", 2, "Microsoft ADPCM"),
        ("ulaw", 7, "mu-law"),
        ("mp3", 0x55, r"MPEG Layer 3 \(MP3\)"),
        ("odd", 0x1234, "unknown encoding"),
    ]
    for name, tag, found in compressed:
        write_raw_wav(tmp_path / f"{name}.wav", b"\x00" * 64, tag=tag, bits=4 if tag == 2 else 8)
        with pytest.raises(WavFormatError, match=rf"{name}\.wav: it is a compressed or unsupported WAV \({found}"):
            read_wav(tmp_path / f"{name}.wav")
    write_raw_wav(tmp_path / "ext.wav", b"\x00" * 64, tag=0xFFFE, bits=8, extensible_tag=6)
    with pytest.raises(WavFormatError, match="A-law"):
        read_wav(tmp_path / "ext.wav")
    (tmp_path / "truncated.wav").write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    with pytest.raises(WavFormatError, match="without a 'fmt ' chunk"):
        read_wav(tmp_path / "truncated.wav")
    assert issubclass(WavFormatError, ValueError)


def test_read_wav_extensible_pcm(tmp_path: Path) -> None:
    values = np.array([0, 16384, -32768], dtype="<i2")
    write_raw_wav(tmp_path / "ext.wav", values.tobytes(), tag=0xFFFE, bits=16, extensible_tag=1)
    assert read_wav(tmp_path / "ext.wav").samples.tolist() == [0.0, 0.5, -1.0]


# ----------------------------------------------------------------------------------------------
# characters and batching
# ----------------------------------------------------------------------------------------------


def test_characters() -> None:
    assert CHARACTERS == "efghinorstuvwxz" and len(CHARACTERS) == 15
    assert (PAD, BLANK, BOS, EOS, FIRST_CHARACTER, CHARACTER_VOCAB_SIZE) == (0, 0, 1, 2, 3, 18)
    for word in DIGIT_WORDS:
        ids = encode_characters(word)
        assert len(ids) == len(word) and all(FIRST_CHARACTER <= i < CHARACTER_VOCAB_SIZE for i in ids)
        assert decode_characters(ids) == word
        assert decode_characters(encode_characters(word, bos_eos=True) + [PAD, PAD]) == word
        assert decode_characters(torch.tensor(encode_characters(word, bos_eos=True))) == word
    assert encode_characters("Zero") == encode_characters("zero")
    with pytest.raises(ValueError, match="'a' at position 1"):
        encode_characters("xa")
    with pytest.raises(ValueError, match="character ids"):
        decode_characters([99])


def test_collate() -> None:
    a = SpokenDigit(torch.arange(6.0).reshape(3, 2), 3, "x", 7, "three")
    b = SpokenDigit(torch.ones(2, 2), 0, "y", 1, "zero")
    batch = collate([a, b])
    assert isinstance(batch, SpeechBatch) and batch.targets is None and batch.target_lengths is None
    assert batch.features.shape == (2, 3, 2) and batch.features.dtype == torch.float32
    assert torch.equal(batch.features[0], a.features) and torch.equal(batch.features[1, :2], b.features)
    assert not batch.features[1, 2:].any()
    assert batch.lengths.tolist() == [3, 2] and batch.labels.tolist() == [3, 0]
    ctc = collate([a, b], targets="ctc")
    assert ctc.target_lengths.tolist() == [5, 4]
    assert ctc.targets.tolist() == [encode_characters("three"), encode_characters("zero") + [PAD]]
    seq = collate([a, b], targets="seq2seq", pad_to=5)
    assert seq.features.shape == (2, 5, 2)
    assert seq.targets[:, 0].tolist() == [BOS, BOS] and seq.target_lengths.tolist() == [7, 6]
    assert [decode_characters(row) for row in seq.targets] == ["three", "zero"]
    # the CTC targets work with torch's CTC loss (blank = PAD = 0)
    long_a = SpokenDigit(torch.zeros(12, 2), 3, "x", 7, "three")
    long_b = SpokenDigit(torch.zeros(9, 2), 0, "y", 1, "zero")
    batch = collate([long_a, long_b], targets="ctc")
    log_probs = torch.randn(12, 2, CHARACTER_VOCAB_SIZE).log_softmax(-1)
    loss = torch.nn.CTCLoss(blank=BLANK)(log_probs, batch.targets, batch.lengths, batch.target_lengths)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="at least one"):
        collate([])
    with pytest.raises(ValueError, match="3 features per frame"):
        collate([SpokenDigit(torch.ones(2, 3), 0, "x", 0, "zero"), a])
    with pytest.raises(ValueError, match="pad_to"):
        collate([a], pad_to=2)
    with pytest.raises(ValueError, match="targets"):
        collate([a], targets="attention")


# ----------------------------------------------------------------------------------------------
# FSDD: a synthetic folder
# ----------------------------------------------------------------------------------------------


def make_fsdd(root: Path, speakers=("alice", "bob", "carol"), takes: int = 7) -> Path:
    """An FSDD-shaped folder: ``root/recordings/<digit>_<speaker>_<take>.wav``, short tones."""
    folder = root / "recordings"
    folder.mkdir(parents=True)
    rate = 8000
    for s, speaker in enumerate(speakers):
        for digit in range(10):
            for take in range(takes):
                length = 1200 + 40 * digit + 8 * take + 16 * s
                t = np.arange(length) / rate
                tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * digit + 10 * s) * t) + 0.01 * np.cos(17 * t * take)
                samples = (tone * 32767).astype(np.int16)
                scipy.io.wavfile.write(folder / f"{digit}_{speaker}_{take}.wav", rate, samples)
    (folder / "README.txt").write_text("not a recording")
    return root


@pytest.fixture
def fake_fsdd(tmp_path: Path) -> Path:
    clear_feature_cache()
    yield make_fsdd(tmp_path / "fsdd")
    clear_feature_cache()


def test_fsdd_official_split(fake_fsdd: Path) -> None:
    assert fsdd_speakers(fake_fsdd) == ("alice", "bob", "carol")
    assert fsdd_speakers(fake_fsdd / "recordings") == ("alice", "bob", "carol")  # the folder itself works too
    train = load_fsdd(fake_fsdd, split="train")
    test = load_fsdd(fake_fsdd, split="test")
    assert isinstance(train, SpokenDigitDataset)
    assert (len(train), len(test)) == (3 * 10 * 2, 3 * 10 * 5)  # takes 5-6 train, 0-4 test
    assert {e.index for e in train.examples} == {5, 6} and {e.index for e in test.examples} == set(range(5))
    assert train.speakers() == test.speakers() == ("alice", "bob", "carol")
    assert test.speaker_counts() == {"alice": 50, "bob": 50, "carol": 50}
    assert test.label_counts().tolist() == [15] * 10
    assert len(load_fsdd(fake_fsdd, split="all")) == 210
    first = test[0]
    assert (first.speaker, first.index, first.label, first.word) == ("alice", 0, 0, "zero")
    assert [e.label for e in test.examples[:10]] == list(range(10))  # sorted by speaker, take, digit
    assert all(e.word == DIGIT_WORDS[e.label] for e in test.examples)
    assert first.features.dtype == torch.float32 and first.features.shape == (num_frames(1200, 200, 80), 40)
    assert test.num_features == 40
    assert repr(test) == "SpokenDigitDataset(test: 150 utterances, 3 speakers, log_mel [T, 40], frames 13-18)"
    waveform = read_wav(fake_fsdd / "recordings" / "0_alice_0.wav")
    assert torch.allclose(first.features, torch.from_numpy(compute_features(waveform.samples, 8000)))
    assert len(test.subset([0, 2])) == 2 and test.subset(slice(0, 10)).examples == test.examples[:10]
    with pytest.raises(TypeError, match="subset"):
        test[0:2]


def test_fsdd_holdout_speaker_split(fake_fsdd: Path) -> None:
    train = load_fsdd(fake_fsdd, split="train", holdout_speaker="bob", features="mfcc")
    test = load_fsdd(fake_fsdd, split="test", holdout_speaker="bob", features="mfcc")
    assert train.speakers() == ("alice", "carol") and test.speakers() == ("bob",)
    assert (len(train), len(test)) == (140, 70)  # every take of every speaker
    assert {e.index for e in test.examples} == set(range(7))
    assert test.split == "test (holdout bob)" and test.num_features == 13
    assert test[0].features.shape[1] == 13


def test_fsdd_selection_and_errors(fake_fsdd: Path, tmp_path: Path) -> None:
    only = load_fsdd(fake_fsdd, split="test", speakers=["carol"], limit=4)
    assert [(e.speaker, e.index, e.label) for e in only.examples] == [("carol", 0, d) for d in range(4)]
    assert len(load_fsdd(fake_fsdd, split="test", speakers="bob")) == 50
    assert len(load_fsdd(fake_fsdd, limit=0)) == 0
    config = FeatureConfig("mfcc", delta_order=2, cmvn="mean", sample_rate=16000)
    resampled = load_fsdd(fake_fsdd, split="test", features=config, limit=2)
    assert resampled.num_features == 39 and resampled[0].features.shape == (num_frames(2400, 400, 160), 39)
    expected = r"expected WAV files named <digit>_<speaker>_<index>\.wav in .*nowhere"
    with pytest.raises(FileNotFoundError, match=expected):
        load_fsdd(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="Unknown holdout_speaker 'dave'; the speakers are alice, bob, carol"):
        load_fsdd(fake_fsdd, holdout_speaker="dave")
    with pytest.raises(ValueError, match="Unknown speaker"):
        load_fsdd(fake_fsdd, speakers=["dave"])
    with pytest.raises(ValueError, match="split"):
        load_fsdd(fake_fsdd, split="valid")
    with pytest.raises(ValueError, match="features"):
        load_fsdd(fake_fsdd, features="spectrogram")
    with pytest.raises(ValueError, match="limit"):
        load_fsdd(fake_fsdd, limit=-1)
    (fake_fsdd / "recordings" / "seven_alice_1.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"seven_alice_1\.wav.*<digit>_<speaker>_<index>\.wav"):
        load_fsdd(fake_fsdd)


def test_fsdd_mixed_rates_need_resampling(fake_fsdd: Path) -> None:
    scipy.io.wavfile.write(fake_fsdd / "recordings" / "0_zed_0.wav", 16000, np.zeros(4000, np.int16))
    with pytest.raises(ValueError, match="16000 Hz.*FeatureConfig\\(sample_rate=...\\)"):
        load_fsdd(fake_fsdd, split="test", speakers=["alice", "zed"])
    resampled = load_fsdd(fake_fsdd, split="test", speakers=["alice", "zed"], features=FeatureConfig(sample_rate=8000))
    assert len(resampled) == 51


def test_fsdd_caches(fake_fsdd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = load_fsdd(fake_fsdd, split="test", limit=12, cache_dir=cache)
    files = list(cache.glob("fsdd.*.pt"))
    assert len(files) == 1
    first.examples[0].features.add_(100.0)  # examples own their tensors: the caches are untouched

    def no_reading(path, **_):
        raise AssertionError(f"read {path} although its features are cached")

    monkeypatch.setattr(speech, "read_wav", no_reading)
    again = load_fsdd(fake_fsdd, split="test", limit=12)  # memory
    clear_feature_cache()
    from_disk = load_fsdd(fake_fsdd, split="test", limit=12, cache_dir=cache)  # disk
    first.examples[0].features.sub_(100.0)
    for a, b, c in zip(first.examples, again.examples, from_disk.examples):
        assert torch.equal(a.features, b.features) and torch.equal(a.features, c.features)
    monkeypatch.undo()
    load_fsdd(fake_fsdd, split="test", limit=12, features="mfcc", cache_dir=cache)
    assert len(list(cache.glob("fsdd.*.pt"))) == 2  # keyed by the settings
    (cache / files[0].name).write_bytes(b"garbage")
    clear_feature_cache()
    with pytest.warns(UserWarning, match="unreadable cache file"):
        rebuilt = load_fsdd(fake_fsdd, split="test", limit=12, cache_dir=cache)
    assert torch.equal(rebuilt[3].features, first[3].features)


# ----------------------------------------------------------------------------------------------
# FSDD: the real recordings (skipped without ../shared/data)
# ----------------------------------------------------------------------------------------------


def fsdd_dir() -> Path:
    for candidate in (os.environ.get("GRAPHATTN_SHARED_DATA"), Path(__file__).parents[2] / "shared" / "data"):
        if candidate and (Path(candidate) / "speech" / "fsdd" / "recordings").is_dir():
            return Path(candidate) / "speech" / "fsdd"
    pytest.skip("the shared data folder (../shared/data or $GRAPHATTN_SHARED_DATA) with speech/fsdd is absent")


def test_real_fsdd_counts() -> None:
    records = fsdd_recordings(fsdd_dir())
    assert len(records) == 3000
    assert fsdd_speakers(fsdd_dir()) == ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
    test = [r for r in records if r.index <= 4]
    assert len(test) == 300 and len(records) - len(test) == 2700
    for speaker in fsdd_speakers(fsdd_dir()):
        mine = [r for r in records if r.speaker == speaker]
        assert len(mine) == 500 and sum(r.index <= 4 for r in mine) == 50


def test_real_fsdd_few_files() -> None:
    clear_feature_cache()
    data = load_fsdd(fsdd_dir(), split="test", speakers=["jackson"], limit=10)
    assert [(e.speaker, e.index, e.label, e.word) for e in data.examples] == [
        ("jackson", 0, d, DIGIT_WORDS[d]) for d in range(10)
    ]
    for example in data.examples:
        waveform = read_wav(fsdd_dir() / "recordings" / f"{example.label}_jackson_0.wav")
        assert waveform.sample_rate == 8000 and np.abs(waveform.samples).max() <= 1.0
        assert example.features.shape == (num_frames(len(waveform.samples), 200, 80), 40)
        assert torch.isfinite(example.features).all()
        assert torch.allclose(example.features.mean(0), torch.zeros(40), atol=1e-4)
    batch = collate(data.examples, targets="ctc")
    assert batch.features.shape == (10, int(data.lengths().max()), 40)
    mfccs = load_fsdd(
        fsdd_dir(), split="train", holdout_speaker="theo", features="mfcc", speakers=["george"], limit=3
    )
    assert mfccs.speakers() == ("george",) and [e.index for e in mfccs.examples] == [0, 0, 0]
    clear_feature_cache()
