"""The baseline: a plain Faust app over the same input topics, for side-by-side figures.

Modes (environment `BASELINE_MODE`):
- `bare`: a stream that reads every record and does nothing with it;
- `naive`: one agent, one RocksDB table update per event (count per record key,
  with the JSON parsed), the "naive Faust" of docs/design.md §6.

It uses the same broker settings as a cardstream worker on the embedded broker
(including the shorter fetch wait) and writes the monotonic times at which it
saw its first and its `BASELINE_EXPECT`-th record to the file `BASELINE_DONE`, then keeps
running until it is stopped. Run by `bench.baseline`, not by hand:

    BASELINE_BOOTSTRAP=... BASELINE_MODE=naive BASELINE_EXPECT=20000 \
    BASELINE_DONE=/tmp/done python -m bench.baseline_app worker -l warn
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import faust
import orjson

from app.tools.runner import EMBEDDED_BROKER_SETTINGS
from app.worker.faust_patches import set_fetch_max_wait

MODE = os.environ.get("BASELINE_MODE", "naive")
EXPECT = int(os.environ.get("BASELINE_EXPECT", "0"))
DONE = Path(os.environ.get("BASELINE_DONE", "baseline.done"))
TOPICS = ("cdp.identify", "cdp.events")

set_fetch_max_wait(int(EMBEDDED_BROKER_SETTINGS["fetch_max_wait_ms"]))  # type: ignore[call-overload]

app = faust.App(
    os.environ.get("BASELINE_APP_ID", "baseline"),
    broker=f"kafka://{os.environ.get('BASELINE_BOOTSTRAP', 'localhost:9092')}",
    store="rocksdb://",
    datadir=os.environ.get("BASELINE_DATA", "./baseline-data"),
    broker_session_timeout=EMBEDDED_BROKER_SETTINGS["session_timeout"],
    broker_heartbeat_interval=EMBEDDED_BROKER_SETTINGS["heartbeat_interval"],
    broker_rebalance_timeout=EMBEDDED_BROKER_SETTINGS["rebalance_timeout"],
    recovery_consistency_check=False,
    consumer_auto_offset_reset="earliest",
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=4,
    web_enabled=False,
)
source = app.topic(*TOPICS, key_type=bytes, value_type=bytes)
counts = app.Table("counts", default=int, partitions=4, key_type=bytes, value_type=int)
seen = 0
first = 0.0


def _count() -> None:
    global seen, first
    seen += 1
    if seen == 1:
        first = time.monotonic()
    if seen == EXPECT:
        DONE.write_text(f"{first} {time.monotonic()}")


if MODE == "bare":

    @app.agent(source)
    async def bare(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream:
            _count()

else:

    @app.agent(source)
    async def naive(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            kind = orjson.loads(event.value)["type"]
            counts[event.key] += 1 if kind else 0
            _count()


if __name__ == "__main__":
    app.main()
