"""`cardstream export`: every card of a state version as sorted JSON lines.

The cards are built from the version's table changelogs (the `profiles` and
`profile-identity` tables, `<app id>-<name>-changelog`), read from the start to
their end offsets with the last value per key (the embedded broker does no
compaction), by the same pure code the workers use (`app.pipeline.steps.card_of`).
No worker needs to run, and every partition is seen.

Deterministic: one line per profile, sorted by profile id (CustomerIds; anonymous
profiles, `~name:value`, sort last), keys sorted in each line, cards computed at
one time `at` (by default the latest event time in the state, not the wall
clock: "days since", loyalty status, interests and the abandoned cart depend on
it; when no profile holds a fact, only links, a fixed time: such cards do not
depend on it). So the same state gives a byte-identical file, and two state versions built
from the same input give the same file.

Not exported (`NOT_EXPORTED`), because they record how the workers got there, not
what the events say, and differ between a live run and a rebuild of the same input:
* `version`: the count of a profile's state changes. A rebuild reads the input
  topics in another interleaving (partitions, identify vs. events), so a link's
  events may reach its anonymous profile first and be handed over later, or go
  straight to the customer: more or fewer steps, same facts.
* `identity` (`merged_from`, `history`): the identity changes as the identity agent
  saw them arrive. Whether a claim is reported `merged` or `linked` depends on
  whether the anonymous profile had already received an event when the claim
  arrived, and a late, older claim reports nothing (`app.domain.identity.LinkState`
  notes this is not order-independent). Who owns which link (`links`, `contacts`)
  does not depend on order and is exported.
Profiles with no facts and no links (anonymous profiles merged away) are left out:
whether one exists at all depends on arrival order too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from app.domain.card import CardSettings
from app.domain.identity import is_anonymous_profile
from app.domain.profile import ProfileState, profile_state_from_json
from app.pipeline.steps import ProfileIdentity, card_of
from app.pipeline.topics import Topics
from app.tools.offsets import Record, end_offsets, partitions_of, read_records
from app.worker.torn_pushes import is_mark

#: Card fields left out of exports (see the module docstring for why).
NOT_EXPORTED = ("version", "identity")


class StateNotFound(RuntimeError):
    """The state version has no changelog topics: it was never built (or was deleted)."""


def apps_with_state(topic_names: Iterable[str], topics: Topics) -> list[str]:
    """The app ids (with their state version, `<app id>-<version>`) that have a profiles
    changelog among `topic_names`: what `--app-id` can name."""
    suffix = topics.changelog_topic("", "profiles")  # "-<table>-changelog"
    return sorted(name[: -len(suffix)] for name in topic_names if name.endswith(suffix))


def latest_values(records: Iterable[Record]) -> dict[bytes, bytes]:
    """Key -> its last value in offset order per partition; a tombstone (None) deletes."""
    table: dict[bytes, bytes] = {}
    for record in records:
        if record.key is None:
            continue
        if record.value is None:
            table.pop(record.key, None)
        else:
            table[record.key] = record.value
    return table


def read_table(bootstrap: str, topic: str) -> dict[bytes, bytes]:
    """The content of a table from its changelog `topic`; StateNotFound if it does not exist."""
    partitions = partitions_of(bootstrap, topic)
    if not partitions:
        raise StateNotFound(topic)
    ends = end_offsets(bootstrap, [(topic, p) for p in partitions])
    # records of one key stay in one partition, in offset order: the last one wins; the
    # marks of the workers' changelog pushes are not table keys
    values = latest_values(read_records(bootstrap, ends))
    return {key: value for key, value in values.items() if not is_mark(key)}


def exported(card: Mapping[str, Any]) -> dict[str, Any]:
    """The card without the fields that record processing rather than events."""
    return {name: value for name, value in card.items() if name not in NOT_EXPORTED}


def export_line(card: Mapping[str, Any]) -> bytes:
    """One JSON line, keys sorted at every level, newline-terminated."""
    return orjson.dumps(card, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


def profiles_to_export(
    states: Mapping[str, ProfileState], identities: Mapping[str, ProfileIdentity]
) -> list[str]:
    """Sorted ids of the profiles that hold something: facts, or links of a customer."""
    wanted = []
    for profile_id in sorted(states.keys() | identities.keys()):
        state = states.get(profile_id)
        identity = identities.get(profile_id)
        has_facts = state is not None and not state.is_empty
        has_links = identity is not None and bool(identity.links)
        if has_facts or (has_links and not is_anonymous_profile(profile_id)):
            wanted.append(profile_id)
    return wanted


def latest_event_time(states: Iterable[ProfileState]) -> datetime | None:
    """The latest event time of any fact (None when there are none)."""
    times = [state.blocks["updated_at"] for state in states if not state.is_empty]
    return datetime.fromisoformat(max(times)) if times else None


#: The time of an export whose profiles hold no fact, only links: such a card does not
#: depend on the time, and a fixed one keeps the file the same from run to run.
LINKS_ONLY_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def default_export_time(states: Mapping[str, ProfileState]) -> datetime:
    """When cards are computed unless told: the latest event time in the state, or
    LINKS_ONLY_TIME when no profile holds a fact (customers known by their links only)."""
    return latest_event_time(states.values()) or LINKS_ONLY_TIME


def export_lines(
    states: Mapping[str, ProfileState],
    identities: Mapping[str, ProfileIdentity],
    settings: CardSettings,
    at: datetime,
    *,
    all_fields: bool = False,
) -> Iterator[bytes]:
    """The export: one sorted JSON line per profile to export, cards as of `at`."""
    for profile_id in profiles_to_export(states, identities):
        card = card_of(states.get(profile_id), identities.get(profile_id), profile_id, settings, at)
        yield export_line(card if all_fields else exported(card))


def decode_tables(
    raw_states: Mapping[bytes, bytes], raw_identities: Mapping[bytes, bytes]
) -> tuple[dict[str, ProfileState], dict[str, ProfileIdentity]]:
    """The profile and profile-identity tables, decoded, keyed by profile id."""
    states = {key.decode(): profile_state_from_json(raw) for key, raw in raw_states.items()}
    identities = {
        key.decode(): ProfileIdentity.from_json(raw) for key, raw in raw_identities.items()
    }
    return states, identities


def read_state(
    bootstrap: str, app_id: str, topics: Topics
) -> tuple[dict[str, ProfileState], dict[str, ProfileIdentity]]:
    """The profiles and their identity records of app `app_id`, from the changelogs.

    Raises StateNotFound when the profiles changelog does not exist.
    """
    raw_states = read_table(bootstrap, topics.changelog_topic(app_id, "profiles"))
    try:
        raw_identities = read_table(bootstrap, topics.changelog_topic(app_id, "profile_identity"))
    except StateNotFound:
        raw_identities = {}  # no link was ever gained: the topic is created on first use
    return decode_tables(raw_states, raw_identities)


__all__ = [
    "NOT_EXPORTED",
    "StateNotFound",
    "apps_with_state",
    "decode_tables",
    "default_export_time",
    "export_line",
    "export_lines",
    "exported",
    "latest_event_time",
    "latest_values",
    "profiles_to_export",
    "read_state",
    "read_table",
]
