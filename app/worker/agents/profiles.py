"""The profile agent (keyed by profile id) and the abandoned-cart timer.

The agent folds facts, hands facts back to their link, keeps the identity
block, and publishes the card on `cdp.profile-changes` whenever it changed:
once per batch of the profile's ops (`app.pipeline.steps.profile_batch`,
`app.worker.agents.batching`). It also keeps, per profile with a
cart not yet notified, the time that cart becomes abandoned; a timer on every
worker looks at its own partitions' deadlines and asks the agent to check the
carts whose time has come, so the decision and its state stay with the agent.

Event time decides whether a cart was bought before it went idle, so the timer
waits `cart_grace_seconds` past each deadline, and acts only once the worker
has recovered and had that long to catch up on its input (after a restart, a
deadline that passed during the downtime must not beat the order still waiting
in the input topic).
"""

from __future__ import annotations

import time
from datetime import timedelta

import faust

from app.pipeline.ops import CheckCart, Op, encode_op
from app.pipeline.steps import Failure, Out, profile_batch
from app.worker.agents.batching import GroupFold, fold_batches
from app.worker.agents.factstore import TableFactStore
from app.worker.agents.stats import WorkerStats
from app.worker.channels import Channels, Tables
from app.worker.faust_patches import recovery_completed, when_applied
from app.worker.live import CardWatch
from app.worker.settings import Settings

#: Seconds before the timer asks again about a cart it already asked about.
CHECK_AGAIN_AFTER = 30.0


def register(
    app: faust.App,
    channels: Channels,
    tables: Tables,
    settings: Settings,
    stats: WorkerStats,
    watch: CardWatch | None = None,
    index_buckets: int = 4,
) -> GroupFold:
    """Register the profile agent and the cart timer on `app`; `watch` hears card changes;
    a changed Person goes to the people index in `index_buckets` buckets.

    Returns the fold of one profile's ops (tables read and written inside), which the
    intake agent also uses for events it can fold in place.
    """
    card_settings = settings.card_settings()
    asked: dict[str, float] = {}  # profile id -> monotonic time the timer last asked
    grace = timedelta(seconds=settings.cart_grace_seconds)
    ready_since: list[float] = []  # monotonic time recovery completed; empty while not ready

    def caught_up() -> bool:
        """True once the worker has been recovered and running for the grace period."""
        if not recovery_completed(app):
            ready_since.clear()
            return False
        if not ready_since:
            ready_since.append(time.monotonic())
        return time.monotonic() - ready_since[0] >= settings.cart_grace_seconds

    store = TableFactStore(tables.profile_facts)

    def fold_profile(profile_id: str, ops: list[Op]) -> tuple[list[Out], list[Failure]]:
        state = tables.profiles.get(profile_id)
        identity = tables.profile_identity.get(profile_id)
        outcome = profile_batch(
            state,
            identity,
            store,
            profile_id,
            ops,
            card_settings,
            settings.now(),
            lambda: tables.people.get(profile_id),
            index_buckets,
        )
        after = outcome.state
        if after.stored_head is not None:
            tables.profiles.set_encoded(profile_id, after.head, after.stored_head)
        if after.identity is not None and after.identity != identity:
            tables.profile_identity.set(profile_id, after.identity)
        tables.cart_deadlines.put(profile_id, after.cart_deadline)
        if after.person_changed:
            tables.people.put(profile_id, after.person)
        if watch is not None:  # open staff pages fetch the card again, once it is stored
            outs = outcome.outs
            when_applied(lambda: watch.published(outs))
        return outcome.outs, outcome.failed

    @app.agent(channels.profile_ops, name="profiles")
    async def profiles(stream: faust.StreamT[bytes]) -> None:
        await fold_batches(stream, settings, channels, stats.agents, "profiles", fold_profile)

    @app.timer(interval=settings.cart_check_interval)
    async def carts_due() -> None:
        if not caught_up():
            return
        now = settings.now()
        stale = [pid for pid, at in asked.items() if time.monotonic() - at > CHECK_AGAIN_AFTER]
        for profile_id in stale:
            del asked[profile_id]
        for profile_id, deadline in tables.cart_deadlines.items():
            if deadline + grace > now:
                continue
            if time.monotonic() - asked.get(profile_id, -CHECK_AGAIN_AFTER) < CHECK_AGAIN_AFTER:
                continue
            asked[profile_id] = time.monotonic()
            stats.agents["timer.check_cart"] += 1
            await channels.profile_ops.send(
                key=profile_id.encode(), value=encode_op(CheckCart(now.isoformat()))
            )

    return fold_profile
