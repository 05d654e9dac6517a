"""The estate file: which systems exist, how to reach them, how data flows.

A YAML file (``LETHE_HOME/estate.yaml`` by default)::

    name: acme
    source: salesforce            # the system of record
    manifests: /path/to/manifests # where jobs write their run manifests
    systems:
      salesforce: {kind: salesforce, base_url: ..., client_id: ..., client_secret: ...}
      warehouse:  {kind: warehouse, url: ..., tables: {raw.sf_contact: {...}}}
    flows:
      - {job: nightly_extract, from: salesforce:Contact, to: warehouse:raw.sf_contact}
    policy:
      erp: {action: retain}

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

ACTIONS = ("delete", "anonymise", "retain")


@dataclass(frozen=True)
class Estate:
    name: str
    source: str
    systems: Mapping[str, Mapping[str, Any]]
    flows: list[Mapping[str, Any]] = field(default_factory=list)
    manifests: Path | None = None
    policy: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    schedules: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def action_for(self, system: str) -> str:
        return str(self.policy.get(system, {}).get("action", "delete"))

    def connector_settings(self, system: str) -> dict[str, Any]:
        raw = self.systems[system]
        return {key: _resolve_env(system, key, value) for key, value in raw.items()}


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
    policy = data.get("policy") or {}
    for system, rule in policy.items():
        if system not in systems:
            raise ConfigError(
                f"policy names system {system!r}, which is not in 'systems'"
            )
        if rule.get("action", "delete") not in ACTIONS:
            raise ConfigError(
                f"policy for {system!r}: action must be one of {', '.join(ACTIONS)}"
            )
    manifests = data.get("manifests")
    return Estate(
        name=str(data.get("name", "estate")),
        source=source,
        systems=systems,
        flows=list(data.get("flows") or []),
        manifests=Path(manifests) if manifests else None,
        policy=policy,
        schedules=dict(data.get("schedules") or {}),
        raw=data,
        path=path,
    )
