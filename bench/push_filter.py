"""What the replay of whole pushes costs per changelog record (`app.worker.torn_pushes`).

Feeds the filter a changelog replay as a worker's recovery meets it: pushes of
`--per-push` records each, spread over three changelog topics of one partition, each
push followed by its mark, the topics read a buffer at a time in turn (Faust applies a
table's records a thousand at a time); prints CPU µs per record and the most records
held at once.

    python -m bench.push_filter [RECORDS] [--per-push 30]
"""

from __future__ import annotations

import argparse
import time

from app.worker.torn_pushes import PushFilter, is_mark, mark_key

TOPICS = ("profiles-changelog", "profile-facts-changelog", "links-changelog")


def replay(
    records: int, per_push: int
) -> list[tuple[tuple[str, int], int, bytes, bytes | None, bytes | None]]:
    """The records in the order the filter meets them: each topic's next thousand in turn.
    Each push's records, then its mark (in the push's first topic)."""
    by_topic: dict[str, list[tuple[tuple[str, int], int, bytes, bytes | None, bytes | None]]]
    by_topic = {t: [] for t in TOPICS}

    def add(topic: str, key: bytes, value: bytes | None, header: bytes | None) -> None:
        by_topic[topic].append(((topic, 0), len(by_topic[topic]), key, value, header))

    for push in range(0, (records + per_push - 1) // per_push):
        header = f"a1b2c3d4e5f6:{push}".encode()
        for at in range(min(per_push, records - push * per_push)):
            n = push * per_push + at
            add(TOPICS[at % len(TOPICS)], f"key-{n % 5000}".encode(), b"v", header)
        add(TOPICS[0], mark_key("a1b2c3d4e5f6"), str(push).encode(), None)
    order = []
    cursors = dict.fromkeys(TOPICS, 0)
    while any(cursors[t] < len(by_topic[t]) for t in TOPICS):
        for t in TOPICS:
            order.extend(by_topic[t][cursors[t] : cursors[t] + 1000])
            cursors[t] += 1000
    return order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", type=int, nargs="?", default=300_000)
    parser.add_argument("--per-push", type=int, default=30)
    args = parser.parse_args()
    order = replay(args.records, args.per_push)
    f = PushFilter()
    applied = peak = 0
    spent = 0.0
    for first in range(0, len(order), 1000):
        start = time.process_time()
        for tp, offset, key, value, header in order[first : first + 1000]:
            applied += len(f.admit(tp, offset, key, value, header, None))
        spent += time.process_time() - start
        peak = max(peak, f.holding())
    n = sum(1 for record in order if not is_mark(record[2]))
    assert applied == n and f.holding() == 0
    print(f"{n:,} records, pushes of {args.per_push}, topics read 1,000 at a time")
    print(f"  {spent / n * 1e6:.2f} µs/record; at most {peak:,} records held at once")


if __name__ == "__main__":
    main()
