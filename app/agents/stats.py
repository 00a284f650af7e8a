"""What one worker process has done, in memory: for /stats, the demo and the benchmarks."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass
class WorkerStats:
    """Events taken in by type, records dead-lettered, messages handled and sent per agent."""

    accepted: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    agents: Counter[str] = field(default_factory=Counter)
    recent_rejections: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=50))

    def as_dict(self) -> dict[str, object]:
        return {
            "accepted": dict(self.accepted),
            "accepted_total": sum(self.accepted.values()),
            "rejected": self.rejected,
            "recent_rejections": list(self.recent_rejections),
            "agents": dict(sorted(self.agents.items())),
        }
