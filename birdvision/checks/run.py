"""The audit: inventory -> scan (cached, parallel) -> checks -> policy and decisions -> outputs.

Outputs in ``output_dir``, each written atomically: ``manifest.csv`` (training's input:
every file with its status and duplicate ``group``), ``findings.csv`` (one row per file
and issue, with the action taken), ``report.html`` (self-contained, for people) and
``summary.json`` (for machines). The return value is the process exit status: 1 when a
finding whose policy action is ``fail`` remains unresolved.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from birdvision import __version__
from birdvision.checks.cache import ScanCache
from birdvision.checks.duplicates import Duplicates, find_duplicates
from birdvision.checks.findings import Finding, write_findings
from birdvision.checks.inventory import Candidate, Inventory, take_inventory
from birdvision.checks.policy import AuditError, Decision, Policy, as_dict, build_policy
from birdvision.checks.quality import property_findings, score_properties
from birdvision.checks.report import render_report
from birdvision.checks.scan import ScanSettings, ScanStats, scan_all
from birdvision.data.manifest import SPLITS, Sample, write_manifest
from birdvision.data.splits import assign_splits
from birdvision.runs.artifacts import write_json, write_text

log = logging.getLogger("birdvision.audit")

# When one photo sits in several splits, the copy in the most held-out split stays:
# evaluation sets are the scarce, trusted side; train loses the copy.
HELD_OUT_ORDER = {"test": 0, "valid": 1, "train": 2, "": 3}


@dataclass
class AuditResult:
    """Everything the audit decided, before it is written out."""

    inventory: Inventory
    samples: list[Sample]
    findings: list[Finding]
    scans: dict[str, dict[str, Any]]
    duplicates: Duplicates | None
    stats: ScanStats
    policy: Policy
    failures: list[Finding] = field(default_factory=list)
    unmatched_decisions: list[Decision] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _decisions_by_path(
    inv: Inventory, decisions: list[Decision]
) -> tuple[dict[str, Decision], list[Decision]]:
    """Decisions keyed by absolute path, and those about files this data set does not have.

    A policy is written for the full data set and may be run on a subset, so a decision
    about an absent file is reported (log, summary, report), not an error.
    """
    by_rel = {c.rel: c for c in inv.candidates}
    labels = {c.label for c in inv.candidates} | {lab for lab, _ in inv.folders}
    out, unmatched = {}, []
    for d in decisions:
        c = by_rel.get(d.path)
        if c is None:
            log.warning("decision about %r does not apply: no such file under %s", d.path, inv.root)
            unmatched.append(d)
            continue
        if d.action == "relabel" and d.label not in labels:
            raise AuditError(f"decision about {d.path!r}: relabel to unknown species {d.label!r}")
        out[c.path] = d
    return out, unmatched


def _group_id(members: list[str]) -> str:
    return "dup-" + hashlib.sha256("\n".join(sorted(members)).encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _split_samples(samples: list[Sample], cfg: Any, inv: Inventory) -> str:
    mode = cfg.data.split
    if mode not in ("auto", "regroup"):
        raise AuditError(f"data.split={mode!r}: expected auto (keep the data's splits) or regroup")
    if mode == "regroup" or not inv.has_splits:
        try:
            assign_splits(samples, valid_fraction=cfg.data.valid_fraction, test_fraction=cfg.data.test_fraction,
                          seed=cfg.data.seed, regroup=True, where=str(inv.root))
        except ValueError as e:
            raise AuditError(str(e)) from None
        return f"grouped split (duplicate clusters kept whole, seed={cfg.data.seed})"
    return "the data's own splits"


class _Ledger:
    """Findings plus what they mean for each file's status."""

    def __init__(self, policy: Policy, decisions: dict[str, Decision]):
        self.policy = policy
        self.decisions = decisions
        self.findings: list[Finding] = []

    def add(
        self,
        s: Sample | None,
        issue: str,
        action: str | None = None,
        *,
        path: str = "",
        label: str = "",
        split: str = "",
        **kw: Any,
    ) -> Finding:
        f = Finding(
            path=s.path if s else path,
            split=s.split if s else split,
            label=s.label if s else label,
            issue=issue,
            action=action or self.policy.action(issue),
            **kw,
        )
        self.findings.append(f)
        return f

    def decided(self, path: str) -> Decision | None:
        return self.decisions.get(path)

    def decision_dropped(self, path: str) -> bool:
        d = self.decisions.get(path)
        return d is not None and d.action == "drop"


