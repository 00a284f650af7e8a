"""Records cardstream publishes: the contract of `cdp.identity-changes`.

`schemas/identity-change.json` is generated from `IdentityChangeRecord`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
