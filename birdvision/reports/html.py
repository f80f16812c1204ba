"""One self-contained HTML page per run: config, data audit, learning curves, metrics, evaluation, export parity.

The page must open from a USB stick, an e-mail attachment or an air-gapped lab machine,
so it loads nothing: CSS is inline and every image is embedded as base64. It reads only
files in the run folder, and each section is shown when its files exist, so the same
function serves a run straight out of ``fit``, one evaluated later and one exported.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import time
from pathlib import Path
from typing import Any

from birdvision.reports import plots
from birdvision.reports.metrics import split_metric
from birdvision.runs.artifacts import for_people, from_spreadsheet, open_text, write_text

log = logging.getLogger(__name__)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1f3a5f;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header .sub{opacity:.85;font-size:13px;word-break:break-all}
main{max-width:1200px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:16px 20px;margin:18px 0}
h2{font-size:18px;margin:0 0 12px;color:#1f3a5f}h3{font-size:15px;margin:16px 0 8px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #dde1e7;border-radius:6px;padding:8px 14px;min-width:120px;background:#fafbfc}
.card .v{font-size:22px;font-weight:600}.card .k{font-size:12px;color:#5b6475}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e6e9ee;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #e6e9ee;margin:6px 0}
pre{background:#f4f5f7;padding:10px;border-radius:6px;overflow:auto;font-size:12px;max-height:480px}
.note{color:#5b6475;font-size:12px}.warn{color:#8a4b00}
details summary{cursor:pointer;color:#1f3a5f;margin:6px 0}
nav a{color:#cfe0ff;margin-right:14px;font-size:13px}
"""


def _esc(v: Any) -> str:
    return html.escape(for_people(v))


