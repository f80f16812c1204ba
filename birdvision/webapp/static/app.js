// birdvision reference web app: model.onnx + model.json in the browser with onnxruntime-web.
//
// Photos: the browser decodes the file (EXIF orientation applied, no colour management, like Pillow),
// transparency is composited on white, and the pixels go to the graph as uint8 [1, H, W, 3] RGB at the
// photo's own size: the graph resizes (antialiased) and normalises, so there is nothing else to do.
// Recordings (call models): decoded and resampled to the model's rate by Web Audio, mixed to mono
// (mean of the channels), high-passed (zero-phase Butterworth, as birdvision.data.audio.dsp), cut into back-to-back
// windows from 0 with the last partial window zero-padded, fed as float32 [B, T].
// Decisions follow model.json's "decisions" (as birdvision.predict): per-class thresholds, the no-call class
// never reported, a photo whose best probability is under the abstention threshold is "unknown".
// Every answer is also written as JSON to <pre id="results"> (read by tests/test_webapp_browser.py).

import * as ort from '/ort/ort.wasm.min.mjs';

const $ = (id) => document.getElementById(id);
const state = { card: null, session: null, results: [] };
const TOP_K = { photo: 5, recording: 1 }; // predict's top_k defaults
const WINDOW_BATCH = 8; // windows per session.run

class UserError extends Error {}

// ----------------------------------------------------------------------------- loading

async function fetchOk(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r;
}

async function init() {
  ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href;
  try {
    state.card = await (await fetchOk('/model/model.json')).json();
    const bytes = await (await fetchOk('/model/model.onnx')).arrayBuffer();
    state.session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  } catch (e) {
    setStatus(`Could not load the model: ${e.message}`, 'error');
    document.body.dataset.state = 'error';
    return;
  }
  const c = state.card;
  const audio = c.input_kind === 'waveform';
  const pre = c.preprocessing;
  $('model').textContent = `${c.model.backbone || 'model'} · ${c.num_classes} labels · ` +
    (audio ? `calls: ${pre.window_seconds} s windows at ${pre.sample_rate} Hz` : 'photos') +
    ` · onnxruntime-web ${ort.env.versions?.web ?? ''}`;
  $('file').accept = audio ? 'audio/*,.wav,.flac,.ogg,.mp3' : 'image/*';
  $('what').textContent = audio ? 'recordings' : 'photos';
  $('file').disabled = false;
  setStatus(`Ready: choose ${audio ? 'a recording' : 'a photo'}.`);
  document.body.dataset.state = 'ready';
}

function setStatus(text, kind = 'info') {
  $('status').textContent = text;
  $('status').dataset.kind = kind;
}

// ----------------------------------------------------------------------------- decisions (model.json)

function thresholdOf(j) {
  const d = state.card.decisions || {};
  const v = d.thresholds?.values?.[j];
  return v === null || v === undefined ? d.default_threshold ?? 0.1 : v;
}

// The best labels by probability, the no-call class left out (what predict(x, top_k) lists).
function ranked(probs, k) {
  const bg = state.card.decisions?.background_class;
  const idx = [...probs.keys()].filter((j) => state.card.labels[j] !== bg);
  idx.sort((a, b) => probs[b] - probs[a] || a - b);
  return idx.slice(0, k);
}

// predict's decide(): labels reaching their thresholds; photos under the abstention threshold, or with
// nothing passing, are "unknown"; a window with nothing passing reports nothing, unless its call presence
// (1 - p(no-call)) reaches thresholds.presence: then its best label (a call, species uncertain).
function decide(probs, photo) {
  const order = ranked(probs, photo ? TOP_K.photo : TOP_K.recording);
  const best = probs[order[0]];
  const d = state.card.decisions || {};
  const abstain = d.abstain?.threshold;
  const accepted = !photo || abstain === undefined || abstain === null || best >= abstain;
  const picked = accepted ? order.filter((j) => probs[j] >= thresholdOf(j)).map((j) => [state.card.labels[j], probs[j]]) : [];
  if (!picked.length && photo) return [['unknown', best]];
  const presence = d.thresholds?.presence;
  const bg = state.card.labels.indexOf(d.background_class);
  if (!picked.length && !photo && presence !== undefined && presence !== null && bg >= 0
      && 1 - probs[bg] >= presence) {
    return [[state.card.labels[order[0]], best]];
  }
  return picked;
}

