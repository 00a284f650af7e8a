"""Rebuild rate: events/s of `cardstream rebuild` over N mixed events already in the inputs.

Publishes N events of the demo scenario, then rebuilds them into a fresh state
version with the rebuild code itself (`app.tools.rebuild.run_rebuild`: one worker,
outputs muted) and prints the events/s from the worker being ready to its last
message handled, the worker's start-up time, and the export's size and time.

    python -m bench.rebuild_rate [--events N]
"""

from __future__ import annotations

import argparse
import io
import time

from app.tools.export import export_lines, latest_event_time, read_state
from app.tools.rebuild import StartAt, run_rebuild
from app.tools.runner import EMBEDDED_BROKER_SETTINGS
from app.tools.scenario import scenario_clock
from app.worker.settings import Settings
from bench.harness import embedded_bench, mixed_records, publish


def main(count: int = 20_000) -> None:
    records = mixed_records(count)
    with embedded_bench() as bench:
        publish(bench, records)
        settings = Settings(
            bootstrap=bench.bootstrap,
            data_dir=bench.workdir / "data",
            app_id="bench-rebuild",
            state_version="r1",
            log_level="warn",
            **scenario_clock(),  # type: ignore[arg-type]
            **EMBEDDED_BROKER_SETTINGS,  # type: ignore[arg-type]
        )
        progress = io.StringIO()
        report = run_rebuild(settings, bench.topics, StartAt(), progress=progress, say=print)
        start = time.monotonic()
        states, identities = read_state(bench.bootstrap, settings.state_app_id(), bench.topics)
        at = latest_event_time(states.values())
        assert at is not None
        lines = list(export_lines(states, identities, settings.card_settings(), at))
        exported = time.monotonic() - start
    print(
        f"rebuild of {report.events:,} mixed events, 1 worker: {report.seconds:.1f}s = "
        f"{report.rate:,.0f} events/s (+ {report.startup_seconds:.1f}s worker start); "
        f"export of {len(lines):,} cards in {exported:.1f}s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events to rebuild")
    main(parser.parse_args().events)
