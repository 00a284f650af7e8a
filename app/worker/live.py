"""Live card changes for open staff pages: an in-process fan-out, one queue per page.

The profile agent calls `CardWatch.published(outs)` after each step; for every card it
published that a page is watching, each watcher's queue gets a `CardChangeNotice`
(which profile, its version, which blocks changed, and `forwarded_to` when an
anonymous profile was merged into a customer). The web server's stream route
(`app.worker.web.staff`) turns a queue into server-sent events; the page then fetches the
card again. Notices carry ids only, never personal data.

Everything runs on the worker's event loop (Faust serves its web server there), so
plain `asyncio.Queue`s suffice. A slow page never blocks the agent: a full queue
drops its oldest notice (a notice only says "fetch again", so the newest one is
enough). `close_all` ends every stream (rebalance, shutdown): pages reconnect, to
whichever worker owns their customer then, and fetch the card again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from app.pipeline.changes import ProfileChangeRecord
from app.pipeline.steps import Out

#: Notices one page may have waiting before the oldest is dropped.
QUEUE_SIZE = 16


@dataclass(frozen=True, slots=True)
class CardChangeNotice:
    """A card changed: the page showing `profile_id` should fetch it again."""

    profile_id: str
    version: int
    kind: str
    changed: tuple[str, ...]
    forwarded_to: str | None = None

    @classmethod
    def of(cls, record: ProfileChangeRecord) -> CardChangeNotice:
        return cls(
            record.profile_id,
            record.version,
            record.kind,
            tuple(record.changed),
            record.forwarded_to,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "profile_id": self.profile_id,
                "version": self.version,
                "kind": self.kind,
                "changed": list(self.changed),
                "forwarded_to": self.forwarded_to,
            }
        )


#: What a watcher's queue holds: a notice, or None for "this stream ends".
Item = CardChangeNotice | None


class CardWatch:
    """Who watches which profile, and the fan-out of its changes to them."""

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._watchers: dict[str, set[asyncio.Queue[Item]]] = {}

    def watch(self, profile_id: str) -> asyncio.Queue[Item]:
        """A new queue that receives the notices of `profile_id` until `unwatch`."""
        queue: asyncio.Queue[Item] = asyncio.Queue(self._queue_size)
        self._watchers.setdefault(profile_id, set()).add(queue)
        return queue

    def unwatch(self, profile_id: str, queue: asyncio.Queue[Item]) -> None:
        """Stop delivering to `queue` (idempotent)."""
        queues = self._watchers.get(profile_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._watchers[profile_id]

    @property
    def watchers(self) -> int:
        """How many streams are open."""
        return sum(len(queues) for queues in self._watchers.values())

    def watching(self, profile_id: str) -> bool:
        return profile_id in self._watchers

    def notify(self, notice: CardChangeNotice) -> None:
        """Hand `notice` to every watcher of its profile; never blocks."""
        for queue in self._watchers.get(notice.profile_id, ()):
            _put_dropping_oldest(queue, notice)

    def published(self, outs: Iterable[Out]) -> None:
        """Notify the watchers of every card change among a step's outgoing messages."""
        if not self._watchers:
            return
        for out in outs:
            record = out.message
            if isinstance(record, ProfileChangeRecord) and self.watching(record.profile_id):
                self.notify(CardChangeNotice.of(record))

    def close_all(self) -> None:
        """End every open stream (each queue gets None); watchers unregister themselves."""
        for queues in self._watchers.values():
            for queue in queues:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)


def _put_dropping_oldest(queue: asyncio.Queue[Item], item: Item) -> None:
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()


def server_sent_event(event: str, data: bytes) -> bytes:
    """One server-sent event (`data` is one line of JSON)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