// ----------------------------------------------------------------------------- photos

async function decodePhoto(file) {
  let bitmap;
  try {
    // from-image: EXIF orientation applied; none: no colour-profile conversion (Pillow ignores ICC profiles too)
    bitmap = await createImageBitmap(file, { imageOrientation: 'from-image', colorSpaceConversion: 'none',
                                             premultiplyAlpha: 'none' });
  } catch {
    throw new UserError('not an image this browser can decode (this model classifies photos)');
  }
  const { width: w, height: h } = bitmap;
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext('2d', { willReadFrequently: true }); // CPU canvas: exact pixels read back
  ctx.fillStyle = '#ffffff'; // transparency composited on white (model.json preprocessing.decode, step 2)
  ctx.fillRect(0, 0, w, h);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const rgb = new Uint8Array(w * h * 3);
  for (let i = 0, o = 0; i < rgba.length; i += 4, o += 3) {
    rgb[o] = rgba[i]; rgb[o + 1] = rgba[i + 1]; rgb[o + 2] = rgba[i + 2];
  }
  return { rgb, w, h };
}

// FNV-1a (32 bit) of the pixels fed to the model: lets a test or another app check it decodes the same pixels.
function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

async function classifyPhoto(file) {
  const { rgb, w, h } = await decodePhoto(file);
  const input = new ort.Tensor('uint8', rgb, [1, h, w, 3]);
  const out = await state.session.run({ [state.session.inputNames[0]]: input });
  const probs = Array.from(out[state.session.outputNames[0]].data);
  const top = ranked(probs, 1)[0];
  return { file: file.name, kind: 'photo', width: w, height: h, pixels_fnv1a: fnv1a(rgb), top1: state.card.labels[top],
           top1_probability: probs[top], reported: decide(probs, true), probabilities: probs };
}

// ----------------------------------------------------------------------------- recordings

// Butterworth high-pass as second-order sections [b0 b1 b2 a0 a1 a2] (birdvision.data.audio.dsp.butter_highpass_sos).
function butterHighpassSos(order, cutoff, rate) {
  const fs2 = 4.0;
  const warped = fs2 * Math.tan((Math.PI * (2 * cutoff / rate)) / 2);
  const mul = (a, b) => [a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]];
  const div = (a, b) => { const d = b[0] * b[0] + b[1] * b[1]; return [(a[0] * b[0] + a[1] * b[1]) / d, (a[1] * b[0] - a[0] * b[1]) / d]; };
  const poles = [];
  let den = [1, 0];
  for (let m = -order + 1; m < order; m += 2) {
    const t = (Math.PI * m) / (2 * order);
    const pa = div([warped, 0], [-Math.cos(t), -Math.sin(t)]); // warped / analog low-pass pole
    den = mul(den, [fs2 - pa[0], -pa[1]]);
    poles.push(div([fs2 + pa[0], pa[1]], [fs2 - pa[0], -pa[1]])); // bilinear transform
  }
  const k = div([fs2 ** order, 0], den)[0];
  const upper = poles.filter((q) => q[1] > 0)
    .sort((a, b) => Math.abs(1 - Math.hypot(...b)) - Math.abs(1 - Math.hypot(...a)));
  return upper.map((q, i) => [i ? 1 : k, i ? -2 : -2 * k, i ? 1 : k, 1, -2 * q[0], q[0] * q[0] + q[1] * q[1]]);
}

// Steady-state initial conditions of a step (scipy.signal.sosfilt_zi).
function sosfiltZi(sos) {
  let scale = 1;
  return sos.map(([b0, b1, b2, a0, a1, a2]) => {
    [b0, b1, b2, a1, a2] = [b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0];
    const r0 = b1 - a1 * b0, r1 = b2 - a2 * b0, det = 1 + a1 + a2;
    const zi = [scale * (r0 + r1) / det, scale * ((1 + a1) * r1 - a2 * r0) / det];
    scale *= (b0 + b1 + b2) / (1 + a1 + a2);
    return zi;
  });
}