def _duplicate_findings(
    ledger: _Ledger, dups: Duplicates, by_path: dict[str, Sample], original_label: dict[str, str]
) -> None:
    """exact/near duplicates (cleanvision's names) and the leakage classification of each cluster."""
    for issue, partners in (("exact_duplicates", dups.exact_partner), ("near_duplicates", dups.near_partner)):
        action = ledger.policy.action(issue)
        kept: set[tuple[int, str, str]] = set()
        for path in sorted(partners, key=lambda p: (HELD_OUT_ORDER[by_path[p].split], p)):
            s, partner = by_path[path], partners[path]
            this = action
            if action == "drop":  # keep one copy per cluster, split and label; the rest go
                key = (dups.cluster_of[path], s.split, s.label)
                this = "keep" if key not in kept else "drop"
                kept.add(key)
            ledger.add(
                s,
                issue,
                this,
                score=partner.similarity,
                related_path=partner.path,
                detail=f"found by {partner.method}",
            )
    for members in dups.clusters:
        live = [by_path[p] for p in members if not ledger.decision_dropped(p)]
        # cross_label: the same photo under two species; decisions may have resolved it.
        original = {original_label[p] for p in members}
        labels = {s.label for s in live}
        if len(original) > 1 or len(labels) > 1:
            resolved = len(labels) <= 1
            for p in members:
                s = by_path[p]
                others = [o for o in members if original_label[o] != original_label[p]] or [
                    o for o in members if o != p
                ]
                rel = max(others, key=lambda o: dups.similarity(p, o))
                if resolved:
                    d = ledger.decided(p)
                    action = "drop" if ledger.decision_dropped(p) else "keep"
                    detail = (
                        f"resolved by decision: {d.action} ({d.reason})"
                        if d
                        else "resolved by decisions on copies"
                    )
                else:
                    action, detail = (
                        ledger.policy.action("cross_label_duplicate"),
                        "same photo under several species",
                    )
                ledger.add(
                    s,
                    "cross_label_duplicate",
                    action,
                    score=dups.similarity(p, rel),
                    related_path=rel,
                    detail=detail,
                )
        splits = {s.split for s in live}
        if len(splits) > 1:
            keep_split = min(splits, key=lambda x: HELD_OUT_ORDER[x])
            for s in live:
                rel = max(
                    (o for o in live if o.split != s.split), key=lambda o: dups.similarity(s.path, o.path)
                )
                if s.split == keep_split:
                    action, detail = "keep", f"the {keep_split} copy stays"
                else:
                    action, detail = ledger.policy.action("cross_split_duplicate"), f"also in {rel.split}"
                ledger.add(
                    s,
                    "cross_split_duplicate",
                    action,
                    score=dups.similarity(s.path, rel.path),
                    related_path=rel.path,
                    detail=detail,
                )


def _apply_status(samples: list[Sample], ledger: _Ledger) -> None:
    by_path: dict[str, list[Finding]] = defaultdict(list)
    for f in ledger.findings:
        by_path[f.path].append(f)
    for s in samples:
        d = ledger.decided(s.path)
        actions = {f.action for f in by_path.get(s.path, [])}
        if d is not None and d.action == "drop":
            s.status = "dropped"
        elif d is not None and d.action == "keep" and "unreadable" not in {f.issue for f in by_path[s.path]}:
            s.status = "ok"
        elif "drop" in actions:
            s.status = "dropped"
        elif actions & {"flag", "fail"}:
            s.status = "flagged"
        else:
            s.status = "ok"


def _class_findings(samples: list[Sample], inv: Inventory, ledger: _Ledger) -> None:
    """Classes missing from a split or below the policy's minimum count, counting usable images only."""
    splits = sorted({s.split for s in samples} | {sp for _, sp in inv.folders if sp}, key=SPLITS.index)
    labels = sorted({s.label for s in samples} | {lab for lab, _ in inv.folders})
    usable = Counter((s.label, s.split) for s in samples if s.active)
    dropped_classes = set()
    for label in labels:
        for split in splits:
            n = usable[(label, split)]
            folder = inv.root / split / label if inv.has_splits else inv.root / label
            minimum = ledger.policy.min_count(split)
            if n == 0:
                issue, detail = "class_missing_from_split", f"no usable image of this class in {split}"
            elif n < minimum:
                issue, detail = (
                    "class_below_min_count",
                    f"{n} usable image(s) in {split}, policy minimum {minimum}",
                )
            else:
                continue
            f = ledger.add(
                None, issue, path=str(folder), label=label, split=split, score=float(n), detail=detail
            )
            if f.action == "drop":
                dropped_classes.add(label)
    for s in samples:
        if s.label in dropped_classes and s.status != "dropped":
            s.status = "dropped"
            ledger.add(s, "class_below_min_count", "drop", detail="class dropped by policy (too few images)")


