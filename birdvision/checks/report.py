"""The audit's HTML report: one self-contained file (thumbnails embedded) that reviewers open and read.

Counts per issue and split come first, then what was removed and why, the human
decisions, and a thumbnail grid per issue type (duplicates shown beside their copy), so
a reviewer can judge the policy's effect without opening the data folder.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from birdvision.data.manifest import SPLITS
from birdvision.runs.artifacts import for_people

if TYPE_CHECKING:
    from birdvision.checks.run import AuditResult

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.num{text-align:right}.grid{display:flex;flex-wrap:wrap;gap:10px}
.cell{width:210px;font-size:11px;word-break:break-all;border:1px solid #ddd;padding:4px}
.cell img{max-width:100px;max-height:100px;margin-right:2px;vertical-align:top}
.drop{color:#b00}.fail{color:#b00;font-weight:bold}.flag{color:#a60}.keep{color:#070}
.missing{display:inline-block;width:96px;height:96px;background:#eee;text-align:center;line-height:96px}
"""


def _e(x: Any) -> str:
    return html.escape(for_people(x))


def _img(result: AuditResult, path: str) -> str:
    r = result.scans.get(path)
    thumb = r.get("thumb") if r else None
    if not thumb:
        return '<span class="missing">no image</span>'
    return f'<img alt="" src="data:image/jpeg;base64,{base64.b64encode(thumb).decode()}">'


def _short(result: AuditResult, path: str) -> str:
    root = str(result.inventory.root)
    return path[len(root) + 1 :] if path.startswith(root + "/") else path


def render_report(result: AuditResult, summary: dict[str, Any], *, max_thumbnails: int = 48) -> str:
    """The report as one HTML string."""
    f = summary["files"]
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>birdvision audit</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Data audit: {_e(summary['data_root'])}</h1>",
        f"<p>policy <b>{_e(summary['check'])}</b>, layout {_e(summary['layout'])},"
        f" splits: {_e(summary['splits'])}."
        f" {f['audited']} files: {f['ok']} ok, {f['flagged']} flagged,"
        f" <span class='drop'>{f['dropped']} dropped"
        f"</span>, {f['unreadable']} unreadable; {f['hidden_ignored']} hidden file(s) ignored.</p>",
    ]
    if summary["failed"]:
        out.append(
            f"<p class='fail'>Audit FAILED: {len(summary['failed'])} finding(s) with policy action fail.</p>"
        )

    splits = [s for s in SPLITS if any(s in v for v in summary["issues"].values())]
    other = any("-" in v for v in summary["issues"].values())
    cols = splits + (["-"] if other else [])
    out.append("<h2>Findings per issue and split</h2><table><tr><th>issue</th>")
    out += [f"<th>{_e(c if c != '-' else 'no split')}</th>" for c in cols]
    out.append("<th>actions</th></tr>")
    for issue, counts in summary["issues"].items():
        acts = ", ".join(
            f"<span class='{_e(a)}'>{_e(a)} {n}</span>" for a, n in sorted(summary["actions"][issue].items())
        )
        out.append(
            f"<tr><td>{_e(issue)}</td>"
            + "".join(f"<td class='num'>{counts.get(c, 0)}</td>" for c in cols)
            + f"<td>{acts}</td></tr>"
        )
    out.append("</table>")

    if summary["decisions"]:
        out.append(
            "<h2>Human decisions</h2><table><tr><th>file</th><th>action</th><th>new label</th>"
            "<th>reason</th></tr>"
        )
        for d in summary["decisions"]:
            out.append(
                f"<tr><td>{_e(d['path'])}</td><td>{_e(d['action'])}</td><td>{_e(d['label'])}</td>"
                f"<td>{_e(d['reason'])}</td></tr>"
            )
        out.append("</table>")
        for d in summary.get("decisions_not_applied", []):
            out.append(
                f"<p class='flag'>Decision not applied, no such file in this data: {_e(d['path'])}</p>"
            )

    removed: dict[str, list] = defaultdict(list)
    for x in result.findings:
        if x.action == "drop":
            removed[x.path].append(x)
    out.append(f"<h2>Removed files ({len(removed)})</h2>")
    if removed:
        out.append("<table><tr><th>file</th><th>split</th><th>label</th><th>why</th></tr>")
        for path in sorted(removed):
            why = "; ".join(
                f"{x.issue}: {x.detail}"
                + (f" (copy of {_short(result, x.related_path)})" if x.related_path else "")
                for x in removed[path]
            )
            first = removed[path][0]
            out.append(
                f"<tr><td>{_e(_short(result, path))}</td><td>{_e(first.split)}</td><td>{_e(first.label)}</td>"
                f"<td>{_e(why)}</td></tr>"
            )
        out.append("</table>")

    by_issue: dict[str, list] = defaultdict(list)
    for x in result.findings:
        by_issue[x.issue].append(x)
    out.append("<h2>Findings by issue</h2>")
    for issue in sorted(by_issue):
        items = sorted(
            by_issue[issue], key=lambda x: (x.action != "fail", x.action != "drop", x.score or 0, x.path)
        )
        out.append(f"<h3>{_e(issue)} ({len(items)})</h3><div class='grid'>")
        for x in items[:max_thumbnails]:
            imgs = _img(result, x.path) + (_img(result, x.related_path) if x.related_path else "")
            score = "" if x.score is None else f" score {x.score:.3f}"
            related = f"<br>copy: {_e(_short(result, x.related_path))}" if x.related_path else ""
            out.append(
                f"<div class='cell'>{imgs}<br><b>{_e(x.label)}</b> [{_e(x.split or '-')}]"
                f" <span class='{_e(x.action)}'>{_e(x.action)}</span>{score}<br>{_e(_short(result, x.path))}"
                f"{related}<br><i>{_e(x.detail)}</i></div>"
            )
        out.append("</div>")
        if len(items) > max_thumbnails:
            out.append(f"<p>... and {len(items) - max_thumbnails} more in findings.csv</p>")

    out.append(
        "<h2>Usable images per class and split</h2><details><summary>show</summary><table><tr><th>class</th>"
    )
    split_cols = [s for s in SPLITS if any(s in v for v in summary["class_counts"].values())]
    out += [f"<th>{s}</th>" for s in split_cols] + ["</tr>"]
    for label, counts in summary["class_counts"].items():
        out.append(
            f"<tr><td>{_e(label)}</td>"
            + "".join(f"<td class='num'>{counts.get(s, 0)}</td>" for s in split_cols)
            + "</tr>"
        )
    out.append("</table></details>")
    sc = summary["scan"]
    out.append(
        f"<p><small>scan: {sc['files']} files, {sc['cached']} from cache, {sc['computed']} computed on "
        f"{sc['workers']} worker(s) in {sc['seconds']} s. birdvision {_e(summary['birdvision_version'])}"
        "</small></p></body></html>"
    )
    return "\n".join(out)
