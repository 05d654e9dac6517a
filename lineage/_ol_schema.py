"""Validate OpenLineage events against the bundled official JSON Schemas.

The core schema (``schemas/OpenLineage.json``) checks an event's shape; facets
are open objects there, so each facet is then checked by its key against the
facet schema that defines that key for that place (run, job, dataset, input or
output facets). Dispatch is by key, not by ``_schemaURL``: producers put
arbitrary URLs there.

Lenient mode repairs what is known to be recoverable, and says so in a
warning: a missing ``schemaURL`` (the bundled spec's is assumed), an
``eventTime`` without a zone (UTC is assumed), a test-matcher placeholder such
as ``{{ any(result) }}`` where the run id belongs (a stable id is derived from
the job, so the run's events still meet), and facets without ``_producer`` or
``_schemaURL``. Facet-schema violations become warnings too. Everything else is
rejected in both modes.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from lethe.errors import ConfigError

CORE_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
KINDS = ("RunEvent", "DatasetEvent", "JobEvent")
_PLACEHOLDER = re.compile(r"^\s*\{\{.*\}\}\s*$")
_BASE_FIELD = re.compile(
    r"/(facets|inputFacets|outputFacets)/[^/]+/(_producer|_schemaURL)$"
)
_NEEDED_FORMATS = ("date-time", "uri", "uuid")


@dataclass(frozen=True)
class Problem:
    """One way an event breaks the schema: a JSON pointer and what is wrong."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


@dataclass(frozen=True)
class Checked:
    """An event after validation; ``event`` has lenient repairs applied."""

    event: dict[str, Any]
    kind: str
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]


def kind_of(event: Mapping[str, Any]) -> str:
    if "run" in event:
        return "RunEvent"
    if "dataset" in event and "job" not in event:
        return "DatasetEvent"
    if "job" in event:
        return "JobEvent"
    return "RunEvent"


def check(event: Mapping[str, Any], *, lenient: bool = False) -> Checked:
    """Validate one event (core, then facets by key); repair first if lenient."""
    kind = kind_of(event)
    working = copy.deepcopy(dict(event))
    warnings: list[Problem] = _repair(working, kind) if lenient else []
    problems = _core_problems(working, kind)
    if lenient:
        tolerated = [p for p in problems if _is_missing_base_field(p)]
        problems = [p for p in problems if p not in tolerated]
        warnings += [Problem(p.pointer, "is missing; accepted") for p in tolerated]
    facet_problems = _facet_problems(working)
    if lenient:
        warnings += [p for p in facet_problems if not _is_missing_base_field(p)]
    else:
        problems += facet_problems
    return Checked(working, kind, _unique(problems), _unique(warnings))


def _unique(problems: list[Problem]) -> tuple[Problem, ...]:
    """Without repeats, the event's own fields before those deep in facets."""
    unique = dict.fromkeys(problems)
    return tuple(sorted(unique, key=lambda p: (p.pointer.count("/"), p.pointer)))


