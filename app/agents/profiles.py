"""The profile agent (keyed by profile id): folds facts, hands facts back, keeps identity.

Facts come from intake (CustomerId events), the guard (identify attributes) and
the identity agent (link-resolved events); a move releases a link's facts back
to that link. Link gained / lost notes feed the profile's identity block.
"""

from __future__ import annotations

import faust

from app.agents.intake import IntakeStats
from app.agents.outbox import send_outs
from app.channels import Channels, Tables
from app.domain.profile import profile_state_from_json, profile_state_to_json
from app.domain.resolution import ProfileIdentity, profile_identity_step, profile_step
from app.ops import AbsorbFacts, AddFact, LinkGained, LinkLost, ReleaseFacts, decode_op


def register(app: faust.App, channels: Channels, tables: Tables, stats: IntakeStats) -> None:
    """Register the profile agent on `app`."""

    @app.agent(channels.profile_ops, name="profiles")
    async def profiles(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            profile_id = record.message.key.decode()
            op = decode_op(record.message.value)
            stats.agents[f"profiles.{op.kind}"] += 1
            if isinstance(op, AddFact | AbsorbFacts | ReleaseFacts):
                raw = tables.profiles.get(profile_id)
                before = profile_state_from_json(raw) if raw else None
                after, outs, changed = profile_step(before, profile_id, op)
                if changed:
                    tables.profiles[profile_id] = profile_state_to_json(after)
                await send_outs(channels, outs, stats.agents)
            elif isinstance(op, LinkGained | LinkLost):
                raw = tables.profile_identity.get(profile_id)
                known = ProfileIdentity.from_json(raw) if raw else None
                updated = profile_identity_step(known, profile_id, op)
                if updated != known:
                    tables.profile_identity[profile_id] = updated.to_json()
