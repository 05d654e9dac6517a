"""The entity sets of the two SAP services the emulator serves.

``SETS`` is API_BUSINESS_PARTNER's data model and ``BILLING_SETS`` that of
API_BILLING_DOCUMENT_SRV: each set's keys, properties with their EDM kind and
length (``s`` string, ``b`` boolean, ``d`` Edm.DateTime, ``n`` Edm.Decimal with
its precision), read-only properties, ``sap:creatable``/``updatable``/
``deletable`` flags, ETag use and navigation links.

Billing documents are read-only through the API: S/4HANA creates them in SD
billing (VF01 and its background runs) and cancels them with a cancellation
document (type S1) that names the original in ``CancelledBillingDocument``
and flags it ``BillingDocumentIsCancelled``. The emulator keeps the header
properties lethe reads plus the ones that say what a document is; items,
partners, pricing elements, texts and the Cancel/GetPDF functions are not
emulated.
"""

from __future__ import annotations

from lethe.emulators._odata import EntitySet, Nav

COMM_KEYS = {"AddressID": ("s", 10), "Person": ("s", 10), "OrdinalNumber": ("s", 3)}
SETS: dict[str, EntitySet] = {
    s.name: s
    for s in (
        EntitySet(
            "A_BusinessPartner",
            ("BusinessPartner",),
            {
                "BusinessPartner": ("s", 10),
                "Customer": ("s", 10),
                "BusinessPartnerCategory": ("s", 1),
                "BusinessPartnerFullName": ("s", 81),
                "FirstName": ("s", 40),
                "LastName": ("s", 40),
                "BirthDate": ("d", 0),
                "SearchTerm1": ("s", 20),
                "BusinessPartnerIsBlocked": ("b", 0),
                "IsMarkedForArchiving": ("b", 0),
                "BusinessPartnerIDByExtSystem": ("s", 20),
                "LastChangeDate": ("d", 0),
                "ETag": ("s", 26),
            },
            frozenset({"BusinessPartner", "Customer", "LastChangeDate", "ETag"}),
            deletable=False,
            etag=True,
            navs={
                "to_BusinessPartnerAddress": Nav(
                    "A_BusinessPartnerAddress",
                    True,
                    (("BusinessPartner", "BusinessPartner"),),
                ),
                "to_Customer": Nav("A_Customer", False, (("Customer", "Customer"),)),
            },
        ),
        EntitySet(
            "A_BusinessPartnerAddress",
            ("BusinessPartner", "AddressID"),
            {
                "BusinessPartner": ("s", 10),
                "AddressID": ("s", 10),
                "Person": ("s", 10),
                "FullName": ("s", 80),
                "StreetName": ("s", 60),
                "HouseNumber": ("s", 10),
                "PostalCode": ("s", 10),
                "CityName": ("s", 40),
                "Country": ("s", 3),
            },
            frozenset({"BusinessPartner", "AddressID", "Person"}),
            etag=True,
            navs={
                nav: Nav(
                    target, True, (("AddressID", "AddressID"), ("Person", "Person"))
                )
                for nav, target in (
                    ("to_EmailAddress", "A_AddressEmailAddress"),
                    ("to_PhoneNumber", "A_AddressPhoneNumber"),
                )
            },
        ),
        EntitySet(
            "A_AddressEmailAddress",
            tuple(COMM_KEYS),
            {
                **COMM_KEYS,
                "IsDefaultEmailAddress": ("b", 0),
                "EmailAddress": ("s", 241),
                "SearchEmailAddress": ("s", 20),
            },
            frozenset({*COMM_KEYS, "SearchEmailAddress"}),
        ),
        EntitySet(
            "A_AddressPhoneNumber",
            tuple(COMM_KEYS),
            {
                **COMM_KEYS,
                "DestinationLocationCountry": ("s", 3),
                "IsDefaultPhoneNumber": ("b", 0),
                "PhoneNumber": ("s", 30),
                "PhoneNumberExtension": ("s", 10),
                "InternationalPhoneNumber": ("s", 30),
                "PhoneNumberType": ("s", 1),
            },
            frozenset({*COMM_KEYS, "InternationalPhoneNumber"}),
        ),
        EntitySet(
            "A_Customer",
            ("Customer",),
            {
                "Customer": ("s", 10),
                "CustomerName": ("s", 80),
                "PostingIsBlocked": ("b", 0),
                "OrderIsBlockedForCustomer": ("s", 2),
                "DeliveryIsBlocked": ("s", 2),
                "BillingIsBlockedForCustomer": ("s", 2),
                "DeletionIndicator": ("b", 0),
            },
            frozenset({"Customer", "CustomerName"}),
            creatable=False,
            deletable=False,
            etag=True,
        ),
    )
}

BILLING_SETS: dict[str, EntitySet] = {
    "A_BillingDocument": EntitySet(
        "A_BillingDocument",
        ("BillingDocument",),
        {
            "BillingDocument": ("s", 10),
            "SDDocumentCategory": ("s", 4),
            "BillingDocumentCategory": ("s", 1),
            "BillingDocumentType": ("s", 4),
            "CreationDate": ("d", 0),
            "SalesOrganization": ("s", 4),
            "BillingDocumentDate": ("d", 0),
            "BillingDocumentIsCancelled": ("b", 0),
            "CancelledBillingDocument": ("s", 10),
            "TotalNetAmount": ("n", 16),
            "TransactionCurrency": ("s", 5),
            "CompanyCode": ("s", 4),
            "FiscalYear": ("s", 4),
            "SoldToParty": ("s", 10),
            "PayerParty": ("s", 10),
        },
        frozenset(
            {
                "BillingDocument",
                "SDDocumentCategory",
                "BillingDocumentCategory",
                "BillingDocumentType",
                "CreationDate",
                "SalesOrganization",
                "BillingDocumentDate",
                "BillingDocumentIsCancelled",
                "CancelledBillingDocument",
                "TotalNetAmount",
                "TransactionCurrency",
                "CompanyCode",
                "FiscalYear",
                "SoldToParty",
                "PayerParty",
            }
        ),
        creatable=False,
        updatable=False,
        deletable=False,
    )
}
