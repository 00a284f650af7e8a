"""Where partitions really end, and Faust's changelog recovery reading up to there.

The embedded broker (Tansu, docs/design.md §5) answers a ListOffsets "latest" request
with the base offset of the partition's *last record batch* plus one, not the
offset after its last record. After a producer sends several records in one
batch, the reported end stops short of all but the first of them, and stays so
until the next batch (measured: batches of 2, 3 and 5 records reported ends of
2, 4 and 8 where the log held 3, 6 and 12 records). A single-record batch
reports right, which is why a plain producer flushing each record sees no lag.

Faust builds the offsets its table recovery reads up to ("highwaters") from
that answer. When a worker's last changelog writes to a partition left in one
batch (likely under load), a worker restoring that partition from the
changelog stopped short and lost them: a profile came back without the receipt
folded last. The same under-report made Faust's recovery consistency check
fail ("persisted offset … is higher than … highwater").

`read_end_offsets` finds the true end by reading the partition's last batch,
which starts at the reported end minus one; on a broker that reports right it
reads one record and changes nothing. `app.worker.faust_patches.correct_recovery_highwaters`
makes Faust's recovery use it; `cardstream export` and `rebuild` use it directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, TopicPartition

log = logging.getLogger(__name__)

#: How long reading the last batches may take before the reported ends are kept.
READ_TIMEOUT_SECONDS = 10.0

Partition = tuple[str, int]


def read_end_offsets(
    bootstrap: str, reported: Mapping[Partition, int], timeout: float = READ_TIMEOUT_SECONDS
) -> dict[Partition, int]:
    """The end offset (offset after the last record) of each partition in `reported`.

    `reported` maps (topic, partition) to the end offset the broker reported.
    Each partition is read from one before that offset to its end; the result
    is the larger of the reported end and the offset after the last record read.
    A partition that does not reach its end within `timeout` keeps the larger
    of its reported end and what was read (a warning is logged).
    """
    ends = dict(reported)
    to_read = {tp: end for tp, end in reported.items() if end > 0}
    if not to_read:
        return ends
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "cardstream-end-offsets",  # required by the client; never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
            "log.connection.close": False,
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, end - 1) for (t, p), end in to_read.items()])
        pending = set(to_read)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                tp = (msg.topic() or "", msg.partition() or 0)
                error, offset = msg.error(), msg.offset()
                if error is None:
                    ends[tp] = max(ends[tp], (offset or 0) + 1)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(tp)
                else:
                    log.warning("reading the end of %s[%s]: %s", tp[0], tp[1], error)
        if pending:
            log.warning(
                "end offsets: %d partitions not read to their end in %.0fs; keeping what was found",
                len(pending),
                timeout,
            )
    finally:
        consumer.close()
    return ends
