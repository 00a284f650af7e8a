"""The card's contract: a pydantic model of exactly what `build_card` returns.

`build_card` (`app.domain.card`) returns plain JSON-ready data, because it runs for
every published change and validating it there would cost time for nothing; this
model is the documented shape of that data, the source of `schemas/card.json`
(`cardstream schemas export`) and of the `card` of `schemas/profile-change.json`.
Mailers, CRMs and the staff page read cards against it; a unit test validates real
cards (the demo scenario's, the crash test's) against it, strictly and with no
unknown field allowed, so a change of the card that is not made here fails.

Times are UTC ISO 8601 strings (`format: date-time`); money is a JSON number in the
receipts' currency, rounded to 2 places.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: The activity feed's categories, in the order the staff page lists them (also
#: `app.domain.card.ACTIVITY_CATEGORIES`).
ActivityCategory = Literal[
    "profile",
    "order",
    "website",
    "app",
    "mailing",
    "call_center",
    "loyalty",
    "tag",
    "subscription",
    "promo_code",
    "poll",
]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmailContact(_Block):
    """The email to use: of the linked ones, the one given last."""

    value: str | None = Field(description="None when the profile has no email link")
    valid: bool
    mailable: bool = Field(description="Valid, consented and subscribed")
    reason: str | None = Field(description="Why it may not be mailed; None when it may")


class PhoneContact(_Block):
    """The phone to use: of the linked ones, the one given last."""

    value: str | None = Field(description="E.164; None when the profile has no phone link")
    type: Literal["mobile", "landline", "unknown"]
    valid: bool
    sms_allowed: bool = Field(description="A valid mobile, consented and subscribed")
    reason: str | None = Field(description="Why it may not get SMS; None when it may")


class Contacts(_Block):
    email: EmailContact
    phone: PhoneContact


class ReceiptStore(_Block):
    id: str
    name: str | None


class ReceiptItem(_Block):
    product_id: str
    name: str | None
    category: str | None
    price: float
    quantity: int


class CardReceipt(_Block):
    """One receipt at its latest version (by time, then event id)."""

    id: str
    store: ReceiptStore | None
    date: AwareDatetime = Field(description="The time of its earliest version")
    total: float
    currency: str
    items: list[ReceiptItem]
    status: Literal["placed", "paid", "completed", "cancelled", "returned"]
    channel: str
    delivery_cost: float | None
    updated_at: AwareDatetime = Field(description="The time of the version shown")


class Rfm(_Block):
    recency: int = Field(ge=1, le=5)
    frequency: int = Field(ge=1, le=5)
    monetary: int = Field(ge=1, le=5)
    score: str = Field(description="The three scores as digits, e.g. `534`")
    segment: str = Field(description="Champions, Loyal, ..., Lost (`app.domain.rfm`)")


class Summary(_Block):
    """Over every counted receipt (cancelled and returned ones are not counted)."""

    first_receipt_at: AwareDatetime | None
    last_receipt_at: AwareDatetime | None
    days_since_first_receipt: int | None
    days_since_last_receipt: int | None
    receipts_count: int
    receipts_total: float
    average_receipt: float | None
    average_items: float | None
    last_receipt_total: float | None
    days_since_registration: int | None = Field(
        description="From the `registration_date` attribute, when there is one"
    )
    rfm: Rfm | None = Field(description="None without a counted receipt")


class Bonus(_Block):
    """One loyalty bonus at its latest action."""

    id: str
    action: Literal["accrued", "activated", "deactivated"]
    status: Literal["active", "pending_activation", "deactivated", "expired"]
    amount: float
    activates_at: AwareDatetime | None
    expires_at: AwareDatetime | None
    updated_at: AwareDatetime


class Loyalty(_Block):
    active_total: float
    pending_activation_total: float
    pending_deactivation_total: float = Field(description="Active bonuses with an expiry date")
    nearest_deactivation_at: AwareDatetime | None
    nearest_deactivation_amount: float | None
    bonuses: list[Bonus]


class CardMailing(_Block):
    id: str
    name: str | None
    campaign: str | None
    medium: str | None
    sent_at: AwareDatetime | None
    opened_at: AwareDatetime | None
    clicked_at: AwareDatetime | None
    control_group: bool


class CardPromoCode(_Block):
    code: str
    campaign: str | None
    issued_at: AwareDatetime
    reissued: bool
    last_issued_at: AwareDatetime


class CardPollAnswer(_Block):
    """The latest answer to one question of one poll."""

    poll_id: str
    name: str | None
    question: str
    answer: str
    at: AwareDatetime


class CallCenterContact(_Block):
    at: AwareDatetime
    reason: str
    note: str | None
    duration_s: int | None
    agent: str | None
    channel: str


class Interest(_Block):
    category: str
    views: int = Field(description="Product and category views within the interest window")
    last_viewed_at: AwareDatetime


class CartItem(_Block):
    product_id: str
    name: str | None
    category: str | None
    price: float
    quantity: int
    added_at: AwareDatetime


class Cart(_Block):
    items: list[CartItem]
    total: float
    updated_at: AwareDatetime | None
    abandoned: bool = Field(description="Not empty and untouched for the cart idle time")


class FavoriteStore(_Block):
    id: str
    name: str | None
    receipts: int


class ActivityEntry(_Block):
    at: AwareDatetime
    category: ActivityCategory
    kind: str = Field(description="What happened: receipt, product_view, cart_abandoned, ...")
    description: str = Field(description="One line for people")


class HistoryEntry(_Block):
    """One change of the profile's links: gained (linked, merged, reassigned) or lost."""

    kind: Literal["linked", "merged", "reassigned", "lost"]
    link: str = Field(description="The link key, `name:value`")
    customer_id: str = Field(description="Who owns the link after the change")
    previous_owner: str | None
    event_id: str
    at: AwareDatetime


class CardIdentityBlock(_Block):
    merged_from: list[str] = Field(description="Anonymous profiles merged into this one")
    history: list[HistoryEntry]


AttributeValue = str | int | float | bool


class Card(_Block):
    """One customer's card: what the card routes return and `cdp.profile-changes` carries.

    A function of the set of events the profile holds (plus the settings and the
    clock): the same events in any order give the same card.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, title="cardstream card")

    profile_id: str = Field(description="A CustomerId, or `~name:value` for an anonymous profile")
    customer_id: str | None = Field(description="None for an anonymous profile")
    anonymous: bool
    links: dict[str, list[str]] = Field(description="Link name -> its values, sorted")
    contacts: Contacts
    attributes: dict[str, AttributeValue] = Field(
        description="Personal data and consents: the latest identify event per field"
    )
    receipts: list[CardReceipt] = Field(description="The latest receipts, newest first")
    receipts_more: bool = Field(description="Older receipts exist: page them with the API")
    summary: Summary
    loyalty: Loyalty
    tags: list[str]
    subscriptions: dict[str, dict[str, bool]] = Field(
        description="Medium -> category (`*`: all) -> subscribed"
    )
    mailings: list[CardMailing]
    promo_codes: list[CardPromoCode]
    polls: list[CardPollAnswer]
    call_center: list[CallCenterContact]
    interests: list[Interest] = Field(description="Top categories viewed and not bought since")
    cart: Cart
    favorite_stores: list[FavoriteStore]
    activity: list[ActivityEntry] = Field(description="Newest first, bounded")
    identity: CardIdentityBlock
    version: int = Field(description="A count of the card's changes")
    updated_at: AwareDatetime | None = Field(description="When the card last changed")
