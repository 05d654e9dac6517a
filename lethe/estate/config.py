"""The estate file: which systems exist, how to reach them, how data flows.

A YAML file (``LETHE_HOME/estate.yaml`` by default)::

    name: acme
    source: salesforce            # the system of record
    manifests: /path/to/manifests # where jobs write their run manifests
    systems:
      salesforce: {kind: salesforce, base_url: ..., client_id: ..., client_secret: ...}
      warehouse:  {kind: warehouse, url: ..., tables: {raw.sf_contact: {...}}}
                  # + fides_datasets: [warehouse.fides.yml] (lethe/fides.py)
    flows:
      - {job: nightly_extract, from: salesforce:Contact, to: warehouse:raw.sf_contact}
    policy: policy.yaml          # what erasure does where (lethe/policy.py)

A setting written ``{env: NAME}`` is read from the environment variable NAME, so
secrets need not sit in the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lethe.errors import ConfigError
from lethe.policy import Policy, default_policy, load_policy


@dataclass(frozen=True)
class Estate:
    name: str
    source: str
    systems: Mapping[str, Mapping[str, Any]]
    flows: list[Mapping[str, Any]] = field(default_factory=list)
    manifests: Path | None = None
    policy: Policy = field(default_factory=default_policy)
    schedules: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def connector_settings(self, system: str) -> dict[str, Any]:
        raw = self.systems[system]
        return {key: _resolve_env(system, key, value) for key, value in raw.items()}

    @property
    def approval_required(self) -> bool:
        """Whether every request needs a second officer's approval before it runs
        (the policy file's ``approval: {required: true}``; erasure/decisions.py)."""
        return self.policy.approval_required


def _resolve_env(system: str, key: str, value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {"env"}:
        name = str(value["env"])
        if name not in os.environ:
            raise ConfigError(
                f"system {system!r} reads {key} from ${name}, which is not set"
            )
        return os.environ[name]
    return value


def load_estate(path: Path) -> Estate:
    if not path.exists():
        raise ConfigError(
            f"no estate file at {path}: run `lethe demo` to build the sample estate, "
            "or set LETHE_ESTATE to an estate file"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"the estate file {path} is not valid YAML{where}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("systems"), Mapping):
        raise ConfigError(f"the estate file {path} needs a 'systems' mapping")
    systems = data["systems"]
    source = str(data.get("source", "salesforce"))
    if source not in systems:
        raise ConfigError(f"the estate's source system {source!r} is not in 'systems'")
    systems = _with_fides_datasets(path, systems)
    flows = list(data.get("flows") or [])
    policy = _policy(path, data, systems, flows, source)
    manifests = data.get("manifests")
    return Estate(
        name=str(data.get("name", "estate")),
        source=source,
        systems=systems,
        flows=flows,
        manifests=Path(manifests) if manifests else None,
        policy=policy,
        schedules=dict(data.get("schedules") or {}),
        raw=data,
        path=path,
    )


def _policy(
    path: Path,
    data: Mapping[str, Any],
    systems: Mapping[str, Any],
    flows: list[Mapping[str, Any]],
    source: str,
) -> Policy:
    """The estate's policy file, validated against its systems and datasets.

    The datasets it may name are those the settings name (a warehouse's
    ``tables``, a Segment source's ``datasets``), the flow edges' ends and the
    tables a warehouse's Fides annotations tag, whose fields' categories are
    also the datasets' categories. Run after ``_with_fides_datasets``.
    """
    named = data.get("policy")
    kinds = {
        str(name): str(settings.get("kind", ""))
        for name, settings in systems.items()
        if isinstance(settings, Mapping)
    }
    datasets: dict[str, set[str]] = {}
    for name, settings in systems.items():  # datasets the settings name
        if not isinstance(settings, Mapping):
            continue
        for section in ("tables", "datasets"):
            named_here = settings.get(section)
            if isinstance(named_here, Mapping):
                datasets.setdefault(str(name), set()).update(map(str, named_here))
    for edge in flows:
        for end in ("from", "to"):
            system, _, dataset = str(edge.get(end, "")).partition(":")
            if dataset:
                datasets.setdefault(system, set()).add(dataset)
    categories = _fides_categories(systems)
    for key in categories:
        system, _, dataset = key.partition(":")
        datasets.setdefault(system, set()).add(dataset)
    if named is None:
        return load_policy(None, kinds, datasets, source=source, categories=categories)
    if not isinstance(named, str) or not named.strip():
        raise ConfigError(
            f"the estate file {path}: 'policy' names the policy file "
            "(policy: policy.yaml, relative to the estate file)"
        )
    file = path.parent / named
    policy = load_policy(
        file,
        kinds,
        datasets,
        source=source,
        categories=categories,
        name=_short_name(file, path.parent),
    )
    _keys_stay(policy, systems, file)
    return policy


def _keys_stay(policy: Policy, systems: Mapping[str, Any], file: Path) -> None:
    """No rule anonymises a dataset's key column: lethe finds the rows by it, so
    overwriting it would strand the rest of the row, unverifiable."""
    for rule in policy.rules:
        tables = (systems.get(rule.system) or {}).get("tables") or {}
        for dataset, table in tables.items():
            if rule.dataset not in (None, dataset) or not isinstance(table, Mapping):
                continue
            key = table.get("key_column")
            if key in rule.fields:
                where = rule.where.replace(file.name, str(file), 1)
                raise ConfigError(
                    f"{where}: fields names {key!r}, the key column of {dataset!r}: "
                    "lethe finds the subject's rows by it; anonymise other columns"
                )


def _fides_categories(systems: Mapping[str, Any]) -> dict[str, list[str]]:
    """``system:dataset`` → data categories of each Fides-tagged table.

    A tagged table is the dataset whose ``tables`` entry names it (by dataset
    or table name), else a dataset of its own name, as the warehouse connector
    maps them (connectors/_warehouse_setup.py).
    """
    from lethe.fides import load_annotations

    found: dict[str, list[str]] = {}
    for name, settings in systems.items():
        if not isinstance(settings, Mapping) or not settings.get("fides_datasets"):
            continue
        tables = settings.get("tables")
        tables = tables if isinstance(tables, Mapping) else {}
        for file in settings["fides_datasets"]:
            for tagged in load_annotations(Path(file)).tables:
                qualified = tagged.qualified
                dataset = next(
                    (
                        str(d)
                        for d, c in tables.items()
                        if qualified == d
                        or (isinstance(c, Mapping) and qualified == c.get("table"))
                    ),
                    qualified,
                )
                found.setdefault(f"{name}:{dataset}", []).extend(tagged.categories)
    return found


def _short_name(file: Path, folder: Path) -> str:
    """The policy file as rule references show it: relative to the estate
    file's folder when it lies inside it, else its base name."""
    try:
        return file.absolute().relative_to(folder.absolute()).as_posix()
    except ValueError:
        return file.name


def _with_fides_datasets(path: Path, systems: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check each system's ``fides_datasets`` and make its paths absolute.

    A warehouse may list Fides dataset files (relative to the estate file, or
    absolute) whose annotated tables the discovery scan searches; each must
    exist, be valid YAML and use only fideslang data categories.
    """
    from lethe.fides import load_annotations

    resolved = dict(systems)
    for name, settings in systems.items():
        if not isinstance(settings, Mapping) or "fides_datasets" not in settings:
            continue
        files = settings["fides_datasets"]
        if settings.get("kind") != "warehouse":
            raise ConfigError(
                f"the estate file {path}: system {name!r}: fides_datasets is read "
                "for warehouse systems only"
            )
        if not isinstance(files, list) or not all(
            isinstance(f, str) and f.strip() for f in files
        ):
            raise ConfigError(
                f"the estate file {path}: system {name!r}: fides_datasets lists "
                "Fides dataset files (paths relative to the estate file)"
            )
        absolute = [(path.parent / Path(f).expanduser()).absolute() for f in files]
        for file in absolute:
            load_annotations(file)
        resolved[name] = {**settings, "fides_datasets": [str(f) for f in absolute]}
    return resolved
