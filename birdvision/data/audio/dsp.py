"""Signal kernels in plain numpy: polyphase resampling and the zero-phase Butterworth high-pass.

These are the arithmetic of ``scipy.signal.resample_poly`` (Kaiser window, beta 5, half
length ``10 * max(up, down)``, zero padding) and of ``sosfiltfilt(butter(order, f,
"highpass", output="sos"), x)`` (odd extension, steady-state initial conditions),
reproduced to float rounding and tested against scipy. Why not call scipy: importing
``scipy.signal`` takes well over a second (it pulls in scipy.stats, interpolate and
optimize), more than the whole start-up budget of an ONNX predict run, and training
and prediction must decode recordings with one and the same code.

Speed comes from BLAS, not from Python loops:

- resampling: output sample ``m`` is a dot product of the taps of phase ``(m * down) % up``
  with the input samples just before ``m * down / up``; a group of consecutive phases reads
  the same short span of every period of the input, so the group's outputs are one matrix
  product of a strided view of the input (no copy) with the phases' taps laid side by side;
- the recursive (IIR) filter runs in chunks of ``L`` samples: inside a chunk the output
  is the chunk times an ``L x L`` Toeplitz matrix of the impulse response plus the
  chunk's starting state pushed through the filter; the states at the chunk starts follow
  a linear recurrence ``s[c+1] = A^L s[c] + u[c]`` solved by doubling (``log2`` steps,
  stopping early once ``A^(L * 2^k)`` has decayed below float64 precision).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import as_strided

_CHUNK = 64  # IIR chunk length: 64 multiply-adds per sample in the Toeplitz product, few recurrence steps
_GROUP = 32  # output phases per matrix product when resampling (span ~ 32 * down / up + taps rows)


# --------------------------------------------------------------------------------------------------
# Polyphase resampling (scipy.signal.resample_poly with its defaults)
# --------------------------------------------------------------------------------------------------


def _firwin_lowpass(numtaps: int, cutoff: float, beta: float = 5.0) -> np.ndarray:
    """Windowed-sinc low-pass FIR (``scipy.signal.firwin(numtaps, cutoff, window=("kaiser", beta))``):
    cutoff relative to Nyquist, unit gain at DC."""
    alpha = 0.5 * (numtaps - 1)
    m = np.arange(numtaps, dtype=np.float64) - alpha
    h = cutoff * np.sinc(cutoff * m)
    h *= np.kaiser(numtaps, beta)
    return h / h.sum()


@lru_cache(maxsize=64)
def _resample_plan(up: int, down: int, dtype: str) -> tuple[int, int, int, int, list[tuple[int, int, int, np.ndarray]]]:
    """How to compute ``resample_poly``'s outputs as a few matrix products.

    Outputs come in periods of ``U = P * up`` samples that consume ``D = P * down`` inputs
    (``P`` makes a period at least :data:`_GROUP` outputs long). Each group of ``_GROUP``
    consecutive output phases reads one short span of the input, the same for every period,
    so the group is ``rows @ W``: rows = that span in every period (a strided view of the
    input), ``W [span, group]`` = each phase's taps placed at its offset in the span.

    Returns ``(m0, K, U, D, groups)``: the filter delay in outputs that resample_poly trims
    from the front, the taps per phase, the period, and ``(c0, c1, j0, W)`` per group.
    """
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = _firwin_lowpass(2 * half_len + 1, 1.0 / max_rate).astype(dtype)
    h *= up
    n_pre_pad = down - half_len % down
    m0 = (half_len + n_pre_pad) // down
    h = np.concatenate([np.zeros(n_pre_pad, dtype), h])
    k = -(-len(h) // up)
    padded = np.zeros(k * up, dtype)
    padded[: len(h)] = h
    taps = padded.reshape(k, up).T[:, ::-1]  # taps[r, K-1-i] = h[r + i * up]: output = inputs j-K+1..j @ taps[r]
    p = max(1, -(-_GROUP // up))
    period_up, period_down = p * up, p * down
    first = [((m0 + c) * down) // up for c in range(period_up)]  # newest input each output phase needs
    groups = []
    for c0 in range(0, period_up, _GROUP):
        c1 = min(period_up, c0 + _GROUP)
        j0 = first[c0]
        w = np.zeros((first[c1 - 1] - j0 + k, c1 - c0), dtype)
        for c in range(c0, c1):
            off = first[c] - j0
            w[off : off + k, c - c0] = taps[((m0 + c) * down) % up]
        groups.append((c0, c1, j0, w))
    return m0, k, period_up, period_down, groups


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Resample along the last axis by ``up / down`` (anti-aliased, exact rational ratio).

    Same output length and samples as ``scipy.signal.resample_poly(x, up, down, axis=-1)``
    (to float rounding); float32 in, float32 out (float64 stays float64).
    """
    g = math.gcd(int(up), int(down))
    up, down = int(up) // g, int(down) // g
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if up == down == 1:
        return x.copy()
    if x.ndim > 1:
        flat = x.reshape(-1, x.shape[-1])
        return np.stack([resample_poly(row, up, down) for row in flat]).reshape(*x.shape[:-1], -1)
    n_in = x.shape[0]
    n_out = -(-n_in * up // down)
    m0, k, period_up, period_down, groups = _resample_plan(up, down, x.dtype.name)
    periods = -(-n_out // period_up)
    # Output m0 + o needs inputs j - K + 1 .. j with j = ((m0 + o) * down) // up; xp[q + K - 1] = x[q], zeros around.
    last = (periods - 1) * period_down + max(j0 + len(w) for _, _, j0, w in groups)
    xp = np.zeros(max(last, k - 1 + n_in), x.dtype)
    xp[k - 1 : k - 1 + n_in] = x
    item = xp.strides[0]
    y = np.empty((periods, period_up), x.dtype)
    for c0, c1, j0, w in groups:
        rows = as_strided(xp[j0:], shape=(periods, len(w)), strides=(period_down * item, item), writeable=False)
        y[:, c0:c1] = rows @ w
    return y.ravel()[:n_out]


# --------------------------------------------------------------------------------------------------
# Butterworth high-pass, zero phase (scipy.signal.butter + sosfiltfilt)
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def butter_highpass_sos(order: int, cutoff_hz: float, sample_rate: float) -> np.ndarray:
    """Second-order sections ``[n_sections, 6]`` (``b0 b1 b2 a0 a1 a2``) of a digital Butterworth high-pass.

    Analog prototype poles, low-pass -> high-pass at the pre-warped cutoff, bilinear transform,
    conjugate poles paired into sections (all zeros sit at z = 1); the gain goes to the first section.
    """
    if order < 1 or order % 2:
        raise ValueError(f"order must be a positive even number, got {order}")
    wn = 2.0 * cutoff_hz / sample_rate
    if not 0 < wn < 1:
        raise ValueError(f"cutoff must be in (0, {sample_rate / 2}), got {cutoff_hz}")
    fs2 = 4.0  # bilinear transform at fs = 2 (frequencies relative to Nyquist)
    warped = fs2 * math.tan(math.pi * wn / 2.0)
    proto = -np.exp(1j * np.pi * np.arange(-order + 1, order, 2) / (2 * order))  # analog low-pass poles
    p_analog = warped / proto
    p = (fs2 + p_analog) / (fs2 - p_analog)
    # Gain: 1 from the prototype (prod(-proto) = 1), times the bilinear map's at the N zeros moved to s = 0.
    k = float(np.real(fs2**order / np.prod(fs2 - p_analog)))
    upper = sorted((q for q in p if q.imag > 0), key=lambda q: abs(1 - abs(q)), reverse=True)
    sos = np.zeros((order // 2, 6))
    for i, q in enumerate(upper):
        sos[i] = [1.0, -2.0, 1.0, 1.0, -2.0 * q.real, abs(q) ** 2]
    sos[0, :3] *= k
    return sos


def _sosfilt_zi(sos: np.ndarray) -> np.ndarray:
    """Initial states ``[n_sections, 2]`` of the step response's steady state (``scipy.signal.sosfilt_zi``)."""
    zi = np.zeros((len(sos), 2))
    scale = 1.0
    for s, (b0, b1, b2, a0, a1, a2) in enumerate(sos):
        b = np.array([b0, b1, b2]) / a0
        a = np.array([1.0, a1 / a0, a2 / a0])
        i_minus_a = np.eye(2) - np.array([[-a[1], -a[2]], [1.0, 0.0]]).T
        zi[s] = scale * np.linalg.solve(i_minus_a, b[1:] - a[1:] * b[0])
        scale *= b.sum() / a.sum()
    return zi


def _step(sos: np.ndarray, state: np.ndarray, u: float) -> tuple[np.ndarray, float]:
    """One sample through the cascade in transposed direct form II (scipy's state convention)."""
    new = np.empty_like(state)
    for s, (b0, b1, b2, a0, a1, a2) in enumerate(sos):
        b0, b1, b2, a1, a2 = b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0
        z0, z1 = state[2 * s], state[2 * s + 1]
        y = b0 * u + z0
        new[2 * s] = b1 * u - a1 * y + z1
        new[2 * s + 1] = b2 * u - a2 * y
        u = y
    return new, u


@lru_cache(maxsize=64)
def _chunk_operators(sos_key: tuple[float, ...], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """State-space matrices of the cascade over one chunk of ``length`` samples (row-vector convention).

    Returns ``TC [L, L + S]`` float32: ``x @ TC`` gives the chunk's zero-state response (first
    ``L`` columns: the Toeplitz matrix of the impulse response) and its end state (last ``S``);
    ``obs [S, L]`` float32: the output due to the start state; ``M = A^L [S, S]`` float64: the
    start state's share of the end state.
    """
    sos = np.asarray(sos_key).reshape(-1, 6)
    n = 2 * len(sos)
    eye = np.eye(n)
    a = np.stack([_step(sos, eye[j], 0.0)[0] for j in range(n)])  # row j: next state from state e_j
    c = np.array([_step(sos, eye[j], 0.0)[1] for j in range(n)])  # output from state e_j
    b, d = _step(sos, np.zeros(n), 1.0)
    imp = np.empty(length)  # impulse response h[0..L-1]
    imp[0] = d
    s = b.copy()
    for i in range(1, length):
        imp[i] = s @ c
        s = s @ a
    tc = np.zeros((length, length + n))
    for i in range(length):
        tc[i, i:length] = imp[: length - i]
    obs = np.empty((n, length))
    pa = eye.copy()  # A^i
    for i in range(length):
        obs[:, i] = pa @ c
        pa = pa @ a
    s = b.copy()
    for i in range(length - 1, -1, -1):  # the input at position i reaches the chunk end after L-1-i more steps
        tc[i, length:] = s
        s = s @ a
    return tc.astype(np.float32), obs.astype(np.float32), pa


def sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """Filter a 1-D signal through the sections from states ``zi [n_sections, 2]``; float32 out.

    Products run in float32 (the output is float32 and each chunk's sum is a short one); the
    state recurrence across chunks runs in float64. A float32 ``x`` whose length is a multiple
    of the chunk length is read in place (:func:`sosfiltfilt` lays its buffers out that way).
    """
    length = _CHUNK
    tc, obs, m = _chunk_operators(tuple(np.asarray(sos, np.float64).ravel()), length)
    n = len(x)
    nc = -(-n // length)
    if n == nc * length and x.dtype == np.float32 and x.flags.c_contiguous:
        xs = x.reshape(nc, length)
    else:
        xs = np.zeros((nc, length), np.float32)
        xs.reshape(-1)[:n] = x
    both = xs @ tc  # [nc, L + S]: zero-state outputs, then the end state each chunk reaches from zero
    # w[c]: the state at the start of chunk c = sum over i <= c of v[i] M^(c - i), with v[0] = zi and
    # v[c] = the end state chunk c - 1 reaches from a zero start; prefix sums by doubling.
    w = np.empty((nc, m.shape[0]))
    w[0] = np.asarray(zi, np.float64).ravel()
    w[1:] = both[:-1, length:]
    p, d = m, 1
    while d < nc and np.abs(p).max() > 1e-18:  # beyond that, older chunks no longer reach float64 precision
        w[d:] += w[:-d] @ p  # the right side is evaluated first: old values, as the doubling needs
        p, d = p @ p, 2 * d
    y = np.empty((nc, length), np.float32)
    np.add(both[:, :length], w.astype(np.float32) @ obs, out=y)
    return y.reshape(-1)[:n]


def sosfiltfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Zero-phase filtering along the last axis (``scipy.signal.sosfiltfilt`` with ``padtype="odd"``); float32."""
    sos = np.asarray(sos, np.float64)
    x = np.asarray(x, np.float32)
    if x.ndim > 1:
        flat = x.reshape(-1, x.shape[-1])
        return np.stack([sosfiltfilt(sos, row) for row in flat]).reshape(x.shape)
    ntaps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    edge = 3 * ntaps
    if len(x) <= edge:
        raise ValueError(f"the signal ({len(x)} samples) must be longer than {edge} samples to filter")
    n = len(x) + 2 * edge
    buf = np.zeros(-(-n // _CHUNK) * _CHUNK, np.float32)  # whole chunks: each pass reads its input in place
    buf[:edge] = 2 * x[0] - x[edge:0:-1]  # odd extension at both ends
    buf[edge : edge + len(x)] = x
    buf[edge + len(x) : n] = 2 * x[-1] - x[-2 : -(edge + 2) : -1]
    zi = _sosfilt_zi(sos)
    y = sosfilt(sos, buf, zi * float(buf[0]))[:n]  # trailing zeros: a causal filter's outputs before them are exact
    buf[:n] = y[::-1]
    buf[n:] = 0
    y = sosfilt(sos, buf, zi * float(buf[0]))[:n]
    return y[n - edge - 1 : edge - 1 : -1] if edge > 0 else y[::-1].copy()