def _repair(event: dict[str, Any], kind: str) -> list[Problem]:
    repaired = []
    if "schemaURL" not in event:
        url = f"{CORE_ID}#/$defs/{kind}"
        event["schemaURL"] = url
        repaired.append(Problem("/schemaURL", f"missing; assumed {url}"))
    when = event.get("eventTime")
    if isinstance(when, str) and (naive := _naive_time(when)) is not None:
        event["eventTime"] = naive.replace(tzinfo=UTC).isoformat()
        repaired.append(Problem("/eventTime", "has no time zone; assumed UTC"))
    run, job = event.get("run"), event.get("job")
    if isinstance(run, dict) and isinstance(run.get("runId"), str):
        if _PLACEHOLDER.match(run["runId"]) and isinstance(job, dict):
            seed = f"{job.get('namespace')}\x00{job.get('name')}\x00{run['runId']}"
            run["runId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, seed))
            repaired.append(
                Problem(
                    "/run/runId",
                    "is a test placeholder; runs of this job share one derived id",
                )
            )
    return repaired


def _naive_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is None and "T" in text else None


def _is_missing_base_field(problem: Problem) -> bool:
    return problem.message == "is required" and bool(
        _BASE_FIELD.search(problem.pointer)
    )


def _core_problems(event: dict[str, Any], kind: str) -> list[Problem]:
    schemas = _schemas()
    found = _problems(schemas.kinds[kind].iter_errors(event), "")
    if not found and not schemas.root.is_valid(event):
        found = [
            Problem("", "matches more than one of RunEvent, DatasetEvent, JobEvent")
        ]
    return found


def _facet_problems(event: dict[str, Any]) -> list[Problem]:
    schemas = _schemas()
    found: list[Problem] = []
    for place, pointer, facets in _facet_spots(event):
        for key, value in facets.items():
            if isinstance(value, dict) and value.get("_deleted") is True:
                continue
            for validator in schemas.facets.get((place, key), ()):
                found += _problems(validator.iter_errors({key: value}), pointer)
    return found


def _facet_spots(event: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    def spot(place: str, holder: Any, key: str, pointer: str):
        value = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(value, dict):
            yield place, f"{pointer}/{key}", value

    yield from spot("run", event.get("run"), "facets", "/run")
    yield from spot("job", event.get("job"), "facets", "/job")
    yield from spot("dataset", event.get("dataset"), "facets", "/dataset")
    for side, place in (("inputs", "input"), ("outputs", "output")):
        datasets = event.get(side)
        for index, dataset in enumerate(datasets if isinstance(datasets, list) else []):
            yield from spot("dataset", dataset, "facets", f"/{side}/{index}")
            yield from spot(place, dataset, f"{place}Facets", f"/{side}/{index}")


def _problems(errors: Iterator[ValidationError], prefix: str) -> list[Problem]:
    seen: dict[tuple[str, str], None] = {}
    for error in errors:
        for leaf in _leaves(error):
            problem = _problem(leaf, prefix)
            seen.setdefault((problem.pointer, problem.message), None)
    return [Problem(p, m) for p, m in sorted(seen)]


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    if error.validator in ("anyOf", "oneOf", "allOf") and error.context:
        for child in error.context:
            yield from _leaves(child)
    else:
        yield error


def _problem(error: ValidationError, prefix: str) -> Problem:
    path = [str(part) for part in error.absolute_path]
    kind, value = error.validator, error.instance
    if kind == "required" and isinstance(value, Mapping):
        missing = next(
            (
                p
                for p in error.validator_value
                if p not in value and repr(p) in error.message
            ),
            None,
        )
        if missing is not None:
            return Problem(_pointer(prefix, [*path, missing]), "is required")
    if kind == "format":
        message = f"{_short(value)} is not a valid {error.validator_value}"
    elif kind == "type":
        message = f"must be of type {error.validator_value}"
    elif kind == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        message = f"{_short(value)} is not one of {allowed}"
    else:
        message = error.message if len(error.message) <= 120 else f"fails {kind}"
    return Problem(_pointer(prefix, path), message)


def _pointer(prefix: str, parts: list[str]) -> str:
    escaped = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return prefix + "".join(f"/{part}" for part in escaped)


def _short(value: Any) -> str:
    text = (
        json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    )
    return repr(text if len(text) <= 60 else text[:57] + "...")


@dataclass(frozen=True)
class _Schemas:
    root: Draft202012Validator
    kinds: dict[str, Draft202012Validator]
    facets: dict[tuple[str, str], tuple[Draft202012Validator, ...]]


def _places(name: str) -> tuple[str, ...]:
    """Where a facet schema's facets may appear, read from its file name."""
    if name == "LineageFacet":
        return ("job", "dataset")
    if name == "BaseSubsetDatasetFacet":
        return ("input", "output")
    for suffix, place in (
        ("InputDatasetFacet", "input"),
        ("OutputDatasetFacet", "output"),
        ("DatasetFacet", "dataset"),
        ("JobFacet", "job"),
        ("RunFacet", "run"),
    ):
        if name.endswith(suffix):
            return (place,)
    return ()


@cache
def _schemas() -> _Schemas:
    folder = files("lineage") / "schemas"
    core = json.loads((folder / "OpenLineage.json").read_text(encoding="utf-8"))
    resources = [(core["$id"], Resource.from_contents(core))]
    facet_files = []
    for entry in sorted((folder / "facets").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            contents = json.loads(entry.read_text(encoding="utf-8"))
            resources.append((contents["$id"], Resource.from_contents(contents)))
            facet_files.append((entry.name[: -len(".json")], contents))
    registry = Registry().with_resources(resources)
    checker = _format_checker()

    def validator(schema: dict[str, Any]) -> Draft202012Validator:
        return Draft202012Validator(schema, registry=registry, format_checker=checker)

    facets: dict[tuple[str, str], tuple[Draft202012Validator, ...]] = {}
    for name, contents in facet_files:
        for place in _places(name):
            for key in contents.get("properties", {}):
                facets[(place, key)] = (
                    *facets.get((place, key), ()),
                    validator(contents),
                )
    return _Schemas(
        root=validator(core),
        kinds={kind: validator({"$ref": f"{CORE_ID}#/$defs/{kind}"}) for kind in KINDS},
        facets=facets,
    )


def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    missing = [name for name in _NEEDED_FORMATS if name not in checker.checkers]
    if missing:
        # Without these jsonschema skips the formats silently and bad times pass.
        raise ConfigError(
            f"jsonschema cannot check {', '.join(missing)} here: install "
            "'jsonschema[format-nongpl]' (rfc3339-validator, rfc3986-validator)"
        )
    return checker
