"""Records cardstream publishes: the contracts of `cdp.identity-changes`,
`cdp.profile-changes` and `cdp.duplicate-suggestions`, and the headers of `cdp.dead-letter`.

`schemas/identity-change.json` is generated from `IdentityChangeRecord`,
`schemas/profile-change.json` from `ProfileChangeRecord` (its card from
`app.domain.card_model.Card`, as `schemas/card.json` is),
`schemas/duplicate-suggestion.json` from `DuplicateRecord`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from app.domain.card_model import Card

#: Header names of a dead letter (`app.worker.agents.outbox.dead_letter_headers` writes
#: them, `cardstream dead-letter` reads them).
REASON_HEADER = "cdp.reason"
SOURCE_TOPIC_HEADER = "cdp.source-topic"
SOURCE_PARTITION_HEADER = "cdp.source-partition"
SOURCE_OFFSET_HEADER = "cdp.source-offset"
REJECTED_AT_HEADER = "cdp.rejected-at"

IdentityChangeKind = Literal["linked", "merged", "reassigned", "quarantined", "released"]


class LinkRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    value: str


class IdentityChangeRecord(BaseModel):
    """One change of a profile's identity; the audit trail of `cdp.identity-changes`.

    Keyed by `customer_id`. `linked`: a free link now points at the customer;
    `merged`: the anonymous profile `previous_owner` was folded into it;
    `reassigned`: the link moved from customer `previous_owner` to this one;
    `quarantined` / `released`: the guard stopped / resumed its claims.
    """

    model_config = ConfigDict(frozen=True, title="cardstream identity change")

    kind: IdentityChangeKind
    customer_id: str = Field(description="The customer whose identity changed (the new owner)")
    link: LinkRef | None = Field(None, description="The link concerned; none for guard changes")
    previous_owner: str | None = Field(
        None, description="Profile id the link pointed at before (anonymous id for merged)"
    )
    cause_event_id: str | None = Field(None, description="The event that caused the change")
    ts: datetime = Field(description="Event time of the cause (release: when requested)")
    reason: str | None = Field(None, description="Why, for quarantined")

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


ProfileChangeKind = Literal["card_changed", "cart_abandoned"]


class ProfileChangeRecord(BaseModel):
    """One change of a card, on `cdp.profile-changes` (keyed by profile id, compacted).

    `card` is the whole card after the change, so the latest record per key is
    enough to rebuild every card from the compacted topic; `changed` names the
    blocks that changed. `cart_abandoned` is sent once per abandoned cart content.
    An anonymous profile merged into a customer gets a last record with
    `forwarded_to` set and an emptied card.
    """

    model_config = ConfigDict(frozen=True, title="cardstream profile change")

    kind: ProfileChangeKind
    profile_id: str
    customer_id: str | None = Field(description="None for an anonymous profile")
    version: int = Field(description="The card's version: grows with every change of its facts")
    changed: list[str] = Field(description="Blocks that changed: receipts, summary, cart, ...")
    forwarded_to: str | None = Field(
        None, description="For a merged anonymous profile: the customer it now belongs to"
    )
    at: datetime = Field(description="The worker's clock when the card was built")
    # The card is built by our own code (`app.domain.card.build_card`) for every change:
    # it is not validated here (that would cost time on every change); a unit test holds
    # real cards to the model, and the schema shows it.
    card: SkipValidation[Card] = Field(description="The whole card (schemas/card.json)")

    def to_json(self) -> bytes:
        """The record as JSON (orjson: the card is plain JSON-ready data, built by our code)."""
        return orjson.dumps(
            {
                "kind": self.kind,
                "profile_id": self.profile_id,
                "customer_id": self.customer_id,
                "version": self.version,
                "changed": self.changed,
                "forwarded_to": self.forwarded_to,
                "at": self.at.isoformat(),
                "card": self.card,
            }
        )


DuplicateRecordKind = Literal["suggested", "decided"]
Decision = Literal["same_person", "not_same"]


class Evidence(BaseModel):
    """How one personal field of the two profiles compared (no value: only its level)."""

    model_config = ConfigDict(frozen=True)

    field: str = Field(description="first_name, last_name, birth_date, city, postcode, ...")
    level: str = Field(description="exact, close, nickname, similar, initial, differ, missing")
    weight: float = Field(description="Its weight of evidence (log2 m/u): > 0 speaks for a match")
    swapped: bool = Field(False, description="Names: compared crosswise (first against last)")


class DuplicateRecord(BaseModel):
    """Two profiles that are likely one person, on `cdp.duplicate-suggestions`.

    `suggested`: the people index scored the pair at `probability` (>= the worker's
    threshold) with the field-by-field `evidence`; sent once per pair and again only
    when its probability changes. `decided`: staff marked the pair `same_person` (a
    CRM may merge the two files) or `not_same`; a decided pair is never suggested
    again. `profile_id` is the smaller id of the pair (the record's key). Nothing
    merges by itself, and no record carries a name, date or address.
    """

    model_config = ConfigDict(frozen=True, title="cardstream duplicate suggestion")

    kind: DuplicateRecordKind
    profile_id: str = Field(description="The smaller profile id of the pair")
    other_profile_id: str = Field(description="The other profile of the pair")
    probability: float | None = Field(None, description="Match probability (suggested)")
    weight: float | None = Field(None, description="Total weight of evidence (suggested)")
    evidence: list[Evidence] = Field(default_factory=list, description="Per field (suggested)")
    decision: Decision | None = Field(None, description="The staff's decision (decided)")
    decided_by: str | None = Field(None, description="Who decided (decided)")
    at: datetime = Field(description="When the pair was scored, or decided")

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()