// Transposed direct form II through the cascade, in place, states started at zi * x[0].
function sosfilt(sos, zi, x) {
  const z = zi.map(([p, q]) => [p * x[0], q * x[0]]);
  for (let n = 0; n < x.length; n++) {
    let u = x[n];
    for (let s = 0; s < sos.length; s++) {
      const [b0, b1, b2, a0, a1, a2] = sos[s];
      const y = (b0 / a0) * u + z[s][0];
      z[s][0] = (b1 / a0) * u - (a1 / a0) * y + z[s][1];
      z[s][1] = (b2 / a0) * u - (a2 / a0) * y;
      u = y;
    }
    x[n] = u;
  }
}

// Zero-phase filtering with odd extension (scipy.signal.sosfiltfilt, padtype="odd").
function sosfiltfilt(sos, x) {
  const edge = 3 * (2 * sos.length + 1);
  const n = x.length, buf = new Float64Array(n + 2 * edge);
  for (let i = 0; i < edge; i++) buf[i] = 2 * x[0] - x[edge - i];
  buf.set(x, edge);
  for (let i = 0; i < edge; i++) buf[edge + n + i] = 2 * x[n - 1] - x[n - 2 - i];
  const zi = sosfiltZi(sos);
  sosfilt(sos, zi, buf);
  buf.reverse();
  sosfilt(sos, zi, buf);
  buf.reverse();
  return Float32Array.from(buf.subarray(edge, edge + n));
}

async function decodeRecording(file, rate) {
  const data = await file.arrayBuffer();
  let audio;
  try {
    // decodeAudioData on a context at the model's rate resamples to it (Chromium's sinc resampler,
    // not birdvision's polyphase filter: the difference is measured in the README).
    audio = await new OfflineAudioContext(1, 1, rate).decodeAudioData(data);
  } catch {
    throw new UserError('not a recording this browser can decode (this model classifies calls)');
  }
  const n = audio.length, ch = audio.numberOfChannels, mono = new Float32Array(n);
  for (let c = 0; c < ch; c++) {
    const x = audio.getChannelData(c);
    for (let i = 0; i < n; i++) mono[i] += x[i];
  }
  if (ch > 1) for (let i = 0; i < n; i++) mono[i] /= ch; // mean of the channels
  return mono;
}

async function classifyRecording(file) {
  const pre = state.card.preprocessing;
  const rate = pre.sample_rate, clip = pre.window_samples, hop = Math.round(pre.hop_seconds * rate);
  let x = await decodeRecording(file, rate);
  if (!x.length) throw new UserError('the recording has no samples');
  const hz = pre.spec?.highpass_hz;
  const order = Number((/order (\d+)/.exec(pre.highpass || '') || [])[1] || 4);
  if (hz && x.length >= 3 * (2 * order + 1) + 1) x = sosfiltfilt(butterHighpassSos(order, hz, rate), x);
  // Windows from 0 every hop; the last one not covered yet is zero-padded (birdvision.prediction.windows).
  const spans = [];
  let covered = 0;
  for (let start = 0; start < x.length; start += hop) {
    if (start + clip <= x.length) { spans.push([start, clip]); covered = start + clip; }
    else { if (covered < x.length) spans.push([start, x.length - start]); break; }
  }
  const windows = [];
  for (let i = 0; i < spans.length; i += WINDOW_BATCH) {
    const part = spans.slice(i, i + WINDOW_BATCH), batch = new Float32Array(part.length * clip);
    part.forEach(([s, v], b) => batch.set(x.subarray(s, s + v), b * clip));
    const out = await state.session.run({ [state.session.inputNames[0]]: new ort.Tensor('float32', batch, [part.length, clip]) });
    const p = out[state.session.outputNames[0]].data, k = state.card.num_classes;
    part.forEach(([s, v], b) => {
      const probs = Array.from(p.subarray(b * k, (b + 1) * k));
      windows.push({ start_s: s / rate, end_s: (s + v) / rate, reported: decide(probs, false), probabilities: probs });
    });
  }
  return { file: file.name, kind: 'recording', sample_rate: rate, samples: x.length, windows };
}

