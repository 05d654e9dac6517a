"""The emulated org's objects and fields, its ids and its error shape.

Only the standard fields an erasure touches are modelled (typed where the
query language cares: ids, booleans, numbers); custom ``__c`` fields are added
as text when a record first carries one. ``Individual`` (key prefix 0PK) is the
org's privacy record for a person (API 42.0+, Data Protection and Privacy):
Contacts and Leads point to it through ``IndividualId``, and it carries the
person's names and the consent flags (``ShouldForget`` "Forget this
Individual", ``HasOptedOutProcessing`` "Don't Process", ...). Checkbox fields
are never null: a record created without one holds ``false``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from lethe.errors import InputError
from lethe.identity import salesforce_id_18

_COMMON = (
    "Id:id IsDeleted:bool MasterRecordId:ref OwnerId:ref CreatedDate:date "
    "CreatedById:ref LastModifiedDate:date LastModifiedById:ref SystemModstamp:date"
)
_SCHEMA_SPEC: dict[str, tuple[str, str]] = {
    "Contact": (
        "003",
        "AccountId:ref LastName FirstName Salutation Name MailingStreet MailingCity "
        "MailingState MailingPostalCode MailingCountry Phone Fax MobilePhone "
        "HomePhone OtherPhone AssistantPhone ReportsToId:ref Email Title Department "
        "AssistantName LeadSource Birthdate:date Description HasOptedOutOfEmail:bool "
        "DoNotCall:bool IndividualId:ref EmailBouncedReason IsEmailBounced:bool",
    ),
    "Lead": (
        "00Q",
        "LastName FirstName Salutation Name Title Company Street City State "
        "PostalCode Country Phone MobilePhone Fax Email Website Description "
        "LeadSource Status Industry Rating IsConverted:bool ConvertedDate:date "
        "ConvertedAccountId:ref ConvertedContactId:ref HasOptedOutOfEmail:bool "
        "DoNotCall:bool IndividualId:ref EmailBouncedReason",
    ),
    "Case": (
        "500",
        "CaseNumber ContactId:ref AccountId:ref ParentId:ref SuppliedName "
        "SuppliedEmail SuppliedPhone SuppliedCompany Type Status Reason Origin "
        "Subject Priority Description IsClosed:bool ClosedDate:date "
        "IsEscalated:bool ContactPhone ContactMobile ContactEmail ContactFax Comments",
    ),
    "Account": (
        "001",
        "Name Type ParentId:ref BillingStreet BillingCity BillingState "
        "BillingPostalCode BillingCountry ShippingStreet ShippingCity ShippingState "
        "ShippingPostalCode ShippingCountry Phone Fax AccountNumber Website Industry "
        "AnnualRevenue:num NumberOfEmployees:num Description AccountSource",
    ),
    "Individual": (
        "0PK",
        "FirstName LastName Salutation Name BirthDate:date ShouldForget:bool "
        "SendIndividualData:bool HasOptedOutProcessing:bool "
        "HasOptedOutProfiling:bool HasOptedOutSolicit:bool HasOptedOutTracking:bool "
        "HasOptedOutGeoTracking:bool CanStorePiiElsewhere:bool",
    ),
}
SYSTEM_FIELDS = frozenset(
    "Id IsDeleted MasterRecordId CreatedDate CreatedById LastModifiedDate "
    "LastModifiedById SystemModstamp".split()
)
# Fields the org computes: a Case shows its Contact's e-mail and phones.
DERIVED: dict[str, dict[str, str | None]] = {
    "Contact": {"Name": None},
    "Lead": {"Name": None},
    "Case": {
        "CaseNumber": None,
        "ContactEmail": "Email",
        "ContactPhone": "Phone",
        "ContactMobile": "MobilePhone",
        "ContactFax": "Fax",
    },
    "Account": {},
    "Individual": {"Name": None},
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "Contact": ("LastName",),
    "Lead": ("LastName", "Company"),
    "Account": ("Name",),
    "Individual": ("LastName",),
}
# Objects whose Name the org composes from FirstName and LastName.
PERSON_NAMED = frozenset({"Contact", "Lead", "Individual"})


def _parse_schema() -> dict[str, dict[str, str]]:
    schema: dict[str, dict[str, str]] = {}
    for sobject, (_prefix, spec) in _SCHEMA_SPEC.items():
        fields: dict[str, str] = {}
        for item in f"{_COMMON} {spec}".split():
            name, _, kind = item.partition(":")
            fields[name] = kind or "text"
        schema[sobject] = fields
    return schema


SCHEMA = _parse_schema()
KEY_PREFIXES = {sobject: prefix for sobject, (prefix, _) in _SCHEMA_SPEC.items()}
BY_PREFIX = {prefix: sobject for sobject, prefix in KEY_PREFIXES.items()}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Odd and not a multiple of 31, so n -> n*k mod 62**9 is a bijection: ids stay
# unique while their letters vary in case, which exercises the checksum.
_SCRAMBLE = 0x9E3779B97F4A7C15


def make_id(prefix: str, number: int) -> str:
    """An 18-character id: key prefix, pod, reserved digit, 9 base62 digits."""
    offset = int.from_bytes(hashlib.sha256(prefix.encode()).digest()[:8], "big")
    value = ((number + offset) * _SCRAMBLE) % 62**9
    digits = ""
    for _ in range(9):
        value, rest = divmod(value, 62)
        digits = _BASE62[rest] + digits
    return salesforce_id_18(f"{prefix}Dn0{digits}")


def normal_id(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return salesforce_id_18(value)
    except InputError:
        return None


def sf_time(epoch: float) -> str:
    millis = int(epoch * 1000) % 1000
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}+0000"
    )


@dataclass(eq=False)
class SalesforceError(Exception):
    """An error the org reports: HTTP status, errorCode and message."""

    status: int
    code: str
    message: str
    fields: list[str] = field(default_factory=list)

    def body(self) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields:
            item["fields"] = self.fields
        return [item]

    def save_error(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def not_found() -> SalesforceError:
    return SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
