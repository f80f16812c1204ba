"""Export acceptance: speed ratios of ONNX Runtime over PyTorch eager on this CPU, side by side in one run.

    python benchmarks/bench_export.py --resnet18 RUN_OR_CKPT [--effnet RUN_OR_CKPT] [--threads 2]

Checks (batch 1, 224 px):
- efficientnet_b0, ONNX Runtime FP32 >= 3x faster than PyTorch eager;
- resnet18, ONNX Runtime INT8 >= 4x faster than PyTorch eager, accuracy drop <= 1 point
  (needs a checkpoint trained on real photos for the accuracy to mean anything);
- preprocessing inside the graph costs <= 10% over the bare model.

Without ``--effnet`` (or ``--resnet18``) an untrained 224 px checkpoint is made on the
synthetic demo photos (speed does not depend on the weights). Every engine is timed in its
own subprocess with pinned threads, the engines taking turns for ``--rounds`` rounds; each
speed-up is the median over rounds of the ratio within a round, so a burst of load from
another process (or another VM on the host) that hits one round does not decide it. The
per-round ratios and the 1-minute load average are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def _untrained(backbone: str, out: Path) -> Path:
    """A 224 px checkpoint of ``backbone`` from a two-batch fit on the demo photos (seconds, no download)."""
    from birdvision.fit import main as fit

    args = ["recipe=demo", f"model.backbone={backbone}", "model.pretrained=false", "data.image_size=224", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "test_after_fit=false",
            "data.num_workers=0", "data.batch_size=8", f"output_dir={out}"]
    if fit(args) != 0:
        raise SystemExit(f"could not make a {backbone} checkpoint")
    return sorted((out / "demo").iterdir())[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resnet18", help="resnet18 run folder or .ckpt (trained on real photos for the accuracy check)")
    ap.add_argument("--effnet", help="efficientnet_b0 run folder or .ckpt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20, help="timed batch-1 calls per round")
    ap.add_argument("--rounds", type=int, default=12, help="alternating rounds; ratios are paired by round")
    ap.add_argument("--work", type=Path, default=None, help="where exports and made checkpoints go")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from rich.console import Console

    from birdvision.benchmarking.benchmark import benchmark_checkpoint
    from birdvision.benchmarking.table import engine_table
    from birdvision.benchmarking.timing import round_ratios

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_export_"))
    console = Console()
    effnet = args.effnet or _untrained("efficientnet_b0", work / "effnet_run")
    resnet = args.resnet18 or _untrained("resnet18", work / "resnet_run")
    load_before = os.getloadavg()[0]
    eff = benchmark_checkpoint(effnet, engines=("torch", "ort_fp32", "ort_bare"), export_dir=work / "effnet_export",
                               threads=args.threads, iters=args.iters, rounds=args.rounds)
    res = benchmark_checkpoint(resnet, engines=("torch", "ort_fp32", "ort_bare", "ort_int8"),
                               export_dir=work / "resnet_export", threads=args.threads, iters=args.iters,
                               rounds=args.rounds)
    console.print(engine_table(eff))
    console.print(engine_table(res))

    e, r = eff["engines"], res["engines"]
    checks = [
        ("efficientnet_b0 ORT fp32 speed-up vs eager (>= 3x)", e["ort_fp32"].get("speedup_vs_torch"), lambda v: v >= 3),
        ("resnet18 ORT int8 speed-up vs eager (>= 4x)", r["ort_int8"].get("speedup_vs_torch"), lambda v: v >= 4),
        ("resnet18 int8 accuracy drop, points (<= 1)", res["ratios"].get("int8_acc_drop_points"), lambda v: v <= 1),
        ("efficientnet_b0 in-graph preprocessing overhead (<= 10%)",
         eff["ratios"].get("preprocess_overhead"), lambda v: v <= 0.10),
        ("resnet18 in-graph preprocessing overhead (<= 10%)", res["ratios"].get("preprocess_overhead"),
         lambda v: v <= 0.10),
    ]
    ok = True
    for name, value, test in checks:
        passed = value is not None and test(value)
        ok &= passed
        shown = "n/a" if value is None else (f"{value * 100:+.1f}%" if "overhead" in name else f"{value:.2f}")
        console.print(f"{'PASS' if passed else 'FAIL'}  {name}: {shown}")
    for label, result, engine in (("efficientnet_b0 ort_fp32", eff, "ort_fp32"), ("resnet18 ort_int8", res, "ort_int8")):
        rows = result["engines"]
        per_round = sorted(round_ratios(rows["torch"]["round_medians_ms"], rows[engine]["round_medians_ms"]))
        console.print(f"{label}: per-round speed-ups {', '.join(f'{v:.2f}' for v in per_round)} "
                      f"(best rounds: torch {rows['torch']['best_round_ms']:.2f} ms, "
                      f"{engine} {rows[engine]['best_round_ms']:.2f} ms)")
    acc = r["ort_int8"].get("acc_torch")
    console.print(f"resnet18 accuracy (torch) on its parity set: {'n/a' if acc is None else f'{acc * 100:.1f}%'}"
                  f" over {r['ort_int8'].get('parity_n')} samples")
    console.print(f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
                  f"on {os.cpu_count()} CPUs; above the CPU count means the timings shared the machine")
    if args.json:
        args.json.write_text(json.dumps({"effnet": eff, "resnet18": res}, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
