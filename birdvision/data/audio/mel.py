"""The mel frontend: waveform windows in, log-mel "images" out, inside the model and its ONNX export.

The frontend is an ``nn.Module`` placed in front of the backbone, so the exact same
arithmetic runs in training (on GPU when the batch is), evaluation, and inside the
exported ONNX graph: an exported model takes raw 32 kHz samples and nobody has to
re-implement the spectrogram on a phone. Its parameters travel as a plain dict
(:meth:`MelFrontend.spec`) in checkpoints and exports; :meth:`MelFrontend.from_spec`
rebuilds it bit for bit (the kernels are derived, not stored).

Pipeline, matching ``librosa.feature.melspectrogram(center=True, pad_mode="reflect",
window="hann", power=2, htk=False, norm="slaney")`` followed by
``librosa.power_to_db(ref=np.max, amin=1e-10, top_db=80)``:

1. reflect-pad ``n_fft // 2`` each side (``center=True``), frames every ``hop_length``;
2. periodic Hann window, DFT, power ``|X|^2``;
3. Slaney mel filterbank (linear below 1 kHz, logarithmic above, area-normalised);
4. ``10 log10(max(S, amin)) - 10 log10(max(ref, amin))`` with ``ref`` the example's
   largest mel value (``ref="max"``: invariant to recording gain, which varies by tens
   of dB between recordists) or 1.0 (``ref="fixed"``: keeps absolute level); then
   values more than ``top_db`` below the example's peak are raised to that floor;
5. normalisation ``(dB - norm_mean_db) / norm_std_db`` with fixed constants (default
   -48/16: mean and spread of all dB values over 5 s windows of the 74 real recordings
   (1.1 h) with ``ref="max"``, ``top_db=80``; so inputs have roughly zero mean and unit
   spread; fixed, not per-batch, so train and export agree exactly).

The DFT has three implementations: ``torch.stft`` (fast, used in eager mode); a
"factored" DFT of plain Slice/Concat/MatMul ops (used while exporting, because ONNX
STFT/DFT support is uneven across exporters and runtimes, TensorRT included, while
MatMul is everywhere); and a ``conv1d`` with precomputed windowed cos/sin kernels (the
export fallback when ``n_fft`` is not a multiple of ``hop_length``). All are tested
against each other and against librosa.

Why factored: the conv DFT costs ``n_fft`` multiply-adds per output bin and frame
(2 x 1024 bins x 2048 taps = 4.2 M per frame, 1.3 G per 5 s window: twice the whole
EfficientNet-B0 on the mel image, and 2/3 of an exported model's CPU time). One
Cooley-Tukey step with ``n_fft = P x Q`` (2048 = 32 x 64) does a P-point DFT for each of
the Q phases, a twiddle multiply, then a Q-point DFT: ``n_fft x (2P + 4 K2) `` multiply-adds
per frame (about 0.4 M, 10x fewer); the twiddle is folded into the second stage's matrices, and
because frames are real only half of the first stage's P-point DFTs are computed (the others are
their complex conjugates, which the second stage reads through its own matrices). Frames are cut by reshaping the
padded signal into ``hop``-sample chunks and concatenating ``n_fft / hop`` shifted views.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SPEC_KIND = "mel"
SPEC_VERSION = 1
AMIN = 1e-10


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: 3 mels per 200 Hz up to 1 kHz, then 27 mels per factor 6.4 (log)."""
    f = np.atleast_1d(np.asarray(f, dtype=np.float64))
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    log_t = f >= min_log_hz
    mels[log_t] = min_log_mel + np.log(f[log_t] / min_log_hz) / logstep
    return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.atleast_1d(np.asarray(m, dtype=np.float64))
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    log_t = m >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (m[log_t] - min_log_mel))
    return freqs


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min_hz: float, f_max_hz: float) -> np.ndarray:
    """Slaney-normalised triangular filters ``[n_mels, 1 + n_fft // 2]`` (librosa's default, htk=False).

    Filter i rises linearly from mel point i to i+1 and falls to i+2; each is scaled by
    2 / (f[i+2] - f[i]) so every filter has the same area (equal energy per band, not
    equal peak), which keeps wide high-frequency bands from dominating.
    """
    fft_freqs = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(f_min_hz)[0], _hz_to_mel(f_max_hz)[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def _exporting() -> bool:
    """True while torch.onnx / torch.export / jit tracing is capturing the graph."""
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


class MelFrontend(nn.Module):
    """Waveforms ``[B, T]`` or ``[B, 1, T]`` -> normalised log-mel ``[B, in_chans, n_mels, 1 + T // hop]``.

    ``stft="auto"`` uses ``torch.stft`` in eager mode and the factored DFT while exporting
    (the conv1d DFT when ``n_fft`` is not a multiple of ``hop_length``); ``"fft"`` /
    ``"factored"`` / ``"conv"`` force one. ``in_chans=3`` repeats the single mel channel so an
    ImageNet backbone's first conv can be used unchanged.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 32000,
        n_fft: int = 2048,
        hop_length: int = 512,
        n_mels: int = 128,
        f_min_hz: float = 20.0,
        f_max_hz: float = 16000.0,
        top_db: float | None = 80.0,
        ref: str = "max",
        normalize: str = "fixed",
        norm_mean_db: float = -48.0,
        norm_std_db: float = 16.0,
        in_chans: int = 1,
        stft: str = "auto",
    ) -> None:
        super().__init__()
        if not 0 <= f_min_hz < f_max_hz <= sample_rate / 2:
            raise ValueError(f"need 0 <= f_min_hz < f_max_hz <= sample_rate/2, got {f_min_hz}, {f_max_hz}")
        if ref not in ("max", "fixed"):
            raise ValueError(f"ref must be 'max' or 'fixed', got {ref!r}")
        if normalize not in ("fixed", "none"):
            raise ValueError(f"normalize must be 'fixed' or 'none', got {normalize!r}")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        if stft not in ("auto", "fft", "factored", "conv"):
            raise ValueError(f"stft must be 'auto', 'fft', 'factored' or 'conv', got {stft!r}")
        if stft == "factored" and n_fft % hop_length:
            raise ValueError(f"stft='factored' needs n_fft ({n_fft}) to be a multiple of hop_length ({hop_length})")
        if norm_std_db <= 0:
            raise ValueError("norm_std_db must be > 0")
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.f_min_hz, self.f_max_hz, self.top_db, self.ref = float(f_min_hz), float(f_max_hz), top_db, ref
        self.normalize, self.norm_mean_db, self.norm_std_db = (
            normalize,
            float(norm_mean_db),
            float(norm_std_db),
        )
        self.in_chans, self.stft = in_chans, stft

        fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min_hz, f_max_hz)
        # Only DFT bins that some mel filter uses are computed: fewer conv kernels, same result.
        used = np.flatnonzero(fb.sum(axis=0) > 0)
        self.bin_lo, self.bin_hi = int(used[0]), int(used[-1]) + 1
        fb = fb[:, self.bin_lo : self.bin_hi]
        self.register_buffer("mel_fb", torch.tensor(fb, dtype=torch.float32), persistent=False)
        n = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann (scipy/librosa "hann")
        self.register_buffer("window", torch.tensor(window, dtype=torch.float32), persistent=False)
        # X[k] = sum_n w[n] x[n] e^{-2 pi i k n / N}: real part uses cos kernels, imaginary part -sin.
        k = np.arange(self.bin_lo, self.bin_hi)[:, None]
        angle = 2 * np.pi * k * n[None, :] / n_fft
        kernels = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])
        # unsqueeze gives the channel axis a real stride: numpy's [:, None] keeps stride 0 there, which
        # torch carries over and ExecuTorch refuses ("0 in strides is not supported")
        self.register_buffer("dft_kernels", torch.tensor(kernels, dtype=torch.float32).unsqueeze(1), persistent=False)
        self._init_factored(fb, window)

    def _init_factored(self, fb: np.ndarray, window: np.ndarray) -> None:
        """Kernels of the factored DFT (see the module docstring); derived, never stored.

        Frame sample ``n = Q p + q`` (``p < P`` major, ``q < Q`` minor, the frame reshaped
        ``[P, Q]``) and bin ``k = k1 + P k2``:
        ``X[k] = sum_q W_Q^(q k2) W_N^(q k1) sum_p W_P^(p k1) x[Q p + q]`` with ``W_M = e^(-2 pi i / M)``.

        The frame is real, so the first stage's outputs are mirror images:
        ``A[P - k1, q] = conj(A[k1, q])``. Only ``k1 = 0 .. P // 2`` are computed (``G`` of them,
        half the first stage's work and of the intermediate the second stage reorders); each one's
        second-stage matrix also produces the bins of its mirror ``P - k1`` from ``conj(A[k1])``.
        """
        n = self.n_fft
        p = max(d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0)
        q = n // p
        k2n = (self.bin_hi - 1) // p + 1  # k2 values needed to reach bin_hi - 1
        g = p // 2 + 1
        self.fact_p, self.fact_q, self.fact_k2, self.fact_g = p, q, k2n, g
        pp, qq, kk2, k1 = np.arange(p), np.arange(q), np.arange(k2n), np.arange(g)
        a1 = 2 * np.pi * np.outer(k1, pp) / p  # [k1, p]
        stage1 = np.concatenate([np.cos(a1), -np.sin(a1)])  # [2G, P]: rows k1 (real) then k1 (imag)
        # The twiddle W_N^(q k1) and the Q-point DFT W_Q^(q k2) combine to W_N^(q k), k = k1 + P k2:
        # one [2Q, 4 K2] matrix per k1 takes [re | im] of stage 1 over q to the bins k1 + P k2 ("direct")
        # and (P - k1) + P k2 ("mirror"): X = (Ar cos + Ai sin) + i (Ai cos - Ar sin) for A, and
        # X = (Ar cos - Ai sin) - i (Ai cos + Ar sin) for conj(A); so the twiddle costs nothing at run time.
        mirror = (k1 > 0) & (p - k1 > k1)  # k1 = 0 (and P/2 for even P) are their own mirror images
        kd = k1[:, None] + p * kk2[None, :]  # [G, K2] -> bin
        km = (p - k1)[:, None] + p * kk2[None, :]
        angd = 2 * np.pi * qq[None, :, None] * kd[:, None, :] / n  # [G, Q, K2]
        angm = 2 * np.pi * qq[None, :, None] * km[:, None, :] / n
        cd, sd = np.cos(angd), np.sin(angd)
        cm, sm = np.cos(angm) * mirror[:, None, None], np.sin(angm) * mirror[:, None, None]
        # columns: re direct, re mirror, im direct, im mirror (K2 each); rows: Ar over q, then Ai over q
        from_re = np.concatenate([cd, cm, -sd, -sm], 2)
        from_im = np.concatenate([sd, -sm, cd, -cm], 2)
        stage2 = np.concatenate([from_re, from_im], 1)  # [G, 2Q, 4 K2]
        # Power comes out as [k1 group, direct | mirror, k2]; scatter the mel filters to that order (zero for
        # bins no filter uses and for the missing mirrors), so picking and reordering bins is part of the mel matmul.
        kf = np.concatenate([kd, km], 1).reshape(-1)
        real = np.concatenate([np.ones_like(kd, bool), np.repeat(mirror[:, None], k2n, 1)], 1).reshape(-1)
        fbt = np.zeros((g * 2 * k2n, fb.shape[0]))
        inside = real & (kf >= self.bin_lo) & (kf < self.bin_hi)
        fbt[inside] = fb[:, kf[inside] - self.bin_lo].T
        for name, arr in (("fact_window", window.reshape(p, q)), ("fact_stage1", stage1),
                          ("fact_stage2", stage2), ("fact_mel", fbt)):
            self.register_buffer(name, torch.tensor(arr, dtype=torch.float32), persistent=False)

    # -- parameters as data ---------------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this frontend; stored in checkpoints and export metadata."""
        return {
            "kind": SPEC_KIND,
            "version": SPEC_VERSION,
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "f_min_hz": self.f_min_hz,
            "f_max_hz": self.f_max_hz,
            "top_db": self.top_db,
            "ref": self.ref,
            "normalize": self.normalize,
            "norm_mean_db": self.norm_mean_db,
            "norm_std_db": self.norm_std_db,
            "in_chans": self.in_chans,
            "window": "hann",
            "center": True,
            "pad_mode": "reflect",
            "mel_scale": "slaney",
            "power": 2.0,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **overrides: Any) -> MelFrontend:
        """Rebuild from :meth:`spec` output (descriptive keys such as ``window`` are checked, not passed)."""
        if spec.get("kind", SPEC_KIND) != SPEC_KIND:
            raise ValueError(f"not a mel frontend spec (kind={spec.get('kind')!r})")
        fixed = {"window": "hann", "center": True, "pad_mode": "reflect", "mel_scale": "slaney", "power": 2.0}
        for key, want in fixed.items():
            if key in spec and spec[key] != want:
                raise ValueError(f"mel spec has {key}={spec[key]!r}; this frontend only implements {want!r}")
        keys = (
            "sample_rate",
            "n_fft",
            "hop_length",
            "n_mels",
            "f_min_hz",
            "f_max_hz",
            "top_db",
            "ref",
            "normalize",
            "norm_mean_db",
            "norm_std_db",
            "in_chans",
        )
        kwargs = {k: spec[k] for k in keys if k in spec}
        kwargs.update(overrides)
        return cls(**kwargs)

    def n_frames(self, n_samples: int) -> int:
        """Number of frames (the output's width) for a window of ``n_samples``."""
        return 1 + n_samples // self.hop_length

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}, f_min_hz={self.f_min_hz}, f_max_hz={self.f_max_hz}, "
            f"top_db={self.top_db}, ref={self.ref!r}, in_chans={self.in_chans}"
        )

    # -- computation ----------------------------------------------------------------------------------

    def _path(self) -> str:
        if self.stft != "auto":
            return self.stft
        if not _exporting():
            return "fft"
        return "conv" if self.n_fft % self.hop_length else "factored"

    def factored_mel_power(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> mel power ``[B, n_mels, frames]`` through the factored DFT (export-friendly ops only)."""
        pad, hop, n = self.n_fft // 2, self.hop_length, self.n_fft
        t = int(x.shape[-1])
        frames, r = 1 + t // hop, n // hop
        xp = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect")[:, 0, : (frames + r - 1) * hop]
        chunks = xp.reshape(-1, frames + r - 1, hop)
        fr = torch.cat([chunks[:, i : i + frames] for i in range(r)], dim=-1) if r > 1 else chunks
        fr = fr.reshape(-1, frames, self.fact_p, self.fact_q) * self.fact_window  # [B, F, P, Q]
        a = torch.matmul(self.fact_stage1, fr)  # [B, F, 2G, Q]: P-point DFTs over p (k1 <= P/2), for every q
        g, q, k2 = self.fact_g, self.fact_q, self.fact_k2
        a = a.reshape(-1, 2, g, q).permute(2, 0, 1, 3).reshape(g, -1, 2 * q)  # [G, B*F, re|im over q]
        z = torch.matmul(a, self.fact_stage2)  # [G, B*F, 4 K2]: twiddle + Q-point DFT per k1 and its mirror
        power = z[..., : 2 * k2].square() + z[..., 2 * k2 :].square()  # [G, B*F, 2 K2]: direct | mirror
        power = power.permute(1, 0, 2).reshape(-1, frames, g * 2 * k2)  # [B, F, G*2*K2]
        return torch.matmul(power, self.fact_mel).transpose(1, 2)  # [B, M, F]

    def power_spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``|STFT|^2`` over the used bins, ``[B, bins, frames]`` (fft and conv paths)."""
        if self._path() in ("conv", "factored"):
            pad = self.n_fft // 2
            xp = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect")
            spec = F.conv1d(xp, self.dft_kernels, stride=self.hop_length)  # [B, 2*bins, frames]
            nb = self.bin_hi - self.bin_lo
            re, im = spec[:, :nb], spec[:, nb:]
            return re * re + im * im
        z = torch.stft(
            x,
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        z = z[:, self.bin_lo : self.bin_hi]
        return z.real.square() + z.imag.square()

    def to_db(self, mel: torch.Tensor) -> torch.Tensor:
        """Power mel ``[B, M, T]`` -> dB as in ``librosa.power_to_db`` with this frontend's ref and top_db."""
        db = 10.0 * torch.log10(torch.clamp(mel, min=AMIN))
        if self.ref == "max":
            peak = torch.amax(mel, dim=(-2, -1), keepdim=True)
            db = db - 10.0 * torch.log10(torch.clamp(peak, min=AMIN))
        if self.top_db is not None:
            db = torch.maximum(db, torch.amax(db, dim=(-2, -1), keepdim=True) - self.top_db)
        return db

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> un-normalised dB ``[B, n_mels, frames]`` (what the librosa test compares)."""
        x = waveform.float()
        if self._path() == "factored":
            return self.to_db(self.factored_mel_power(x))
        power = self.power_spectrogram(x)
        mel = torch.matmul(self.mel_fb, power)
        return self.to_db(mel)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() == 3:
            if waveform.shape[1] != 1:
                raise ValueError(f"expected mono waveforms [B, 1, T], got {tuple(waveform.shape)}")
            waveform = waveform[:, 0]
        if waveform.dim() != 2:
            raise ValueError(f"expected waveforms [B, T] or [B, 1, T], got {tuple(waveform.shape)}")
        db = self.log_mel(waveform)
        if self.normalize == "fixed":
            db = (db - self.norm_mean_db) / self.norm_std_db
        out = db.unsqueeze(1)
        if self.in_chans == 3:
            out = out.expand(-1, 3, -1, -1)
        return out.contiguous()


class SpecAugment(nn.Module):
    """Time and frequency masking of a normalised log-mel batch ``[B, C, F, T]``; identity in eval mode.

    Each example, with probability ``p``, gets ``time_masks`` bands of up to
    ``time_mask_frames`` frames and ``freq_masks`` bands of up to ``freq_mask_bins`` mel
    bins set to ``fill`` (0 = the normalised mean, so a mask looks like "average", not
    like silence or a loud band). All channels share the mask. Put it between the
    frontend and the backbone: ``nn.Sequential(frontend, spec_augment, backbone)``; in
    ``eval()`` (and therefore in export) it returns its input untouched.
    """

    def __init__(
        self,
        *,
        p: float = 0.5,
        time_masks: int = 2,
        time_mask_frames: int = 24,
        freq_masks: int = 2,
        freq_mask_bins: int = 12,
        fill: float = 0.0,
    ) -> None:
        super().__init__()
        self.p, self.time_masks, self.time_mask_frames = float(p), int(time_masks), int(time_mask_frames)
        self.freq_masks, self.freq_mask_bins, self.fill = int(freq_masks), int(freq_mask_bins), float(fill)

    @staticmethod
    def _bands(batch: int, count: int, max_width: int, size: int, device: torch.device) -> torch.Tensor:
        """Boolean ``[B, size]``: union of ``count`` random bands of width 0..max_width per example."""
        idx = torch.arange(size, device=device)
        out = torch.zeros(batch, size, dtype=torch.bool, device=device)
        for _ in range(count):
            width = torch.randint(0, max_width + 1, (batch, 1), device=device)
            start = (torch.rand(batch, 1, device=device) * (size - width + 1).clamp(min=1)).long()
            out |= (idx >= start) & (idx < start + width)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        b, _, f, t = x.shape
        apply = torch.rand(b, 1, 1, 1, device=x.device) < self.p
        mask = torch.zeros(b, 1, f, t, dtype=torch.bool, device=x.device)
        if self.time_masks and self.time_mask_frames:
            mask |= self._bands(b, self.time_masks, self.time_mask_frames, t, x.device)[:, None, None, :]
        if self.freq_masks and self.freq_mask_bins:
            mask |= self._bands(b, self.freq_masks, self.freq_mask_bins, f, x.device)[:, None, :, None]
        return torch.where(mask & apply, torch.full_like(x, self.fill), x)
