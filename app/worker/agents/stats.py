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
    #: records the intake dead-lettered, by (stage, kind of fault); agents' failures are
    #: counted in `agents` as `<agent>.failed` (see `dead_letter_counts`)
    dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)
    recent_rejections: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=50))

    def as_dict(self) -> dict[str, object]:
        return {
            "accepted": dict(self.accepted),
            "accepted_total": sum(self.accepted.values()),
            "rejected": self.rejected,
            "recent_rejections": list(self.recent_rejections),
            "agents": dict(sorted(self.agents.items())),
            "dead_letters": {
                f"{stage}.{kind}": n
                for (stage, kind), n in sorted(self.dead_letter_counts().items())
            },
        }

    def dead_letter_counts(self) -> dict[tuple[str, str], int]:
        """Records dead-lettered by (stage, kind): intake faults, and `internal_error` per agent."""
        counts = dict(self.dead_letters)
        for key, n in self.agents.items():
            agent, _, what = key.rpartition(".")
            if what == "failed" and agent:
                counts[(agent, "internal_error")] = n
        return counts
