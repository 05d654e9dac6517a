"""The people of a sample estate: generated with Faker, or read from the real
public sample data in ``../shared/data`` (read in place, never copied).

Contacts come first, and the first contact is the *featured* person: the one
the demo erases by default, present in every system.

ERP customers come with the billing documents the ERP issued them: generated
(a few invoices over the last years, some customers none), or, from the sample
data, one per cap-sflight flight booking of that passenger (its BookingDate and
FlightPrice; cancelled when the booking or its travel is).
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from faker import Faker

from lethe.errors import InputError

SEED = 2026


@dataclass
class Person:
    """One contact or lead of the source system, before it gets an Id."""

    sobject: str  # Contact or Lead
    first_name: str
    last_name: str
    email: str | None
    phone: str | None = None
    city: str | None = None
    country: str | None = None
    street: str | None = None
    postal_code: str | None = None
    ref: str | None = None  # data-tree referenceId
    cases: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class BillingDocument:
    """One invoice the ERP issued to a customer: a date and an amount."""

    on: date
    net_amount: str
    currency: str
    cancelled: bool = False


@dataclass
class ErpCustomer:
    """An ERP-native customer that never came from Salesforce."""

    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    street: str | None
    postal_code: str | None
    city: str | None
    country: str | None
    documents: list[BillingDocument] = field(default_factory=list)


@dataclass
class People:
    people: list[Person]
    erp_customers: list[ErpCustomer]
    origin: str


def generate(count: int = 40, erp_customers: int = 10) -> People:
    """A deterministic cast of people (same every run)."""
    fake = Faker("en_US")
    fake.seed_instance(SEED)
    people = []
    for index in range(count):
        first, last = fake.first_name(), fake.last_name()
        people.append(
            Person(
                sobject="Lead" if index % 10 == 9 else "Contact",
                first_name=first,
                last_name=last,
                email=f"{first}.{last}{index}@example.com".lower(),
                phone=fake.numerify("+1 (###) 555-0###"),
                city=fake.city(),
                country="US",
                street=fake.street_address(),
                postal_code=fake.postcode(),
                cases=[{"Subject": "Billing question", "Status": "New"}]
                if index % 4 == 0
                else [],
            )
        )
    german = Faker("de_DE")
    german.seed_instance(SEED)
    customers = [
        ErpCustomer(
            first_name=german.first_name(),
            last_name=german.last_name(),
            email=f"kunde{n}@example.de",
            phone=german.numerify("+49 30 #######"),
            street=german.street_address(),
            postal_code=german.postcode(),
            city=german.city(),
            country="DE",
            documents=billing_history(n, currency="EUR"),
        )
        for n in range(erp_customers)
    ]
    return People(people=people, erp_customers=customers, origin="generated (Faker)")


def billing_history(
    index: int, *, currency: str = "EUR", today: date | None = None
) -> list[BillingDocument]:
    """A few invoices over the last four years for the customer at ``index``.

    The same for the same index (dates count back from ``today``); every fifth
    customer, from the fifth on, has none, and about one invoice in seven was
    cancelled.
    """
    rng = random.Random(SEED * 1000 + index)
    count = 0 if index % 5 == 4 else rng.randint(1, 4)
    end = today or date.today()
    return [
        BillingDocument(
            on=end - timedelta(days=rng.randint(20, 4 * 365)),
            net_amount=f"{rng.uniform(40, 4000):.2f}",
            currency=currency,
            cancelled=rng.random() < 1 / 7,
        )
        for _ in range(count)
    ]


def from_sample_data(root: Path) -> People:
    """Contacts, Leads and Cases from the Salesforce data-tree exports, and SAP
    cap-sflight passengers as the ERP-native customers."""
    salesforce = root / "salesforce"
    passengers = root / "erp" / "sap-cap-sflight" / "sap.fe.cap.travel-Passenger.csv"
    needed = [salesforce / "coral-cloud" / "data-Contact.json", passengers]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise InputError(
            f"--sample-data {root} does not hold the expected files "
            f"(missing {', '.join(missing)}); point it at the shared data folder"
        )
    people = list(_coral_cloud(salesforce / "coral-cloud"))
    people += _easy_spaces(salesforce / "easy-spaces-lwc")
    people += _apex_recipes(salesforce / "apex-recipes")
    featured = next((i for i, p in enumerate(people) if p.cases), 0)
    people.insert(0, people.pop(featured))
    return People(
        people=people,
        erp_customers=list(_passengers(passengers, _bookings(passengers.parent))),
        origin=f"sample data in {root}",
    )


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return list(json.loads(path.read_text(encoding="utf-8-sig"))["records"])


def _coral_cloud(folder: Path) -> Iterator[Person]:
    cases: dict[str, list[dict[str, str]]] = {}
    for case in _records(folder / "data-Case.json"):
        ref = str(case.get("ContactId", "")).lstrip("@")
        cases.setdefault(ref, []).append(
            {k: str(case[k]) for k in ("Subject", "Status", "Origin") if k in case}
        )
    for row in _records(folder / "data-Contact.json"):
        ref = row["attributes"]["referenceId"]
        yield Person(
            sobject="Contact",
            first_name=row.get("FirstName", ""),
            last_name=row["LastName"],
            email=row.get("Email"),
            phone=row.get("MobilePhone"),
            city=row.get("MailingCity"),
            country=row.get("MailingCountry"),
            street=row.get("MailingStreet"),
            postal_code=row.get("MailingPostalCode"),
            ref=f"coral-cloud/{ref}",
            cases=cases.get(ref, []),
        )


def _easy_spaces(folder: Path) -> list[Person]:
    people = []
    for sobject, name in (("Contact", "Contacts.json"), ("Lead", "Leads.json")):
        for row in _records(folder / name):
            people.append(
                Person(
                    sobject=sobject,
                    first_name=row.get("FirstName", ""),
                    last_name=row["LastName"],
                    email=row.get("Email"),
                    phone=row.get("MobilePhone") or row.get("Phone"),
                    city=row.get("MailingCity") or row.get("City"),
                    country=row.get("MailingCountry") or row.get("Country"),
                    street=row.get("MailingStreet") or row.get("Street"),
                    postal_code=row.get("MailingPostalCode") or row.get("PostalCode"),
                    ref=f"easy-spaces-lwc/{row['attributes']['referenceId']}",
                )
            )
    return people


def _apex_recipes(folder: Path) -> list[Person]:
    return [
        Person(
            sobject="Contact",
            first_name=row.get("firstName", ""),
            last_name=row["lastName"],
            email=row.get("email"),
            phone=row.get("phone"),
            ref=f"apex-recipes/{row['attributes']['referenceId']}",
        )
        for row in _records(folder / "Contacts.json")
    ]


def _semicolon_rows(path: Path) -> Iterator[dict[str, str]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8-sig", newline="") as handle:
        yield from csv.DictReader(handle, delimiter=";")


def _bookings(folder: Path) -> dict[str, list[BillingDocument]]:
    """cap-sflight bookings as billing documents, by passenger CustomerID."""
    cancelled_travels = {
        row["TravelUUID"]
        for row in _semicolon_rows(folder / "sap.fe.cap.travel-Travel.csv")
        if row.get("TravelStatus_code") == "X"
    }
    documents: dict[str, list[BillingDocument]] = {}
    for row in _semicolon_rows(folder / "sap.fe.cap.travel-Booking.csv"):
        documents.setdefault(row["to_Customer_CustomerID"], []).append(
            BillingDocument(
                on=date.fromisoformat(row["BookingDate"]),
                net_amount=row["FlightPrice"],
                currency=row["CurrencyCode_code"],
                cancelled=row["BookingStatus_code"] == "X"
                or row["to_Travel_TravelUUID"] in cancelled_travels,
            )
        )
    return documents


def _passengers(
    path: Path, documents: dict[str, list[BillingDocument]]
) -> Iterator[ErpCustomer]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            yield ErpCustomer(
                first_name=row["FirstName"],
                last_name=row["LastName"],
                email=row.get("EMailAddress") or None,
                phone=row.get("PhoneNumber") or None,
                street=row.get("Street"),
                postal_code=row.get("PostalCode"),
                city=row.get("City"),
                country=row.get("CountryCode_code"),
                documents=documents.get(row["CustomerID"], []),
            )
