"""Drawing the dataset graph: every dataset and edge, the same text every time,
output Graphviz and Mermaid accept, and no field names or records."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

import lineage
from lethe import ledger
from lethe.cli.lineage_graph import graph_command
from lethe.errors import ConfigError, InputError
from lethe.estate.build import FLOWS
from lineage.draw import draw

ESTATE = "draw-test"
EDGES = {(flow["from"], flow["to"], flow["job"]) for flow in FLOWS}
DATASETS = {name for source, target, _ in EDGES for name in (source, target)}
DOT_NODE = re.compile(r'^    "([^"]+)" \[label="([^"]+)"\];$')
DOT_EDGE = re.compile(r'^  "([^"]+)" -> "([^"]+)" \[label="([^"]+)"\];$')
MERMAID_SUBGRAPH = re.compile(r'^  subgraph (s\d+)\["([^"]+)"\]$')
MERMAID_NODE = re.compile(r'^    (d\d+)\["([^"]+)"\]$')
MERMAID_EDGE = re.compile(r'^  (d\d+) -->\|"([^"]+)"\| (d\d+)$')


def _drawn(fmt: str, flows: list[dict] = FLOWS, estate: str = ESTATE) -> str:
    with ledger.session() as db:
        lineage.load_flow_edges(db, estate, flows)
        return draw(db, estate, fmt)  # type: ignore[arg-type]


def _parse_dot(text: str) -> tuple[set[str], set[tuple[str, str, str]]]:
    lines = text.splitlines()
    assert lines[0] == "digraph lineage {" and lines[-1] == "}"
    nodes = {m[1] for line in lines if (m := DOT_NODE.match(line))}
    edges = {(m[1], m[2], m[3]) for line in lines if (m := DOT_EDGE.match(line))}
    return nodes, edges


def _parse_mermaid(text: str) -> tuple[set[str], set[tuple[str, str, str]]]:
    """Read the text back, refusing any line outside the shape draw writes."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    names: dict[str, str] = {}
    edges = set()
    system = None
    for line in lines[1:]:
        if subgraph := MERMAID_SUBGRAPH.match(line):
            assert system is None, "subgraphs do not nest"
            system = subgraph[2]
        elif line == "  end":
            assert system is not None
            system = None
        elif node := MERMAID_NODE.match(line):
            assert system is not None and node[1] not in names
            names[node[1]] = f"{system}:{node[2]}"
        elif edge := MERMAID_EDGE.match(line):
            assert system is None
            edges.add((names[edge[1]], names[edge[3]], edge[2]))
        else:
            pytest.fail(f"not a line of a Mermaid flowchart: {line!r}")
    assert system is None
    return set(names.values()), edges


def test_draw_dot_has_every_dataset_and_edge_in_system_clusters(home: Path) -> None:
    text = _drawn("dot")
    nodes, edges = _parse_dot(text)

    assert nodes == DATASETS and edges == EDGES
    assert text.count("subgraph cluster_") == 4
    for system in ("analytics", "erp", "salesforce", "warehouse"):
        assert f'    label="{system}";' in text
    assert '"warehouse:raw.sf_contact" [label="raw.sf_contact"];' in text


def test_draw_mermaid_has_every_dataset_and_edge_in_system_subgraphs(
    home: Path,
) -> None:
    nodes, edges = _parse_mermaid(_drawn("mermaid"))

    assert nodes == DATASETS and edges == EDGES


@pytest.mark.parametrize("fmt", ["dot", "mermaid"])
def test_draw_is_deterministic_whatever_the_capture_order(home: Path, fmt: str) -> None:
    forwards = _drawn(fmt)
    again = _drawn(fmt)
    backwards = _drawn(fmt, list(reversed(FLOWS)), estate="draw-reversed")

    assert forwards == again == backwards


@pytest.mark.parametrize("fmt", ["dot", "mermaid"])
def test_draw_holds_no_field_names(home: Path, fmt: str) -> None:
    text = _drawn(fmt)

    fields = {
        name
        for flow in FLOWS
        for pair in flow.get("fields", {}).items()
        for name in pair
    }
    assert not any(re.search(rf"\b{re.escape(f)}\b", text) for f in fields - {"Id"})


def test_draw_quotes_awkward_names(home: Path) -> None:
    flows = [{"job": 'say "hi" <b>', "from": 'warehouse:raw."Odd"', "to": "erp:x\\y"}]
    dot = _drawn("dot", flows)
    mermaid = _drawn("mermaid", flows)

    assert (
        '"warehouse:raw.\\"Odd\\"" -> "erp:x\\\\y" [label="say \\"hi\\" <b>"];' in dot
    )
    assert '-->|"say #quot;hi#quot; #lt;b#gt;"|' in mermaid
    if shutil.which("dot"):
        subprocess.run(
            ["dot", "-Tsvg"], input=dot, text=True, check=True, capture_output=True
        )


def test_draw_dot_text_is_accepted_by_graphviz(home: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    done = subprocess.run(
        ["dot", "-Tsvg"], input=_drawn("dot"), text=True, capture_output=True
    )

    assert done.returncode == 0, done.stderr
    assert "<svg" in done.stdout and "erp_account_writeback" in done.stdout


def test_draw_svg_renders_with_graphviz(home: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    svg = _drawn("svg")

    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    assert all(job in svg for _, _, job in EDGES)


def test_draw_svg_without_graphviz_says_what_to_do(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lineage.draw.shutil.which", lambda _name: None)
    with pytest.raises(
        ConfigError, match="install graphviz .* or use the dot or mermaid"
    ):
        _drawn("svg")


def test_draw_refuses_an_unknown_format(home: Path) -> None:
    with pytest.raises(InputError, match="unknown graph format 'png'"):
        _drawn("png")


def test_draw_of_an_estate_without_edges_is_still_valid(home: Path) -> None:
    assert _parse_mermaid(_drawn("mermaid", [])) == (set(), set())
    assert _parse_dot(_drawn("dot", [])) == (set(), set())


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    estate = {"name": ESTATE, "source": "salesforce", "systems": {"salesforce": {}}}
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(estate))
    monkeypatch.setenv("LETHE_ESTATE", str(path))
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("graph")(graph_command)
    return app


def test_graph_cli_prints_mermaid_or_writes_a_file(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mermaid = _drawn("mermaid")
    app = _cli(tmp_path, monkeypatch)
    runner = CliRunner()
    printed = runner.invoke(app, ["graph"])
    out = tmp_path / "lineage.dot"
    written = runner.invoke(app, ["graph", "--format", "dot", "--out", str(out)])
    bad = runner.invoke(app, ["graph", "--format", "png"])

    assert printed.exit_code == 0 and printed.stdout == mermaid
    assert written.exit_code == 0 and out.read_text() == _drawn("dot")
    assert bad.exit_code == 2 and "unknown graph format 'png'" in bad.stderr