def audit(cfg: Any) -> AuditResult:
    """Run every check on ``cfg.data.root`` and decide each file's status (writes only the cache)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    policy = build_policy(cfg)
    if not cfg.data.root:
        raise AuditError("data.root is not set: give the data folder, e.g. data.root=/data/birds525")
    inv = take_inventory(cfg.data.root, allow_outside_root=bool(cfg.data.allow_outside_root))
    decisions, unmatched = _decisions_by_path(inv, policy.decisions)
    timings["inventory_s"] = time.perf_counter() - t0

    t = policy.thresholds
    settings = ScanSettings(t.max_pixels, t.phash_size, t.descriptor_px, int(cfg.report.thumbnail_px))
    cache_dir = (
        Path(cfg.scan.cache_dir).expanduser() if cfg.scan.cache_dir else Path(cfg.output_dir) / ".cache"
    )
    try:
        cache = ScanCache(cache_dir, settings.signature())
    except Exception as e:  # noqa: BLE001 - sqlite/OS errors on a user-given folder
        raise AuditError(f"scan.cache_dir {cache_dir}: cannot open the cache ({e})") from None
    try:
        scans, stats = scan_all(
            [c.path for c in inv.candidates],
            settings,
            cache,
            workers=cfg.scan.workers,
            trust_mtime=cfg.scan.trust_mtime,
            progress=cfg.scan.progress,
        )
    finally:
        cache.close()
    timings["scan_s"] = stats.seconds

    t1 = time.perf_counter()
    samples: list[Sample] = []
    by_path: dict[str, Sample] = {}
    cand_of: dict[str, Candidate] = {}
    for c in inv.candidates:
        d = decisions.get(c.path)
        label = d.label if d is not None and d.action == "relabel" else c.label
        s = Sample(c.path, label, c.split, group=c.path, sha256=scans[c.path].get("sha256", ""))
        samples.append(s)
        by_path[c.path] = s
        cand_of[c.path] = c
    readable = [c.path for c in inv.candidates if scans[c.path]["readable"]]
    dups = None
    if readable:
        desc = np.stack([np.asarray(scans[p]["descriptor"], dtype=np.float32) for p in readable])
        dups = find_duplicates(
            readable,
            [scans[p]["pixel_md5"] for p in readable],
            [scans[p]["phash"] for p in readable],
            desc,
            t.near_duplicate_cosine,
            progress=cfg.scan.progress,
        )
        timings["duplicate_search_s"] = time.perf_counter() - t1
        for members in dups.clusters:
            g = _group_id(members)
            for p in members:
                by_path[p].group = g
    split_origin = _split_samples(samples, cfg, inv)
    timings["duplicates_s"] = time.perf_counter() - t1

    ledger = _Ledger(policy, decisions)
    for li in inv.issues:
        s = by_path.get(li.path)
        ledger.add(s, li.issue, path=li.path, label=li.label, split=li.split, detail=li.detail)
    for c in inv.candidates:
        r = scans[c.path]
        if not r["readable"]:
            ledger.add(by_path[c.path], "unreadable", detail=r["reason"])
    scores = score_properties({p: scans[p]["properties"] for p in readable}, t)
    for path, issue, score in property_findings(scores):
        ledger.add(by_path[path], issue, score=score, detail=f"cleanvision {issue} score {score:.3f}")
    if dups is not None:
        _duplicate_findings(ledger, dups, by_path, {p: c.label for p, c in cand_of.items()})
    for path, d in decisions.items():
        s = by_path[path]
        if d.action == "keep" and not scans[path]["readable"]:
            raise AuditError(f"decision keep {d.path!r}: the file is unreadable ({scans[path]['reason']})")
        detail = d.reason if d.action != "relabel" else f"{cand_of[path].label} -> {d.label}: {d.reason}"
        ledger.add(s, "decision", d.action, detail=detail)
    _apply_status(samples, ledger)
    _class_findings(samples, inv, ledger)

    failures = [
        f
        for f in ledger.findings
        if f.action == "fail"
        and not (ledger.decided(f.path) and ledger.decided(f.path).action in ("drop", "keep"))
    ]
    timings["checks_s"] = time.perf_counter() - t1
    timings["split_origin"] = split_origin  # type: ignore[assignment]
    samples.sort(key=lambda s: (HELD_OUT_ORDER[s.split], s.label, s.path))
    return AuditResult(
        inv, samples, ledger.findings, scans, dups, stats, policy, failures, unmatched, timings
    )


def summarize(result: AuditResult, cfg: Any) -> dict[str, Any]:
    """The machine-readable summary: counts per issue, split and action; class counts; decisions."""
    per_issue: dict[str, Counter] = defaultdict(Counter)
    per_action: dict[str, Counter] = defaultdict(Counter)
    for f in result.findings:
        per_issue[f.issue][f.split or "-"] += 1
        per_action[f.issue][f.action] += 1
    status = Counter(s.status for s in result.samples)
    classes: dict[str, dict[str, int]] = defaultdict(dict)
    for (label, split), n in sorted(Counter((s.label, s.split) for s in result.samples if s.active).items()):
        classes[label][split] = n
    unreadable = sum(1 for r in result.scans.values() if not r["readable"])
    dups = result.duplicates
    st = result.stats
    return {
        "birdvision_version": __version__,
        "check": cfg.check,
        "data_root": str(result.inventory.root),
        "layout": result.inventory.layout,
        "splits": result.timings.get("split_origin", ""),
        "files": {
            "audited": len(result.samples),
            "readable": len(result.samples) - unreadable,
            "unreadable": unreadable,
            "hidden_ignored": result.inventory.hidden_files,
            "ok": status["ok"],
            "flagged": status["flagged"],
            "dropped": status["dropped"],
        },
        "issues": {k: dict(v) for k, v in sorted(per_issue.items())},
        "actions": {k: dict(v) for k, v in sorted(per_action.items())},
        "duplicates": {
            "exact_sets": len(dups.exact_sets) if dups else 0,
            "clusters": len(dups.clusters) if dups else 0,
        },
        "class_counts": dict(classes),
        "decisions": [as_dict(d) for d in result.policy.decisions],
        "decisions_not_applied": [as_dict(d) for d in result.unmatched_decisions],
        "removed": [
            {"path": f.path, "issue": f.issue, "detail": f.detail}
            for f in result.findings
            if f.action == "drop" and f.issue != "decision"
        ],
        "failed": [{"path": f.path, "issue": f.issue, "detail": f.detail} for f in result.failures],
        "exit_status": 1 if result.failures else 0,
        "scan": {
            "files": st.files,
            "cached": st.cached,
            "computed": st.computed,
            "workers": st.workers,
            "seconds": round(st.seconds, 3),
            "images_per_s": round(st.files / st.seconds, 1) if st.seconds > 0 else None,
        },
        "timings_s": {k: round(v, 3) for k, v in result.timings.items() if isinstance(v, float)},
    }


def run(cfg: Any) -> int:
    """Audit, write manifest.csv, findings.csv, report.html and summary.json; return the exit status."""
    from birdvision.console import console

    t0 = time.perf_counter()
    result = audit(cfg)
    out = Path(cfg.output_dir)
    t1 = time.perf_counter()
    write_manifest(out / "manifest.csv", result.samples)
    write_findings(out / "findings.csv", result.findings)
    summary = summarize(result, cfg)
    write_text(
        out / "report.html", render_report(result, summary, max_thumbnails=int(cfg.report.max_thumbnails))
    )
    summary["timings_s"]["write_s"] = round(time.perf_counter() - t1, 3)
    summary["timings_s"]["total_s"] = round(time.perf_counter() - t0, 3)
    write_json(out / "summary.json", summary)
    try:
        from birdvision.config import save_config

        save_config(cfg, out / "audit_config.yaml")
    except Exception as e:  # noqa: BLE001 - a plain dataclass config (library use) has no YAML form
        log.debug("config not saved: %s", e)

    f = summary["files"]
    console.print(
        f"[bold]audit[/] {f['audited']} files: {f['ok']} ok, {f['flagged']} flagged, {f['dropped']} dropped "
        f"({summary['scan']['cached']} from cache, {summary['scan']['seconds']:.1f}s scan)"
    )
    for issue, by_action in summary["actions"].items():
        console.print(f"  {issue:26s} " + ", ".join(f"{a} {n}" for a, n in sorted(by_action.items())))
    console.print(f"  outputs in {out}/: manifest.csv findings.csv report.html summary.json")
    if result.failures:
        issues = sorted({x.issue for x in result.failures})
        console.print(
            f"[red]audit failed[/]: {len(result.failures)} finding(s) with action fail: {', '.join(issues)}"
        )
        return 1
    return 0
