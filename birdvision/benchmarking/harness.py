"""Timing several engines fairly on a small machine: alternating rounds, each engine in its own process.

On a 2-core machine PyTorch's OpenMP pool and ONNX Runtime's spinning workers steal each other's cores
and distort timings by about half, so each engine runs in its own interpreter with a pinned thread count
(:func:`time_interleaved`), and engines take turns round by round so each round of one can be paired with
the same round of another (:func:`birdvision.benchmarking.timing.paired_ratio`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

from birdvision.benchmarking.engines import engine_calls
from birdvision.benchmarking.timing import Timing, sample


def _iters(iters: int, batch: int) -> int:
    return iters if batch == 1 else max(3, iters // 8)


def _one_round(calls: dict[int, Any], iters: int) -> dict[str, list[float]]:
    """Raw per-call times (ms) of one round, per batch size."""
    return {str(b): sample(f, warmup=1, iters=_iters(iters, b)) for b, f in calls.items()}


def _summarise(engine: str, rounds: list[dict[str, list[float]]]) -> dict[str, Any]:
    """Per batch size: statistics of all timed calls pooled over the rounds, plus each round's median.

    The per-round medians are what :func:`birdvision.benchmarking.timing.paired_ratio` pairs across engines.
    """
    out: dict[str, Any] = {"engine": engine, "rounds": len(rounds)}
    for b in rounds[0]:
        pooled = [t for r in rounds for t in r[b]]
        round_medians = [statistics.median(r[b]) for r in rounds]
        out[b] = Timing.of(pooled).as_dict() | {"round_medians": round_medians, "best_round_ms": min(round_medians)}
    return out


def time_inprocess(targets: dict[str, str], *, batch_sizes: tuple[int, ...] = (1, 16), threads: int = 2,
                   iters: int = 30, rounds: int = 3) -> dict[str, dict[str, Any]]:
    """Time several engines in this process, in alternating rounds (fast, for tests; pools may compete).

    Each round starts with an untimed call per batch size (:func:`_one_round`), which is the warm-up.
    """
    calls = {name: engine_calls(name, target, batch_sizes, threads) for name, target in targets.items()}
    per: dict[str, list] = {n: [] for n in targets}
    for _ in range(max(1, rounds)):
        for name, cs in calls.items():
            per[name].append(_one_round(cs, iters))
    return {n: _summarise(n, rs) for n, rs in per.items()}


def time_engine(engine: str, target: str, *, batch_sizes: tuple[int, ...] = (1, 16), threads: int = 2,
                iters: int = 30, rounds: int = 3) -> dict[str, Any]:
    """Time one engine in this process: ``{str(batch): timing dict}`` over ``rounds`` rounds."""
    return time_inprocess({engine: target}, batch_sizes=batch_sizes, threads=threads, iters=iters,
                          rounds=rounds)[engine]


def serve_worker() -> None:
    """Worker process: load one engine, then time a round each time the parent writes a line."""
    args = json.loads(sys.argv[1])
    calls = engine_calls(args["engine"], args["target"], tuple(args["batch_sizes"]), args["threads"])
    for f in calls.values():
        f()  # warm-up: first runs allocate and pick kernels
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        print(json.dumps(_one_round(calls, args["iters"])), flush=True)


def time_interleaved(targets: dict[str, str], *, batch_sizes: tuple[int, ...], threads: int, iters: int,
                     rounds: int = 4) -> dict[str, dict[str, Any]]:
    """Time several engines, each in its own process, in alternating rounds.

    Separate processes: no other engine's thread pool is alive in the timed process (on 2
    cores PyTorch's and ONNX Runtime's pools otherwise take each other's cores). Alternating
    rounds: every engine samples the same background load, and round ``i`` of one engine
    can be paired with round ``i`` of another (:func:`birdvision.benchmarking.timing.paired_ratio`).
    Idle workers block on a pipe.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, target in targets.items():  # started one at a time: loading is CPU work too
            payload = json.dumps({"engine": name, "target": str(target), "batch_sizes": list(batch_sizes),
                                  "threads": threads, "iters": iters})
            p = subprocess.Popen([sys.executable, "-c", "from birdvision.benchmarking.harness import serve_worker; serve_worker()", payload],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)
            procs[name] = p
            _read_line(p, name, lambda line: line == "ready")
        per: dict[str, list] = {n: [] for n in targets}
        for _ in range(max(1, rounds)):
            for name, p in procs.items():
                p.stdin.write("round\n")
                p.stdin.flush()
                per[name].append(json.loads(_read_line(p, name, lambda line: line.startswith("{"))))
        return {n: _summarise(n, rs) for n, rs in per.items()}
    finally:
        for p in procs.values():
            try:
                p.stdin.close()
                p.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()


def _read_line(p: subprocess.Popen, name: str, wanted) -> str:
    """The worker's next protocol line (libraries may print other lines first); a dead worker is an error."""
    while True:
        line = p.stdout.readline()
        if not line:
            tail = p.stderr.read().strip().splitlines()[-3:]
            raise RuntimeError(f"timing {name} failed: {' | '.join(tail)}")
        if wanted(line.strip()):
            return line.strip()


def time_isolated(engine: str, target: str, *, batch_sizes: tuple[int, ...], threads: int, iters: int,
                  rounds: int = 3) -> dict:
    """One engine in a fresh interpreter (see :func:`time_interleaved`)."""
    return time_interleaved({engine: target}, batch_sizes=batch_sizes, threads=threads, iters=iters,
                            rounds=rounds)[engine]
