"""``input=mic:`` — live capture from a sound device, where python-sounddevice (PortAudio) is installed.

The device is read as raw interleaved PCM in the ``stream.*`` format and handed to the same
window-by-window path as ``input=-`` (:func:`birdvision.prediction.stream.predict_stream`), so a
microphone and ``arecord ... | predict input=-`` give the same rows for the same samples. Only the
byte source differs: :class:`MicSource` is a file-like object whose reads block until the device has
delivered the frames asked for (never more than a read's worth, so a window's last samples are not
held back). ``input=mic:`` opens the default input device, ``input=mic:2`` device 2, ``input=mic:USB``
the first input device whose name contains "USB" (PortAudio's own matching). Without
``stream.sample_rate`` the device's default rate is used; the model's resampler does the rest.

Optional: ``pip install birdvision[mic]`` (and on Linux the PortAudio library, e.g.
``apt-get install libportaudio2``). Without them ``input=mic:`` is one clear error; nothing else
imports this module's dependency.
"""

from __future__ import annotations

import io
from typing import Any

from birdvision.prediction import PredictError

MIC_PREFIX = "mic:"
#: PortAudio's sample formats for the stream formats (all little-endian on the machines PortAudio runs on)
_DTYPES = {"s16le": "int16", "s24_3le": "int24", "s32le": "int32", "f32le": "float32"}


def is_mic(value: str | None) -> bool:
    """Whether ``input=`` names a sound device (``mic:`` or ``mic:DEVICE``)."""
    return isinstance(value, str) and value.startswith(MIC_PREFIX)


def is_stream(value: str | None) -> bool:
    """Whether ``input=`` is a live stream (``-``: standard input, or a sound device) rather than files."""
    return value == "-" or is_mic(value)


def device_of(value: str) -> int | str | None:
    """``mic:`` -> None (the default input device), ``mic:2`` -> 2, ``mic:USB`` -> "USB"."""
    d = value[len(MIC_PREFIX):].strip()
    if not d:
        return None
    return int(d) if d.isdigit() else d


def _sounddevice() -> Any:
    try:
        import sounddevice
    except ImportError:
        raise PredictError("input=mic: needs python-sounddevice: pip install birdvision[mic] "
                           "(or pipe a recorder into input=-, e.g. arecord -f S16_LE -r 48000 -c 1 -t raw | "
                           "python -m birdvision.predict ... input=- stream.sample_rate=48000)") from None
    except OSError as e:  # sounddevice imports, but finds no PortAudio library
        raise PredictError(f"input=mic: sounddevice cannot load PortAudio ({e}); install it "
                           "(Debian/Ubuntu: apt-get install libportaudio2)") from None
    return sounddevice


def device_sample_rate(value: str) -> int:
    """The default sample rate of the input device ``value`` names."""
    sd = _sounddevice()
    try:
        info = sd.query_devices(device_of(value), "input")
    except (ValueError, sd.PortAudioError) as e:
        raise PredictError(f"input={value}: {e}; input devices: {_inputs(sd)}") from None
    return int(round(float(info["default_samplerate"])))


def _inputs(sd: Any) -> str:
    try:
        devices = [f"{i}: {d['name']}" for i, d in enumerate(sd.query_devices()) if d.get("max_input_channels", 0) > 0]
    except Exception:  # noqa: BLE001 - only for the message
        return "(could not list them)"
    return "; ".join(devices) or "none"


class MicSource(io.RawIOBase):
    """A sound device's input as a readable byte stream of interleaved PCM frames (``spec``'s format)."""

    def __init__(self, value: str, spec: Any) -> None:
        super().__init__()
        sd = _sounddevice()
        self.spec, self.overflows = spec, 0
        try:
            self._stream = sd.RawInputStream(samplerate=spec.sample_rate, channels=spec.channels,
                                             dtype=_DTYPES[spec.format], device=device_of(value))
            self._stream.start()
        except (ValueError, sd.PortAudioError) as e:
            raise PredictError(f"input={value}: cannot open the device for {spec.describe()} ({e}); "
                               f"input devices: {_inputs(sd)}") from None

    def readable(self) -> bool:
        return True

    def read1(self, n: int = -1) -> bytes:
        """At least one whole frame, at most ``n`` bytes' worth; blocks until the device delivered them."""
        frames = max(1, (n if n and n > 0 else 4096) // self.spec.frame_bytes)
        data, overflowed = self._stream.read(frames)
        if overflowed:
            self.overflows += 1
        return bytes(data)

    read = read1

    def ready(self) -> bool:
        """Whether a frame can be read without waiting (the stream reader joins only such reads)."""
        return self._stream.read_available > 0

    def notes(self) -> list[str]:
        if not self.overflows:
            return []
        return [f"the device's input overflowed {self.overflows} time(s): samples were lost before birdvision read "
                "them (a slower machine than the stream, or threads= too high)"]

    def close(self) -> None:
        if not self.closed:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                super().close()
