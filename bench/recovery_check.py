"""Does a worker recovering a partition from its changelog alone get every record back?

Each trial: a worker folds a cart and then the order that empties it for a
customer, stops; a new worker of the same app starts on an EMPTY data directory
(state only from the changelog topics, as after a lost disk or when a partition
moves to another worker) or on the same one (`--same-dir`), and the test reads
the customer's facts. Prints how many trials lost the order.

Seen on the embedded broker (2026-11-23): fresh data directory 2 of 6 trials
lost the last changelog record of the partition; same data directory 0 of 8.
Cause: the broker reported the changelog's end after the first record of its
last batch (the cart and the order were often written in one batch), and
Faust's recovery stopped there. Fixed by `app/worker/end_offsets.py`: 0 of 8, and 0 of
10 with two CPU-burning processes beside it (2 of 10 before the fix).

    python -m bench.recovery_check [TRIALS] [--same-dir]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from app.pipeline.topics import load_topics
from app.tools.admin import apply_topics
from app.tools.broker import EmbeddedBroker
from app.tools.producer import ChannelProducer
from app.tools.runner import EMBEDDED_BROKER_SETTINGS, WorkerProcess

SETTINGS = {**EMBEDDED_BROKER_SETTINGS, "log_level": "info", "cart_grace_seconds": 1}


def events(customer: str, now: datetime) -> list[bytes]:
    base = {"channel": "website", "customer_id": customer}
    return [
        orjson.dumps(
            {
                **base,
                "type": "cart_add",
                "event_id": f"{customer}-add",
                "ts": now.isoformat(),
                "product_id": "P-2",
                "price": 10.0,
            }
        ),
        orjson.dumps(
            {
                **base,
                "type": "receipt",
                "event_id": f"{customer}-order",
                "ts": (now + timedelta(seconds=1)).isoformat(),
                "receipt_id": "R",
                "total": 10.0,
                "currency": "PLN",
                "items": [{"product_id": "P-2", "price": 10.0}],
            }
        ),
    ]


def main(trials: int, same_dir: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cardstream-recovery-"))
    lost = 0
    try:
        with EmbeddedBroker() as broker:
            topics = load_topics()
            apply_topics(broker.bootstrap, topics.all())
            for trial in range(trials):
                app_id, customer = f"recovery-{trial}", f"C-{trial}"
                first = WorkerProcess(
                    broker.bootstrap,
                    workdir / f"{trial}-a",
                    app_id,
                    workdir / f"{trial}-a.log",
                    SETTINGS,
                ).start()
                first.wait_ready()
                producer = ChannelProducer(broker.bootstrap, topics)
                for raw in events(customer, datetime.now(UTC)):
                    producer.produce(*producer.prepare(raw))
                producer.flush()
                producer.close()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    _, body = first.get(f"/profiles/{customer}/facts")
                    if len(body.get("facts", [])) == 2:
                        break
                    time.sleep(0.05)
                first.stop()
                second_dir = workdir / (f"{trial}-a" if same_dir else f"{trial}-b")
                second = WorkerProcess(
                    broker.bootstrap, second_dir, app_id, workdir / f"{trial}-b.log", SETTINGS
                ).start()
                second.wait_ready()
                time.sleep(2)
                _, body = second.get(f"/profiles/{customer}/facts")
                facts = [f["event_id"] for f in body.get("facts", [])]
                second.stop()
                ok = f"{customer}-order" in facts
                lost += not ok
                print(f"trial {trial}: {'ok' if ok else 'LOST the order'} {facts}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    where = "same data directory" if same_dir else "empty data directory"
    print(f"recovery from the changelog ({where}): {lost} of {trials} trials lost a record")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(int(args[0]) if args else 6, "--same-dir" in sys.argv)
