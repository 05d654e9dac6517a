"""The erasure policy: what a request does to each system, dataset and data category.

A YAML file, named by the estate file's ``policy:`` (relative to the estate
file); an estate without one deletes everywhere::

    version: 1
    approval: {required: false}          # second-person approval before a run
    domains:                             # who owns which data
      contact: {owner: salesforce, categories: [user.contact, user.name]}
      billing:
        owner: erp
        categories: [user.financial]
        action: retain                   # the owner's rule for its domain
        basis: "HGB §257(1) / AO §147(1): commercial books and records"
        retention: {from: last_document, start: end_of_year, years: 10}
    datasets:                            # the categories each dataset holds
      "erp:A_BusinessPartner": [user.name, user.contact, user.financial]
    rules:
      - {system: warehouse, dataset: mart.customer_summary, regulation: ccpa,
         action: deidentify, fields: [email]}
      - {system: "*", action: delete}
    default: delete

Actions: ``delete``; ``anonymise`` (``fields`` to overwrite where the connector
needs them, ``strategy: placeholder``); ``retain`` (``basis`` and ``retention``
are required); and CCPA's alternatives to deletion, ``deidentify`` (Cal. Civ.
Code §1798.140(m)) and ``aggregate`` (§1798.140(b)), allowed only on rules with
``regulation: ccpa``.

Deciding one dataset: for each category it holds, the most specific matching
rule wins (dataset over category over system over ``*``; a deeper category over
a shallower one; a rule naming the regulation over one that does not). A domain
rule is a category rule of its owner. The dataset then takes the strongest of
its categories' actions — retain over anonymise over aggregate over delete —
because a legal obligation to keep part of a record (GDPR Art. 17(3)(b))
prevails over erasure of the rest; its other personal fields are anonymised
(``also_anonymise``). A domain owned by a system other than the source is
never deleted from under its owner by a catch-all rule: the file must say what
the owner does with it, or it does not load.

A dataset's categories are the policy's ``datasets:`` entry merged with the
``user`` categories of its fields in the system's Fides annotations (a
warehouse's ``fides_datasets``, lethe/fides.py).

Validation happens when the file loads and names the place (``file:line``):
unknown data categories (fideslang taxonomy), unknown systems and datasets, a
rule that matches no dataset, two equally specific rules that disagree,
actions a system's connector cannot perform, retention without a basis or out
of range, CCPA-only actions without ``regulation: ccpa``. Rules and decisions
name their place by the file's short name (``policy.yaml:32``), which plans and
certificates carry; load errors give the full path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from dateutil.relativedelta import relativedelta

from lethe.errors import ConfigError
from lethe.yamlfile import Lines, load

ACTIONS = ("delete", "anonymise", "retain", "deidentify", "aggregate")
CCPA_ONLY = ("deidentify", "aggregate")
REGULATIONS = ("gdpr", "ccpa")
STRENGTH = {"delete": 0, "aggregate": 1, "deidentify": 2, "anonymise": 2, "retain": 3}
# The connector action each plan action runs as (the attempt's action).
EXECUTED_AS = {
    "delete": "delete",
    "aggregate": "delete",
    "anonymise": "anonymise",
    "deidentify": "anonymise",
    "retain": "retain",
}
ANCHORS = ("last_document", "erasure", "receipt")
STARTS = ("end_of_year", "same_day")
STRATEGIES = ("placeholder",)
PERIOD_LIMITS = {"years": 100, "months": 1200, "days": 36600}  # a century at most


@dataclass(frozen=True)
class Retention:
    """A retention rule: from an anchor date, optionally the end of its year,
    plus a period (HGB §257(5) and AO §147(4) count from the end of the
    calendar year of the last entry or document)."""

    anchor: str = "erasure"
    start: str = "same_day"
    years: int = 0
    months: int = 0
    days: int = 0

    def until(self, anchor_date: date) -> date:
        begin = (
            date(anchor_date.year, 12, 31)
            if self.start == "end_of_year"
            else (anchor_date)
        )
        return begin + relativedelta(
            years=self.years, months=self.months, days=self.days
        )

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Retention:
        return cls(
            **{k: body[k] for k in ("anchor", "start", "years", "months", "days")}
        )

    def describe(self) -> str:
        period = ", ".join(
            f"{n} {unit}{'' if n == 1 else 's'}"
            for n, unit in (
                (self.years, "year"),
                (self.months, "month"),
                (self.days, "day"),
            )
            if n
        )
        start = "the end of the year of " if self.start == "end_of_year" else ""
        return f"{period or '0 days'} from {start}the {self.anchor.replace('_', ' ')}"


@dataclass(frozen=True)
class Rule:
    action: str
    where: str
    system: str = "*"
    dataset: str | None = None
    category: str | None = None
    regulation: str | None = None
    basis: str | None = None
    retention: Retention | None = None
    fields: tuple[str, ...] = ()
    domain: str | None = None

    def covers(self, category: str | None) -> bool:
        if self.category is None:
            return True
        return category is not None and _under(category, self.category)

    def matches(self, system: str, dataset: str, regulation: str) -> bool:
        return (
            self.system in ("*", system)
            and self.dataset in (None, dataset)
            and self.regulation in (None, regulation)
        )

    def specificity(self) -> tuple[int, ...]:
        depth = self.category.count(".") + 1 if self.category else 0
        return (
            self.dataset is not None,
            depth,
            self.system != "*",
            self.regulation is not None,
        )


@dataclass(frozen=True)
class Decision:
    """What the plan does to one dataset, and which rule said so."""

    action: str
    where: str
    basis: str | None = None
    retention: Retention | None = None
    fields: tuple[str, ...] = ()
    also_anonymise: bool = False
    domain: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "rule": self.where,
            "basis": self.basis,
            "retention": asdict(self.retention) if self.retention else None,
            "retention_rule": self.retention.describe() if self.retention else None,
            "fields": list(self.fields),
            "also_anonymise": self.also_anonymise,
            "domain": self.domain,
        }


@dataclass(frozen=True)
class Domain:
    name: str
    owner: str
    categories: tuple[str, ...]
    fields: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    where: str = ""


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    default: Rule
    domains: tuple[Domain, ...] = ()
    dataset_categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    known: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    approval_required: bool = False
    source: str = "built-in default"
    digest: str = ""

    def decide(self, system: str, dataset: str, regulation: str) -> Decision:
        """The action for one dataset (``dataset`` without the system prefix)."""
        categories = self.dataset_categories.get(f"{system}:{dataset}") or (None,)
        per_category = [
            self._rule_for(system, dataset, regulation, c) for c in categories
        ]
        strongest = max(per_category, key=lambda r: STRENGTH[r.action])
        others = [r for r in per_category if r.action != strongest.action]
        fields = tuple(
            sorted(
                {
                    f
                    for r in per_category
                    if r.action == strongest.action
                    for f in r.fields
                }
            )
        )
        return Decision(
            action=strongest.action,
            where=strongest.where,
            basis=strongest.basis,
            retention=strongest.retention,
            fields=fields,
            also_anonymise=strongest.action == "retain" and bool(others),
            domain=strongest.domain,
        )

    def owners(self) -> dict[str, tuple[str, ...]]:
        """System → owned fields and datasets, as ``lineage lint`` reads them."""
        owned: dict[str, list[str]] = {}
        for domain in self.domains:
            owned.setdefault(domain.owner, []).extend(domain.fields + domain.datasets)
        return {system: tuple(names) for system, names in owned.items()}

    def _rule_for(
        self, system: str, dataset: str, regulation: str, category: str | None
    ) -> Rule:
        candidates = [
            r
            for r in self.rules
            if r.matches(system, dataset, regulation) and r.covers(category)
        ]
        if not candidates:
            return self.default
        return max(candidates, key=Rule.specificity)


def _under(category: str, ancestor: str) -> bool:
    return category == ancestor or category.startswith(ancestor + ".")


def default_policy() -> Policy:
    return Policy(rules=(), default=Rule(action="delete", where="built-in default"))


def load_policy(
    path: Path | None,
    kinds: Mapping[str, str],
    datasets: Mapping[str, Iterable[str]] | None = None,
    *,
    source: str = "salesforce",
    categories: Mapping[str, Iterable[str]] | None = None,
    name: str = "",
) -> Policy:
    """Read and validate a policy file against the estate's systems and kinds.

    ``kinds`` maps each system to its connector kind; ``datasets`` lists the
    datasets the estate knows of per system (flow edges, tables, Fides-tagged
    tables); ``categories`` gives ``system:dataset`` the data categories its
    Fides annotations declare. ``name`` is the file's short name in rule
    references (default: its base name). With no path, the built-in default
    (delete everywhere) is checked the same way.
    """
    from lethe._policy_parse import parse

    known = {system: set(names) for system, names in (datasets or {}).items()}
    declared = {key: tuple(values) for key, values in (categories or {}).items()}
    if path is None:
        return parse(
            {"version": 1},
            Lines(file=Path("(no policy file)")),
            kinds,
            known,
            declared,
            source=source,
            digest="",
        )
    data, lines = load(path, what="the policy file", name=name)
    if data is None:
        raise ConfigError(
            f"the policy file {path} is empty: start from "
            "lethe/estate/sample-policy.yaml"
        )
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return parse(data, lines, kinds, known, declared, source=source, digest=digest)