def _num(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return _esc(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return _esc(v)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
        log.warning("report: cannot read %s (%s)", path, e)
        return None


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _img_file(path: Path, alt: str) -> str:
    return _img(path.read_bytes(), alt) if path.is_file() else ""


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += _flatten(v, key + ".")
        elif isinstance(v, list):
            text = json.dumps(v, default=str)
            out.append((key, text if len(text) <= 300 else text[:297] + "..."))
        else:
            out.append((key, v))
    return out


def kv_table(d: dict) -> str:
    """A two-column table of a (flattened) mapping."""
    rows = "".join(f"<tr><th>{_esc(k)}</th><td class='n'>{_num(v)}</td></tr>" for k, v in _flatten(d))
    return f"<table>{rows}</table>"


def _cards(items: list[tuple[str, Any]]) -> str:
    cells = []
    for k, v in items:
        if v is None:
            continue
        # Rates (accuracies, precision, recall, F1, ECE) read best as percentages; counts and T do not.
        is_rate = isinstance(v, float) and 0 <= v <= 1 and k not in ("temperature",) and "AUROC" not in k
        text = f"{v * 100:.1f} %" if is_rate else _num(v)
        cells.append(f"<div class='card'><div class='v'>{_esc(text)}</div><div class='k'>{_esc(k)}</div></div>")
    return f"<div class='cards'>{''.join(cells)}</div>"


def csv_table(path: Path, *, limit: int | None = None, sort_key: str | None = None, ascending: bool = True) -> str:
    """An HTML table from a CSV file, optionally sorted by a numeric column and cut to ``limit`` rows."""
    if not path.is_file():
        return ""
    with open_text(path) as f:
        rows = [{k: from_spreadsheet(v or "") for k, v in r.items()} for r in csv.DictReader(f)]
    if not rows:
        return "<p class='note'>(no rows)</p>"
    if sort_key:
        def key(r: dict) -> float:
            try:
                return float(r[sort_key])
            except (KeyError, ValueError):
                return float("inf")

        rows.sort(key=key, reverse=not ascending)
    shown = rows[:limit] if limit else rows
    cols = list(rows[0])
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)

    def cell(v: str) -> str:
        try:
            f = float(v)
            return f"<td class='n'>{_esc(v if f.is_integer() and '.' not in v else f'{f:.3f}')}</td>"
        except ValueError:
            return f"<td>{_esc(v)}</td>"

    body = "".join("<tr>" + "".join(cell(r[c]) for c in cols) + "</tr>" for r in shown)
    more = f"<p class='note'>{len(shown)} of {len(rows)} rows; all in {_esc(path.name)}</p>" if len(shown) < len(rows) else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


# ----------------------------------------------------------------------------- sections


def _learning_curves(run_dir: Path) -> str:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return ""
    fig = plots.learning_curves_figure(plots.read_metrics_csv(path))
    if fig is None:
        return ""
    plots.save_figure(fig, run_dir / "learning_curves.png")
    return _img((run_dir / "learning_curves.png").read_bytes(), "learning curves")


def _eval_section(d: Path) -> str:
    m = _read_json(d / "metrics.json") or {}
    parts = [f"<h2 id='{_esc(d.name)}'>Evaluation: {_esc(m.get('split', d.name))} split</h2>"]
    parts.append(_cards([
        ("top-1 accuracy", split_metric(m, "acc")), ("top-5 accuracy", split_metric(m, "acc5")),
        ("macro precision", split_metric(m, "precision")), ("macro recall", split_metric(m, "recall")),
        ("macro F1", split_metric(m, "f1")), ("ECE (raw)", split_metric(m, "ece")),
        ("ECE (scaled)", split_metric(m, "ece_calibrated")), ("ECE (in-split cross-fit)", split_metric(m, "ece_crossfit")),
        ("temperature", m.get("temperature")), ("items", m.get("items")),
    ]))
    parts.append(f"<p class='note'>data: {_esc(m.get('data', ''))}; checkpoint: {_esc(m.get('checkpoint', ''))}; "
                 f"classes in split: {_esc(m.get('classes_in_split', ''))} of {_esc(m.get('num_classes', ''))}</p>")
    for key in ("calibration_note", "calibration_warning"):
        if m.get(key):
            parts.append(f"<p class='warn'>{_esc(m[key])}</p>")
    parts.append("<h3>Calibration</h3>" + _img_file(d / "reliability.png", "reliability diagram"))
    parts.append("<h3>Confusion matrix</h3>" + _img_file(d / "confusion_matrix.png", "confusion matrix"))
    parts.append("<h3>Most-confused pairs</h3>" + csv_table(d / "confused_pairs.csv", limit=15))
    parts.append("<h3>Per-class results (weakest first)</h3>"
                 + csv_table(d / "per_class.csv", limit=30, sort_key="f1", ascending=True))
    if (d / "thresholds.csv").is_file():
        parts.append(f"<h3>Per-class thresholds ({_esc(m.get('thresholds/target', ''))}="
                     f"{_esc(m.get('thresholds/target_value', ''))} chosen on valid, measured here)</h3>")
        parts.append(_cards([("false-positive rate (pooled)", m.get("thresholds/fpr_pooled")),
                             ("largest class FPR", m.get("thresholds/fpr_max")),
                             ("macro recall", m.get("thresholds/recall_macro")),
                             ("no-call windows silent", m.get("thresholds/background_silent")),
                             ("classes on the global threshold", m.get("thresholds/classes_global"))]))
        parts.append(csv_table(d / "thresholds.csv", limit=40, sort_key="fpr", ascending=False))
    if (d / "abstention.csv").is_file():
        parts.append(f"<h3>Abstention ({_esc(m.get('abstain/score', ''))} after temperature; \"unknown\" below the "
                     "threshold)</h3>")
        parts.append(_cards([(f"AUROC vs {k.removeprefix('abstain/auroc_')} images", v) for k, v in m.items()
                             if k.startswith("abstain/auroc_")]))
        parts.append(csv_table(d / "abstention.csv"))
    parts.append("<h3>Top losses</h3>" + _img_file(d / "top_losses.png", "top losses"))
    parts.append("<details><summary>all metrics</summary>" + kv_table({k: v for k, v in m.items() if k != "outputs"})
                 + "</details>")
    return "<section>" + "".join(parts) + "</section>"


def _parity_sections(run_dir: Path) -> str:
    files = sorted(p for d in run_dir.glob("export*") if d.is_dir() for p in d.rglob("parity*.json"))
    if not files:
        return ""
    parts = ["<section><h2 id='export'>Export parity</h2>"]
    for p in files:
        data = _read_json(p)
        parts.append(f"<h3>{_esc(p.relative_to(run_dir))}</h3>")
        parts.append(kv_table(data) if isinstance(data, dict) else f"<pre>{_esc(json.dumps(data, indent=2))}</pre>")
    return "".join(parts) + "</section>"


def render_run_report(run_dir: str | Path) -> str:
    """The report page of a run folder as an HTML string."""
    run = Path(run_dir)
    has_summary = (run / "summary.json").is_file()
    summary = _read_json(run / "summary.json") if has_summary else None
    summary = summary if isinstance(summary, dict) else {}
    title = f"{summary.get('recipe') or run.parent.name} · {run.name}"
    evals = sorted(d for d in run.glob("eval*") if (d / "metrics.json").is_file())
    nav = ["<a href='#training'>training</a>"] + [f"<a href='#{_esc(d.name)}'>{_esc(d.name)}</a>" for d in evals]
    body: list[str] = []

    sec = ["<section><h2 id='training'>Training</h2>"]
    if summary:
        sec.append(_cards([
            ("best val accuracy", summary.get("val/acc_best")), ("test accuracy", summary.get("test/acc")),
            ("test top-5 acc", summary.get("test/acc5")), ("epochs", summary.get("epochs_completed")),
            ("classes", summary.get("num_classes")), ("fit seconds", summary.get("fit_seconds")),
        ]))
    else:
        sec.append("<p class='note'>summary.json is damaged (not a JSON object): training results cannot be shown</p>"
                   if has_summary else "<p class='note'>no summary.json (the run has not finished)</p>")
    curves = _learning_curves(run)
    sec.append("<h3>Learning curves</h3>" + (curves or "<p class='note'>no metrics.csv</p>"))
    if (run / "lr_find.png").is_file():
        sec.append("<h3>Learning-rate range test</h3>" + _img_file(run / "lr_find.png", "lr finder"))
    if summary:
        sec.append("<details><summary>summary.json</summary>" + kv_table(summary) + "</details>")
    body.append("".join(sec) + "</section>")

    audit = run / "audit_summary.json"
    if audit.is_file():
        data = _read_json(audit)
        nav.append("<a href='#audit'>data audit</a>")
        body.append("<section><h2 id='audit'>Data audit</h2>"
                    + (kv_table(data) if isinstance(data, dict) else f"<pre>{_esc(json.dumps(data, indent=2))}</pre>")
                    + "</section>")
    body += [_eval_section(d) for d in evals]
    if not evals:
        body.append("<section><h2>Evaluation</h2><p class='note'>not evaluated yet: "
                    "python -m birdvision.evaluate ckpt=" + _esc(run) + "</p></section>")
    parity = _parity_sections(run)
    if parity:
        nav.append("<a href='#export'>export</a>")
        body.append(parity)
    if (run / "config.yaml").is_file():
        nav.append("<a href='#config'>config</a>")
        body.append("<section><h2 id='config'>Config</h2><pre>"
                    + _esc((run / "config.yaml").read_text(encoding="utf-8")) + "</pre></section>")

    sub = (f"{_esc(summary.get('backbone', ''))} · {_esc(summary.get('mode', ''))} · run folder {_esc(run.resolve())}"
           f" · report written {time.strftime('%Y-%m-%d %H:%M')}")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{_esc(title)}</title>"
        f"<style>{CSS}</style></head><body><header><h1>birdvision run {_esc(title)}</h1>"
        f"<div class='sub'>{sub}</div><nav>{''.join(nav)}</nav></header><main>{''.join(body)}</main></body></html>\n"
    )


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.html`` (atomically) and return its path."""
    run = Path(run_dir)
    if not run.is_dir():
        from birdvision.runs.folders import RunError

        raise RunError(f"run folder {run} does not exist")
    return write_text(run / "report.html", render_run_report(run))
