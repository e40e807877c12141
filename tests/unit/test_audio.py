import numpy as np
import pytest
import soundfile

from pefty_whisper.data.audio import SAMPLE_RATE, load_audio, probe_audio
from pefty_whisper.errors import DataError


def sine(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_pcm_is_s16le_scaled_by_32768(tmp_path):
    samples = np.array([0, 16384, -32768, 32767], dtype="<i2")
    path = tmp_path / "a.pcm"
    path.write_bytes(samples.tobytes())
    audio = load_audio(path)
    assert audio.dtype == np.float32
    np.testing.assert_array_equal(audio, [0.0, 0.5, -1.0, 32767 / 32768])
    assert probe_audio(path).duration_s == pytest.approx(4 / SAMPLE_RATE)


def test_odd_byte_count_drops_the_last_byte(tmp_path):
    path = tmp_path / "odd.pcm"
    path.write_bytes(np.array([100, 200], dtype="<i2").tobytes() + b"\x07")
    np.testing.assert_array_equal(load_audio(path), np.array([100, 200]) / 32768)
    info = probe_audio(path)
    assert info.odd_byte_count and info.duration_s == pytest.approx(2 / SAMPLE_RATE)


@pytest.mark.parametrize("content", [b"", b"\x01"])
def test_empty_pcm_is_a_data_error_naming_the_file(tmp_path, content):
    path = tmp_path / "empty.pcm"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty.pcm: empty pcm"):
        load_audio(path)
    with pytest.raises(DataError, match="empty.pcm: empty pcm"):
        probe_audio(path)


def test_stereo_44k_wav_becomes_16k_mono(tmp_path):
    left, right = sine(44_100, 1.0), sine(44_100, 1.0, freq=880.0)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 44_100, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.dtype == np.float32
    assert len(audio) == pytest.approx(SAMPLE_RATE, abs=2)
    # Mono is the channel mean: two uncorrelated sines of power 0.125 give (0.125 + 0.125) / 4.
    assert np.mean(audio[1000:-1000] ** 2) == pytest.approx(0.0625, rel=0.05)
    assert probe_audio(path).duration_s == pytest.approx(1.0)


def test_flac_8k_is_resampled(tmp_path):
    path = tmp_path / "a.flac"
    soundfile.write(path, sine(8_000, 0.5), 8_000)
    audio = load_audio(path)
    assert len(audio) == pytest.approx(SAMPLE_RATE // 2, abs=2)
    # A 440 Hz tone stays at 440 Hz after resampling.
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(audio) == pytest.approx(440, abs=3)


def test_corrupt_wav_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(DataError, match="corrupt.wav: unreadable audio"):
        load_audio(path)
    with pytest.raises(DataError, match="corrupt.wav: unreadable audio"):
        probe_audio(path)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="nope.wav: audio file not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(DataError, match="audio file not found"):
        probe_audio(tmp_path / "nope.pcm")
    (tmp_path / "a.xyz").write_bytes(b"abc")
    with pytest.raises(DataError, match="unsupported audio format"):
        probe_audio(tmp_path / "a.xyz")
