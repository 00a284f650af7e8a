"""Contact checks for the card: is the email usable for mailings, the phone for SMS?

* email: valid when `email_validator` accepts its syntax (no DNS look-up:
  `check_deliverability=False`); mailable when valid, the `email_consent` attribute
  is not False and the customer did not unsubscribe from all email
  (`subscriptions["email"]["*"]` False).
* phone: parsed by `phonenumbers` (values are E.164 after link normalisation); type
  `mobile` or `landline`, `unknown` when the numbering plan cannot tell (e.g. NANP
  numbers) or the number is not valid; SMS allowed only for a valid mobile number,
  with `sms_consent` not False and no unsubscription from all SMS.

Every block says why a contact is not usable (`reason`, None when it is). The syntax
checks are memoised: they are pure functions of the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

NO_EMAIL = "no email address"
NO_PHONE = "no phone number"
NO_EMAIL_CONSENT = "no consent to email (email_consent is false)"
NO_SMS_CONSENT = "no consent to SMS (sms_consent is false)"
UNSUBSCRIBED_EMAIL = "unsubscribed from all email"
UNSUBSCRIBED_SMS = "unsubscribed from all SMS"
LANDLINE = "landline: cannot receive SMS"
UNKNOWN_TYPE = "cannot tell mobile from landline"
INVALID_PHONE = "not a valid phone number"


@dataclass(frozen=True, slots=True)
class EmailCheck:
    """Whether an email address is syntactically valid, and why not."""

    valid: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PhoneCheck:
    """A phone number's validity and type (`mobile`, `landline`, `unknown`), and why not valid."""

    valid: bool
    type: str
    reason: str | None = None


@lru_cache(maxsize=65_536)
def check_email(value: str) -> EmailCheck:
    """The syntax check of `value` (no DNS); the reason names what is wrong."""
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        return EmailCheck(False, f"invalid email: {exc}")
    return EmailCheck(True)


_TYPES = {
    phonenumbers.PhoneNumberType.MOBILE: "mobile",
    phonenumbers.PhoneNumberType.FIXED_LINE: "landline",
}


@lru_cache(maxsize=65_536)
def check_phone(value: str) -> PhoneCheck:
    """Validity and type of `value`, read as E.164 (a leading `+` and country code)."""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        return PhoneCheck(False, "unknown", f"{INVALID_PHONE}: {exc}")
    if not phonenumbers.is_valid_number(number):
        return PhoneCheck(False, "unknown", INVALID_PHONE)
    return PhoneCheck(True, _TYPES.get(phonenumbers.number_type(number), "unknown"))


def email_contact(value: str | None, consent: Any, subscribed_all: bool | None) -> dict[str, Any]:
    """The card's email block: value, valid, mailable, reason (None when mailable).

    `consent` is the `email_consent` attribute (only False forbids), `subscribed_all`
    the email subscription for all categories (only False forbids).
    """
    if value is None:
        return {"value": None, "valid": False, "mailable": False, "reason": NO_EMAIL}
    check = check_email(value)
    reason = check.reason
    if reason is None and consent is False:
        reason = NO_EMAIL_CONSENT
    if reason is None and subscribed_all is False:
        reason = UNSUBSCRIBED_EMAIL
    return {"value": value, "valid": check.valid, "mailable": reason is None, "reason": reason}


def phone_contact(value: str | None, consent: Any, subscribed_all: bool | None) -> dict[str, Any]:
    """The card's phone block: value, type, valid, sms_allowed, reason (None when allowed).

    `consent` is the `sms_consent` attribute, `subscribed_all` the SMS subscription for
    all categories; only False forbids.
    """
    if value is None:
        return {
            "value": None,
            "type": "unknown",
            "valid": False,
            "sms_allowed": False,
            "reason": NO_PHONE,
        }
    check = check_phone(value)
    reason = check.reason
    if reason is None and check.type == "landline":
        reason = LANDLINE
    if reason is None and check.type != "mobile":
        reason = UNKNOWN_TYPE
    if reason is None and consent is False:
        reason = NO_SMS_CONSENT
    if reason is None and subscribed_all is False:
        reason = UNSUBSCRIBED_SMS
    return {
        "value": value,
        "type": check.type,
        "valid": check.valid,
        "sms_allowed": reason is None,
        "reason": reason,
    }
