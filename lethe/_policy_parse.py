"""Reading a policy file's contents into a ``Policy``, checking every part.

Each error names the file and line (lethe/yamlfile.py) and says how to fix it;
lethe/policy.py documents the format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from connectors.registry import REPORTS_LAST_DOCUMENT, plan_actions, plan_method
from lethe.errors import ConfigError
from lethe.fides import is_known_category
from lethe.logsafe import redact
from lethe.policy import (
    ACTIONS,
    ANCHORS,
    CCPA_ONLY,
    PERIOD_LIMITS,
    REGULATIONS,
    STARTS,
    STRATEGIES,
    Decision,
    Domain,
    Policy,
    Retention,
    Rule,
)
from lethe.yamlfile import Lines, PathKey

_TOP = {"version", "approval", "domains", "datasets", "rules", "default"}
_RULE = {
    "system",
    "dataset",
    "category",
    "regulation",
    "action",
    "basis",
    "retention",
    "fields",
    "strategy",
}
_DOMAIN = {"owner", "categories", "fields", "datasets"} | (
    _RULE - {"system", "dataset", "category"}
)


def parse(
    data: Any,
    lines: Lines,
    kinds: Mapping[str, str],
    datasets: Mapping[str, Iterable[str]],
    fides: Mapping[str, Iterable[str]],
    *,
    source: str,
    digest: str,
) -> Policy:
    """``datasets``: what the estate knows per system; ``fides``: categories
    per ``system:dataset`` from the Fides annotations."""
    check = _Checker(lines, kinds)
    body = check.mapping(data, (), _TOP)
    if "version" not in body:
        raise lines.error(("version",), "missing: add version: 1 at the top")
    if type(body["version"]) is not int or body["version"] != 1:
        raise lines.error(("version",), "this lethe reads policy version 1")
    approval = check.mapping(body.get("approval") or {}, ("approval",), {"required"})
    required = approval.get("required", False)
    if not isinstance(required, bool):
        raise lines.error(("approval", "required"), "must be true or false")
    estate = {system: set(map(str, names)) for system, names in datasets.items()}
    declared = check.dataset_categories(body.get("datasets") or {}, estate)
    check.categories_of = _merged(declared, fides)
    check.known = _known(estate, check.categories_of)
    domains, domain_rules = check.domains(body.get("domains") or {})
    rules = tuple(
        check.rule(item, ("rules", i))
        for i, item in enumerate(check.sequence(body.get("rules") or [], ("rules",)))
    )
    default = Rule(
        action=check.action(body.get("default", "delete"), ("default",)),
        where=lines.ref("default") if "default" in body else "built-in default",
    )
    if default.action not in ("delete", "anonymise", "retain"):
        raise lines.error(
            ("default",), "the default must be delete, anonymise or retain"
        )
    policy = Policy(
        rules=domain_rules + rules,
        default=default,
        domains=domains,
        dataset_categories=check.categories_of,
        known=check.known,
        approval_required=required,
        source=str(lines.file),
        digest=digest,
    )
    check.unambiguous(policy.rules)
    check.owned_domains(policy, source)
    check.performable(policy)
    return policy


def _merged(
    declared: Mapping[str, tuple[str, ...]], fides: Mapping[str, Iterable[str]]
) -> dict[str, tuple[str, ...]]:
    """The policy's categories per dataset, then the personal (``user``) ones
    its Fides annotations add."""
    merged = {name: tuple(cats) for name, cats in declared.items()}
    for name, cats in fides.items():
        extra = sorted({c for c in cats if c == "user" or c.startswith("user.")})
        have = merged.get(name, ())
        merged[name] = have + tuple(c for c in extra if c not in have)
    return merged


def _known(
    estate: Mapping[str, set[str]], categories: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    known = {system: set(names) for system, names in estate.items()}
    for name in categories:
        system, _, dataset = name.partition(":")
        known.setdefault(system, set()).add(dataset)
    return {system: tuple(sorted(names)) for system, names in known.items() if names}


def _unknown_dataset(system: str, dataset: str, known: Iterable[str]) -> str:
    names, limit = sorted(known), 8
    shown = ", ".join(names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"unknown dataset {dataset!r} in system {system!r}; known: {shown}{more}"


@dataclass
class _Checker:
    lines: Lines
    kinds: Mapping[str, str]
    known: dict[str, tuple[str, ...]] = field(default_factory=dict)
    categories_of: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def mapping(self, value: Any, path: PathKey, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.lines.error(path, "must be a mapping")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise self.lines.error(
                (*path, unknown[0]),
                f"unknown key {unknown[0]!r}; known keys are "
                f"{', '.join(sorted(allowed))}",
            )
        return dict(value)

    def sequence(self, value: Any, path: PathKey, hint: str = "") -> list[Any]:
        if not isinstance(value, list):
            raise self.lines.error(path, "must be a list" + hint)
        return value

    def texts(self, value: Any, path: PathKey, hint: str) -> tuple[str, ...]:
        items = self.sequence(value, path, hint)
        return tuple(self.text(v, (*path, i)) for i, v in enumerate(items))

    def text(self, value: Any, path: PathKey) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.lines.error(path, "must be a non-empty text")
        return value.strip()

    def system(self, value: Any, path: PathKey, *, wildcard: bool = True) -> str:
        name = self.text(value, path)
        if name == "*" and wildcard:
            return name
        if name not in self.kinds:
            raise self.lines.error(
                path,
                f"unknown system {name!r}; the estate's systems are "
                f"{', '.join(sorted(self.kinds))}",
            )
        return name

    def category(self, value: Any, path: PathKey) -> str:
        key = self.text(value, path)
        if not is_known_category(key):
            raise self.lines.error(
                path,
                f"unknown data category {key!r}: use a fideslang category key such as "
                "user.contact.email (see the fideslang taxonomy)",
            )
        return key

    def categories(self, value: Any, path: PathKey) -> tuple[str, ...]:
        items = self.sequence(value, path)
        return tuple(self.category(v, (*path, i)) for i, v in enumerate(items))

    def action(self, value: Any, path: PathKey) -> str:
        name = self.text(value, path)
        if name not in ACTIONS:
            raise self.lines.error(
                path, f"unknown action {name!r}; use one of {', '.join(ACTIONS)}"
            )
        return name

    def retention(self, value: Any, path: PathKey) -> Retention:
        body = self.mapping(value, path, {"from", "start", "years", "months", "days"})
        anchor = body.get("from", "erasure")
        if anchor not in ANCHORS:
            raise self.lines.error((*path, "from"), f"use one of {', '.join(ANCHORS)}")
        start = body.get("start", "same_day")
        if start not in STARTS:
            raise self.lines.error((*path, "start"), f"use one of {', '.join(STARTS)}")
        counts = {}
        for unit, limit in PERIOD_LIMITS.items():
            n = body.get(unit, 0)
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= limit:
                raise self.lines.error(
                    (*path, unit),
                    f"must be a whole number from 0 to {limit} {unit} (retention "
                    "periods run to a century: 100 years, 1200 months or 36600 days)",
                )
            counts[unit] = n
        if not any(counts.values()):
            raise self.lines.error(path, "needs a period: years, months or days")
        return Retention(anchor=anchor, start=start, **counts)

    def rule(self, value: Any, path: PathKey, *, domain: Domain | None = None) -> Rule:
        allowed = _DOMAIN if domain else _RULE
        body = self.mapping(value, path, allowed)
        if "action" not in body:
            raise self.lines.error(path, "needs an action")
        action = self.action(body["action"], (*path, "action"))
        regulation = body.get("regulation")
        if regulation is not None and regulation not in REGULATIONS:
            raise self.lines.error(
                (*path, "regulation"), f"use one of {', '.join(REGULATIONS)}"
            )
        if action in CCPA_ONLY and regulation != "ccpa":
            raise self.lines.error(
                (*path, "action"),
                f"{action} is a CCPA alternative to deletion; add regulation: ccpa",
            )
        basis = body.get("basis")
        if basis is not None:
            basis = self.text(basis, (*path, "basis"))
            if redact(basis) != basis:  # a basis is signed into certificates
                raise self.lines.error(
                    (*path, "basis"),
                    "names what looks like an e-mail address or phone number; a "
                    "basis goes on certificates: name the law, not a person",
                )
        retention = None
        if "retention" in body:
            if basis is None:
                raise self.lines.error(
                    (*path, "retention"),
                    "a retention rule needs a basis: name the legal obligation "
                    "(for example 'HGB §257(1)')",
                )
            retention = self.retention(body["retention"], (*path, "retention"))
        if action == "retain" and (basis is None or retention is None):
            missing = "a basis" if basis is None else "a retention period"
            raise self.lines.error(path, f"retain needs {missing}")
        if action != "retain" and retention is not None:
            raise self.lines.error(
                (*path, "retention"), "only retain takes a retention"
            )
        strategy = body.get("strategy", "placeholder")
        if strategy not in STRATEGIES:
            raise self.lines.error(
                (*path, "strategy"),
                f"unknown strategy {strategy!r}; lethe anonymises with: "
                f"{', '.join(STRATEGIES)} (random, valid-shaped values per column)",
            )
        fields = self.texts(
            body.get("fields", []), (*path, "fields"), " of column names: [email]"
        )
        if domain is not None:
            return Rule(
                action=action,
                where=self.lines.ref(*path, "action"),
                system=domain.owner,
                regulation=regulation,
                basis=basis,
                retention=retention,
                fields=fields,
                domain=domain.name,
            )
        category = body.get("category")
        rule = Rule(
            action=action,
            where=self.lines.ref(*path),
            system=self.system(body.get("system", "*"), (*path, "system")),
            dataset=self.text(body["dataset"], (*path, "dataset"))
            if "dataset" in body
            else None,
            category=self.category(category, (*path, "category"))
            if category is not None
            else None,
            regulation=regulation,
            basis=basis,
            retention=retention,
            fields=fields,
        )
        if rule.dataset is not None:
            self.known_dataset(rule.system, rule.dataset, (*path, "dataset"))
        self.matches_a_dataset(rule, (*path, "category"))
        return rule

    def known_dataset(self, system: str, dataset: str, path: PathKey) -> None:
        """A named dataset must be one the estate knows, when it knows any."""
        if system != "*":
            names = self.known.get(system, ())
            if names and dataset not in names:
                raise self.lines.error(path, _unknown_dataset(system, dataset, names))
            return
        if any(self.known.values()) and not any(
            dataset in names for names in self.known.values()
        ):
            raise self.lines.error(
                path, f"no system of the estate has a dataset {dataset!r}"
            )

    def matches_a_dataset(self, rule: Rule, path: PathKey) -> None:
        """A category rule must cover a category some dataset in its scope holds,
        or it would silently never apply (a retain rule falling through)."""
        if rule.category is None:
            return
        for name, categories in self.categories_of.items():
            system, _, dataset = name.partition(":")
            if rule.system not in ("*", system):
                continue
            if rule.dataset not in (None, dataset):
                continue
            if any(rule.covers(c) for c in categories):
                return
        scope = [f"dataset {rule.dataset!r}"] if rule.dataset is not None else []
        if rule.system != "*":
            scope.append(f"system {rule.system!r}")
        within = " in " + " of ".join(scope) if scope else ""
        raise self.lines.error(
            path,
            f"{rule.category} matches no dataset{within}: declare which datasets "
            "hold it under datasets: or in the system's Fides annotations",
        )

    def domains(self, value: Any) -> tuple[tuple[Domain, ...], tuple[Rule, ...]]:
        if not isinstance(value, Mapping):
            raise self.lines.error(("domains",), "must map domain names to owners")
        domains: list[Domain] = []
        rules: list[Rule] = []
        for name, body in value.items():
            path: PathKey = ("domains", name)
            item = self.mapping(body, path, _DOMAIN)
            if "owner" not in item:
                raise self.lines.error(path, "needs an owner (a system)")
            domain = Domain(
                name=str(name),
                owner=self.system(item["owner"], (*path, "owner"), wildcard=False),
                categories=self.categories(
                    item.get("categories") or [], (*path, "categories")
                ),
                fields=self.texts(
                    item.get("fields", []), (*path, "fields"), " of field names"
                ),
                datasets=self.texts(
                    item.get("datasets", []), (*path, "datasets"), " of dataset names"
                ),
                where=self.lines.ref(*path),
            )
            domains.append(domain)
            if "action" in item:
                # a domain's ``fields`` are what it owns (for lint), not columns
                # to anonymise: the owner's rule takes none
                owned_rule = {
                    k: v for k, v in item.items() if k in _RULE and k != "fields"
                }
                rule = self.rule(owned_rule, path, domain=domain)
                for index, category in enumerate(domain.categories):
                    scoped = replace(rule, category=category)
                    self.matches_a_dataset(scoped, (*path, "categories", index))
                    rules.append(scoped)
        return tuple(domains), tuple(rules)

    def dataset_categories(
        self, value: Any, estate: Mapping[str, set[str]]
    ) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, Mapping):
            raise self.lines.error(
                ("datasets",), "must map system:dataset to categories"
            )
        found = {}
        for name, cats in value.items():
            path: PathKey = ("datasets", name)
            system, _, dataset = str(name).partition(":")
            if not dataset:
                raise self.lines.error(path, "name datasets as system:dataset")
            self.system(system, path, wildcard=False)
            names = estate.get(system)
            if names and dataset not in names:
                raise self.lines.error(path, _unknown_dataset(system, dataset, names))
            found[str(name)] = self.categories(cats, path)
        return found

    def unambiguous(self, rules: Iterable[Rule]) -> None:
        """Two rules that match the same things equally specifically must agree;
        otherwise the file's order would silently decide."""
        seen: dict[tuple[Any, ...], Rule] = {}
        for rule in rules:
            scope = (rule.system, rule.dataset, rule.category, rule.regulation)
            first = seen.setdefault(scope, rule)
            if first is rule or _says(first) == _says(rule):
                continue
            differ = (
                f"say {first.action} and {rule.action}"
                if first.action != rule.action
                else "differ in basis, retention or fields"
            )
            line = rule.where.rpartition(":")[2]
            raise ConfigError(
                f"{self.lines.full(first.where)}: this rule and the one at line "
                f"{line} both match {_scope(scope)} equally specifically and "
                f"{differ}: remove one, or make one more specific"
            )

    def performable(self, policy: Policy) -> None:
        """Every decision the policy makes is one the system's connector can do.

        Checked on each dataset the estate knows of in the system (flow edges,
        tables, Fides annotations and the policy's own ``datasets``), or on the
        system as a whole when none is known; the error names the rule that
        decided.
        """
        for system, kind in self.kinds.items():
            can = plan_actions(kind)
            if not can:
                continue  # an unknown kind: building its connector says so
            for dataset in policy.known.get(system) or [""]:
                for regulation in REGULATIONS:
                    decision = policy.decide(system, dataset, regulation)
                    needed = [decision.action]
                    if decision.also_anonymise:
                        needed.append("anonymise")
                    self._carried_out(system, kind, dataset, decision)
                    for action in needed:
                        if action in can:
                            continue
                        place = f"dataset {dataset!r} of " if dataset else ""
                        raise ConfigError(
                            f"{self.lines.full(decision.where)}: this rule makes "
                            f"lethe {action} "
                            f"{place}system {system!r}, and its connector ({kind}) "
                            f"cannot; it can {', '.join(sorted(can))}: add a rule "
                            "for that system"
                        )

    def _carried_out(
        self, system: str, kind: str, dataset: str, decision: Decision
    ) -> None:
        """What the connector would need beyond the action itself."""
        if decision.action not in plan_actions(kind):
            return
        method = plan_method(kind, decision.action)
        if method == "anonymise" and not decision.fields:
            raise ConfigError(
                f"{self.lines.full(decision.where)}: {decision.action} in system "
                f"{system!r} "
                f"({kind}) needs fields: the columns to overwrite"
                + (f" in {dataset!r}" if dataset else "")
            )
        retention = decision.retention
        if (
            retention
            and retention.anchor == "last_document"
            and (kind not in REPORTS_LAST_DOCUMENT)
        ):
            raise ConfigError(
                f"{self.lines.full(decision.where)}: retention from last_document in "
                f"system {system!r}: its connector ({kind}) reports no document "
                "dates; count from erasure or receipt instead"
            )
        if decision.also_anonymise and method is None:
            raise ConfigError(
                f"{self.lines.full(decision.where)}: system {system!r} ({kind}) "
                "retains records as "
                f"they are and cannot also anonymise the other personal data of "
                f"{dataset!r}; give that dataset one action"
            )

    def owned_domains(self, policy: Policy, source: str) -> None:
        """A catch-all rule must not delete a domain from under its owner.

        The source system's own domains are what erasure deletes; a domain
        another system owns (the ERP's billing) needs its owner's rule.
        """
        for domain in policy.domains:
            if domain.owner == source:
                continue
            for category in domain.categories:
                for regulation in REGULATIONS:
                    rule = policy._rule_for(domain.owner, "", regulation, category)
                    if (
                        rule.category is None
                        and rule.dataset is None
                        and (rule.action == "delete")
                    ):
                        raise ConfigError(
                            f"{self.lines.full(domain.where)}: domain "
                            f"{domain.name!r} is owned by {domain.owner!r}, but "
                            f"only the catch-all rule ({rule.where}) covers "
                            f"{category}: say what "
                            f"{domain.owner} does with it (action: retain with a "
                            "basis and retention, or anonymise)"
                        )


def _says(rule: Rule) -> tuple[Any, ...]:
    return (rule.action, rule.basis, rule.retention, rule.fields)


def _scope(scope: tuple[Any, ...]) -> str:
    system, dataset, category, regulation = scope
    parts = ["every system" if system == "*" else f"system {system!r}"]
    if dataset is not None:
        parts.append(f"dataset {dataset!r}")
    if category is not None:
        parts.append(f"category {category}")
    if regulation is not None:
        parts.append(f"regulation {regulation}")
    return ", ".join(parts)