// ----------------------------------------------------------------------------- page

function bars(probs) {
  const ul = document.createElement('ul');
  ul.className = 'bars';
  for (const j of ranked(probs, TOP_K.photo)) {
    const li = document.createElement('li');
    const pass = probs[j] >= thresholdOf(j);
    li.innerHTML = `<span class="label"></span><span class="bar"><span style="width:${(probs[j] * 100).toFixed(1)}%"></span></span>` +
      `<span class="p">${(probs[j] * 100).toFixed(1)}%</span>`;
    li.querySelector('.label').textContent = state.card.labels[j];
    li.title = `threshold ${thresholdOf(j).toFixed(3)}${pass ? ' (passes)' : ''}`;
    if (pass) li.classList.add('pass');
    ul.append(li);
  }
  return ul;
}

function show(file, result) {
  const card = document.createElement('article');
  const h = document.createElement('h2');
  h.textContent = file.name;
  card.append(h);
  if (result.error) {
    card.classList.add('error');
    const p = document.createElement('p');
    p.className = 'message';
    p.textContent = result.error;
    card.append(p);
  } else if (result.kind === 'photo') {
    const img = document.createElement('img');
    img.src = URL.createObjectURL(file);
    img.alt = file.name;
    const answer = document.createElement('p');
    answer.className = 'answer';
    answer.textContent = result.reported.map(([l, p]) => `${l} (${(p * 100).toFixed(1)}%)`).join(', ');
    if (result.reported[0][0] === 'unknown') { // say why: under the abstention threshold, or no label passes
      const ab = state.card.decisions?.abstain?.threshold;
      answer.title = ab !== undefined && ab !== null && result.top1_probability < ab
        ? `best guess ${result.top1}, under the abstention threshold ${(ab * 100).toFixed(1)}%`
        : `best guess ${result.top1}, under its threshold`;
      answer.textContent += ` · best guess ${result.top1}`;
    }
    card.append(img, answer, bars(result.probabilities));
  } else {
    const table = document.createElement('table');
    table.innerHTML = '<tr><th>start s</th><th>end s</th><th>reported</th><th>best</th></tr>';
    for (const w of result.windows) {
      const tr = table.insertRow();
      const best = ranked(w.probabilities, 1)[0];
      [w.start_s.toFixed(2), w.end_s.toFixed(2),
       w.reported.map(([l, p]) => `${l} ${(p * 100).toFixed(0)}%`).join(', ') || '—',
       `${state.card.labels[best]} ${(w.probabilities[best] * 100).toFixed(0)}%`].forEach((t) => { tr.insertCell().textContent = t; });
    }
    card.append(table);
  }
  $('out').prepend(card);
}

async function onFiles(files) {
  const photo = state.card.input_kind !== 'waveform';
  $('file').disabled = true;
  document.body.dataset.state = 'busy';
  for (const file of files) {
    setStatus(`Classifying ${file.name} …`);
    let result;
    try {
      result = photo ? await classifyPhoto(file) : await classifyRecording(file);
    } catch (e) {
      const message = e instanceof UserError ? e.message : `could not classify it (${e.message || e})`;
      result = { file: file.name, error: `${file.name}: ${message}` };
    }
    state.results.push(result);
    show(file, result);
  }
  $('results').textContent = JSON.stringify(state.results, null, 1);
  $('results').dataset.count = String(state.results.length);
  setStatus(`Done: ${state.results.length} file(s) classified so far.`);
  $('file').disabled = false;
  $('file').value = '';
  document.body.dataset.state = 'ready';
}

$('file').addEventListener('change', (e) => onFiles([...e.target.files]));
window.addEventListener('unhandledrejection', (e) => setStatus(`Error: ${e.reason?.message || e.reason}`, 'error'));
init();
