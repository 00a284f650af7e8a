"""Side by side: the same mixed events through a bare Faust stream, naive Faust and cardstream.

Publishes N events of the demo scenario once, then runs, one after another on
the same records (each its own consumer group, from the beginning):
- a bare Faust stream (reads, does nothing),
- naive Faust: one agent, one RocksDB table update per event,
- the cardstream worker (intake, identity, profiles: every card built),
and prints events/s for each, with the ratio to naive Faust.

    python -m bench.baseline [N] [--workers K]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections import Counter

from app.tools.broker import die_with_parent, stop_process
from bench.harness import Bench, embedded_bench, mixed_records, publish, wait_folded


def run_baseline(bench: Bench, mode: str, count: int, timeout: float = 900) -> float:
    """Seconds the baseline app in `mode` takes from its first to its `count`-th record."""
    done = bench.workdir / f"{mode}.done"
    log = (bench.workdir / f"{mode}.log").open("wb")
    env = {
        **os.environ,
        "BASELINE_BOOTSTRAP": bench.bootstrap,
        "BASELINE_MODE": mode,
        "BASELINE_EXPECT": str(count),
        "BASELINE_DONE": str(done),
        "BASELINE_DATA": str(bench.workdir / f"{mode}-data"),
        "BASELINE_APP_ID": f"baseline-{mode}-{uuid.uuid4().hex[:6]}",
    }
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.baseline_app", "worker", "-l", "warn", "--without-web"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    try:
        while not done.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"baseline {mode} exited: see {log.name}")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"baseline {mode} did not finish in {timeout}s")
            time.sleep(0.05)
        first, last = map(float, done.read_text().split())
        return last - first
    finally:
        stop_process(proc)
        log.close()


def run_cardstream(bench: Bench, count: int, workers: int) -> tuple[float, int]:
    """Seconds from `workers` workers having partitions until all are quiet; events accepted."""
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    procs = [bench.worker(n, app_id).start() for n in range(workers)]
    for proc in procs:
        proc.wait_ready()
    start = time.monotonic()
    end = wait_folded(procs, count)
    stats = [proc.get("/stats")[1] for proc in procs]
    accepted = sum(s["accepted_total"] for s in stats)
    for proc in procs:
        proc.stop()
    counters: Counter[str] = Counter()
    for s in stats:
        counters.update(s["agents"])
    print_traffic(counters, count)
    return end - start, accepted


def print_traffic(counters: Counter[str], count: int) -> None:
    """Per input event: internal ops and the messages carrying them, output records."""
    internal = ("guard_ops", "identity_ops", "profile_ops", "people_ops", "duplicate_ops")
    ops = sum(counters[f"sent.{role}"] for role in internal)
    messages = sum(counters[f"messages.{role}"] for role in internal)
    cards = counters["sent.profile_changes"]
    changes = counters["sent.identity_changes"]
    by_role = ", ".join(f"{role} {counters[f'messages.{role}'] / count:.2f}" for role in internal)
    print(
        f"per event: {ops / count:.2f} internal ops in {messages / count:.2f} messages "
        f"({by_role}), "
        f"{cards / count:.2f} card records, {changes / count:.2f} identity changes",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1, help="cardstream worker processes")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    records = mixed_records(args.count)
    with embedded_bench() as bench:
        publish(bench, records)
        rows: list[tuple[str, float]] = []
        if not args.skip_baseline:
            for mode in ("bare", "naive"):
                seconds = run_baseline(bench, mode, args.count)
                rows.append((f"Faust {mode} stream" if mode == "bare" else "naive Faust", seconds))
                print(f"{rows[-1][0]}: {args.count / seconds:,.0f} events/s", flush=True)
        seconds, accepted = run_cardstream(bench, args.count, args.workers)
        if accepted != args.count:
            print(f"warning: cardstream accepted {accepted} of {args.count}", file=sys.stderr)
        rows.append((f"cardstream, {args.workers} worker(s)", seconds))
    naive = dict(rows).get("naive Faust")
    print(f"\n{args.count:,} mixed events, embedded broker, {os.cpu_count()} cores")
    for name, secs in rows:
        ratio = f"  (x{naive / secs:.2f} of naive)" if naive else ""
        print(f"  {name:<28} {args.count / secs:>9,.0f} events/s{ratio}")


if __name__ == "__main__":
    main()
