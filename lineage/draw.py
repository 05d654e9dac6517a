"""Draw the estate's dataset graph: Graphviz DOT, Mermaid, or SVG.

Each system is a cluster (DOT) or subgraph (Mermaid) holding its datasets;
each flow edge is an arrow labelled with its job. Only dataset and job names
appear, never a field map or a record, so a drawing holds no personal data.
The same ledger always draws the same text: systems, datasets and edges are
sorted. SVG is Graphviz's rendering of the DOT text, so it needs ``dot``.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Literal

from sqlmodel import Session, select

from lethe.errors import ConfigError, InputError, LetheError
from lineage.graph import system_of
from lineage.models import FlowEdge

FORMATS = ("dot", "mermaid", "svg")
Format = Literal["dot", "mermaid", "svg"]
Edges = list[tuple[str, str, str]]
DOT_TIMEOUT_SECONDS = 60


def draw(db: Session, estate_name: str, fmt: Format) -> str:
    """The dataset graph of ``estate_name`` as text in ``fmt``."""
    if fmt not in FORMATS:
        raise InputError(f"unknown graph format {fmt!r}; use one of dot, mermaid, svg")
    edges = _edges(db, estate_name)
    if fmt == "mermaid":
        return to_mermaid(edges)
    if fmt == "dot":
        return to_dot(edges)
    return to_svg(to_dot(edges))


def _edges(db: Session, estate_name: str) -> Edges:
    rows = db.exec(
        select(FlowEdge.source, FlowEdge.target, FlowEdge.job).where(
            FlowEdge.estate == estate_name
        )
    )
    return sorted((source, target, job) for source, target, job in rows)


def _by_system(edges: Edges) -> dict[str, list[str]]:
    datasets = sorted(
        {name for source, target, _ in edges for name in (source, target)}
    )
    systems: dict[str, list[str]] = {}
    for dataset in datasets:
        systems.setdefault(system_of(dataset), []).append(dataset)
    return dict(sorted(systems.items()))


def _local(dataset: str) -> str:
    return dataset.split(":", 1)[1] if ":" in dataset else dataset


def to_dot(edges: Edges) -> str:
    def quoted(text: str) -> str:
        text = " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'

    lines = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box];"]
    for number, (system, datasets) in enumerate(_by_system(edges).items()):
        lines.append(f"  subgraph cluster_{number} {{")
        lines.append(f"    label={quoted(system)};")
        lines += [f"    {quoted(d)} [label={quoted(_local(d))}];" for d in datasets]
        lines.append("  }")
    lines += [
        f"  {quoted(source)} -> {quoted(target)} [label={quoted(job)}];"
        for source, target, job in edges
    ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(edges: Edges) -> str:
    def quoted(text: str) -> str:
        text = " ".join(text.split())
        for char, entity in (('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
            text = text.replace(char, entity)
        return f'"{text}"'

    lines = ["flowchart LR"]
    ids: dict[str, str] = {}
    for number, (system, datasets) in enumerate(_by_system(edges).items()):
        lines.append(f"  subgraph s{number}[{quoted(system)}]")
        for dataset in datasets:
            ids[dataset] = f"d{len(ids)}"
            lines.append(f"    {ids[dataset]}[{quoted(_local(dataset))}]")
        lines.append("  end")
    lines += [
        f"  {ids[source]} -->|{quoted(job)}| {ids[target]}"
        for source, target, job in edges
    ]
    return "\n".join(lines) + "\n"


def to_svg(dot_text: str) -> str:
    """Render DOT text with Graphviz's ``dot``."""
    program = shutil.which("dot")
    if program is None:
        raise ConfigError(
            "drawing SVG needs Graphviz's `dot` on PATH: install graphviz "
            "(apt-get install graphviz, brew install graphviz), or use the "
            "dot or mermaid format"
        )
    try:
        done = subprocess.run(
            [program, "-Tsvg"],
            input=dot_text,
            capture_output=True,
            text=True,
            timeout=DOT_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LetheError(
            f"Graphviz's dot did not finish within {DOT_TIMEOUT_SECONDS} s; "
            "draw the dot format and render it separately"
        ) from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise LetheError(f"Graphviz's dot could not render the graph: {first}")
    return done.stdout
