"""Lineage at scale: capture of 1M copies, and "where is this person" at 1M and 10M.

Everything runs on SQLite ledgers made with lethe's engine and schema, in a
temporary folder, and each lethe number is printed next to a raw ``sqlite3``
floor measured in the same run:

- ingest: 1M copies (200k Salesforce Contacts x 5 datasets, one job run a
  dataset) through ``lineage.bulk.record_manifest_bulk``, against a plain
  ``executemany`` of the same rows into a second ledger with the same schema.
  The raw rows are made beforehand (digests and sealed keys included), and the
  time that took is shown on its own line: the cost of digesting and sealing.
  The ORM path, ``lineage.record_manifest``, runs on a small sample for scale.
- look-ups: ``lineage.subjects_for`` + ``lineage.where`` for random e-mail
  digests (one session a look-up), for people with one Contact and for people
  the CRM holds twice (an e-mail naming two Contacts), against the indexed
  SELECTs that read the same rows (identity links, copies, flow edges, dataset
  aliases) from the same file. The raw arm names the index it uses (``INDEXED
  BY ix_copy_subject_digest``); lethe's statements get whatever plan SQLite
  picks, which is printed. The arms alternate, so both see the same cache; the
  ratio is of the medians. Each kind of look-up stops after ``--budget``
  seconds (at least 5 are timed). ``--try-index`` adds the index this
  benchmark argues for (see bench/README-lineage.md) before the look-ups.
  At 10M copies the ledger is filled with raw inserts (lethe's metadata, the
  same rows lethe writes, indexes built after the load): capture at 10M is not
  what is measured there, the look-up is.

    python bench/lineage.py [--copies 1000000] [--lookups 1000] [--pair-lookups 20]
                            [--big 10000000] [--skip-big] [--budget 30]
                            [--try-index] [--workdir DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder heads sys.path, and this file is named
# lineage.py: drop the folder so that ``lineage`` is lethe's package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from itertools import islice  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlmodel import Session  # noqa: E402

import lineage  # noqa: E402
from lethe import ledger  # noqa: E402
from lethe.estate.build import FLOWS  # noqa: E402
from lethe.identity import normalize_email  # noqa: E402
from lethe.runtime import current  # noqa: E402
from lethe.vault import Vault  # noqa: E402
from lineage.bulk import record_manifest_bulk  # noqa: E402
from lineage.models import Copy, IdentityLink  # noqa: E402

ESTATE = "bench"
FINISHED = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
# How SQLite stores FINISHED (SQLAlchemy's DateTime); checked against lethe's rows.
FINISHED_SQLITE = FINISHED.strftime("%Y-%m-%d %H:%M:%S.%f")
COPY_COLUMNS = (
    "estate, system, dataset, key_digest, subject_digest, key_sealed, job, run_id, "
    "copied_at, learned_from"
)
INSERT_COPY = f"INSERT INTO copy ({COPY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"  # noqa: S608
INSERT_LINK = (
    "INSERT INTO identity_link (estate, kind, identity_digest, subject_digest, "
    "source_object, seen_at) VALUES (?,?,?,?,?,?)"
)
INSERT_RUN = (
    "INSERT INTO capture_run (run_id, estate, job, captured_at, copies) "
    "VALUES (?,?,?,?,?)"
)
# The raw look-up: the rows lethe's look-up reads, by the same indexes.
RAW_LINKS = (
    "SELECT subject_digest FROM identity_link "
    "WHERE estate = ? AND identity_digest IN (?)"
)
# Named, because for two or more subjects SQLite's planner takes ix_copy_estate.
RAW_COPIES = (
    "SELECT * FROM copy INDEXED BY ix_copy_subject_digest "
    "WHERE estate = ? AND subject_digest IN ({}) AND erased_at IS NULL"
)
RAW_EDGES = "SELECT * FROM flow_edge WHERE estate = ?"
RAW_ALIASES = "SELECT * FROM dataset_alias WHERE estate = ?"
# --try-index: the index look-ups need and lethe's schema (lineage/models.py) lacks.
TRY_INDEX = "ix_copy_estate_subject_digest ON copy (estate, subject_digest)"


@dataclass(frozen=True)
class Target:
    """One dataset a job copies every Contact into, under the dataset's own key."""

    dataset: str
    job: str
    key: Callable[[int], str]


TARGETS = (
    Target("warehouse:raw.sf_contact", "nightly_extract", lambda n: contact_id(n)),
    Target("analytics:events", "event_forwarding", lambda n: f"user-{n:08d}"),
    Target("erp:A_BusinessPartner", "erp_sync", lambda n: f"{10_000_000 + n}"),
    Target("segment:identify", "segment_sync", lambda n: f"anon-{n:012x}"),
    Target("mixpanel:people", "mixpanel_export", lambda n: f"mp-{n:09d}"),
)
# Every copy in raw.sf_contact is also in the mart through a passthrough edge.
DATASETS_FOUND = len(TARGETS) + 1
WARM_UP = 50  # look-ups of each arm before timing starts
MIN_TIMED = 5  # timed look-ups of each kind, whatever the time budget


def contact_id(n: int) -> str:
    return f"003{n:012d}"


def email(n: int) -> str:
    return f"Person.{n}@Example.org"


def twice_email(n: int) -> str:
    """The e-mail of a person the CRM holds twice (two Contacts)."""
    return f"Twice.{n}@Example.org"


def twice_contacts(subjects: int, pairs: int) -> list[tuple[int, int]]:
    chosen = random.Random(11).sample(range(subjects), 2 * pairs)
    return list(zip(chosen[::2], chosen[1::2], strict=True))


def manifest(target: Target, subjects: range) -> dict[str, Any]:
    return {
        "job": target.job,
        "run_id": f"{target.job}-{subjects.start}",
        "finished_at": FINISHED.isoformat(),
        "outputs": [
            {
                "dataset": target.dataset,
                "records": [
                    {"key": target.key(n), "source_key": contact_id(n)}
                    for n in subjects
                ],
            }
        ],
    }


def copy_rows(
    vault: Vault, db: Session, target: Target, subjects: range
) -> Iterator[tuple[Any, ...]]:
    """The rows capture writes for one target, as raw tuples."""
    lineage_key = vault.lineage_key(db)
    system = target.dataset.split(":", 1)[0]
    run_id = f"{target.job}-{subjects.start}"
    for n in subjects:
        key = target.key(n)
        yield (
            ESTATE,
            system,
            target.dataset,
            lineage.key_digest(vault, key),
            lineage.subject_digest(vault, contact_id(n)),
            vault.seal(db, lineage_key, key),
            target.job,
            run_id,
            FINISHED_SQLITE,
            "manifest",
        )


def link_rows(vault: Vault, subjects: int, pairs: int) -> Iterator[tuple[Any, ...]]:
    """Every Contact's e-mail, then the e-mails that name two Contacts each."""
    people = [(email(n), n) for n in range(subjects)]
    for number, contacts in enumerate(twice_contacts(subjects, pairs)):
        people += [(twice_email(number), n) for n in contacts]
    for address, n in people:
        yield (
            ESTATE,
            "email",
            vault.digest("email", normalize_email(address)),
            lineage.subject_digest(vault, contact_id(n)),
            "Contact",
            FINISHED_SQLITE,
        )


def insert_links(path: Path, vault: Vault, subjects: int, pairs: int) -> None:
    raw = raw_connection(path)
    raw.execute("BEGIN")
    for chunk in batches(link_rows(vault, subjects, pairs), 100_000):
        raw.executemany(INSERT_LINK, chunk)
    raw.execute("COMMIT")
    raw.close()


def new_ledger(path: Path) -> Engine:
    engine = ledger.make_engine(f"sqlite:///{path}")
    ledger.create_schema(engine)
    return engine


def raw_connection(path: Path) -> sqlite3.Connection:
    """A plain connection with the pragmas lethe's engine sets."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA secure_delete=ON")
    return connection


def batches(rows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def size_of(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:,.0f} MiB"


# --- ingest ------------------------------------------------------------------


@dataclass
class Ingest:
    copies: int
    lethe_s: float
    raw_s: float
    crypto_s: float
    orm_copies: int
    orm_s: float
    lethe_size: str
    raw_size: str


def ingest(
    workdir: Path, vault: Vault, copies: int, pairs: int, orm_sample: int
) -> Ingest:
    per_target = copies // len(TARGETS)
    subjects = range(per_target)

    lethe_path = workdir / "lethe-1m.db"
    engine = new_ledger(lethe_path)
    lethe_s = 0.0
    with Session(engine) as db:
        lineage.load_flow_edges(db, ESTATE, FLOWS)
        vault.lineage_key(db)
        db.commit()
        for target in TARGETS:
            run = manifest(target, subjects)  # the job's manifest, read in
            started = time.perf_counter()
            record_manifest_bulk(db, vault, ESTATE, run)
            db.commit()
            lethe_s += time.perf_counter() - started
            del run
    insert_links(lethe_path, vault, per_target, pairs)

    raw_path = workdir / "raw-1m.db"
    new_ledger(raw_path).dispose()
    crypto_s = raw_s = 0.0
    raw = raw_connection(raw_path)
    with Session(engine) as db:  # the vault's data key lives in lethe's ledger
        for target in TARGETS:
            started = time.perf_counter()
            rows = list(copy_rows(vault, db, target, subjects))
            crypto_s += time.perf_counter() - started
            started = time.perf_counter()
            raw.execute("BEGIN")
            raw.executemany(INSERT_COPY, rows)
            raw.execute(
                INSERT_RUN,
                (rows[0][7], ESTATE, target.job, FINISHED_SQLITE, len(rows)),
            )
            raw.execute("COMMIT")
            raw_s += time.perf_counter() - started
    check_same_rows(lethe_path, raw, copies)
    raw.close()
    raw_size = size_of(raw_path)
    raw_path.unlink()

    orm_s = orm_ingest(workdir, vault, orm_sample)
    engine.dispose()
    return Ingest(
        copies=per_target * len(TARGETS),
        lethe_s=lethe_s,
        raw_s=raw_s,
        crypto_s=crypto_s,
        orm_copies=orm_sample,
        orm_s=orm_s,
        lethe_size=size_of(lethe_path),
        raw_size=raw_size,
    )


def check_same_rows(lethe_path: Path, raw: sqlite3.Connection, copies: int) -> None:
    """Both arms wrote the same copies (sealed keys differ: fresh nonces)."""
    columns = COPY_COLUMNS.replace("key_sealed, ", "")
    query = f"SELECT id, {columns}, erased_at FROM copy ORDER BY id"  # noqa: S608
    with sqlite3.connect(lethe_path) as ours:
        counts = [
            db.execute("SELECT count(*) FROM copy").fetchone()[0] for db in (ours, raw)
        ]
        if counts != [copies, copies]:
            sys.exit(f"expected {copies:,} copies in each arm, found {counts}")
        for a, b in zip(ours.execute(query), raw.execute(query), strict=True):
            if a != b:
                sys.exit(f"the raw arm wrote a different copy: {a} != {b}")


def orm_ingest(workdir: Path, vault: Vault, copies: int) -> float:
    """``record_manifest`` (one ORM object a copy) on a sample, for scale."""
    path = workdir / "orm-sample.db"
    engine = new_ledger(path)
    run = manifest(TARGETS[0], range(copies))
    with Session(engine) as db:
        vault.lineage_key(db)
        db.commit()
        started = time.perf_counter()
        lineage.record_manifest(db, vault, ESTATE, run)
        db.commit()
        elapsed = time.perf_counter() - started
    engine.dispose()
    path.unlink()
    return elapsed


# --- the 10M ledger ----------------------------------------------------------


def build_big(
    workdir: Path, vault: Vault, copies: int, pairs: int, key_db: Path
) -> float:
    """A ledger of ``copies`` copies, written raw, with lethe's schema and indexes."""
    path = workdir / "big.db"
    engine = new_ledger(path)
    with Session(engine) as db:
        lineage.load_flow_edges(db, ESTATE, FLOWS)
        db.commit()
    engine.dispose()  # a pooled connection would not see the indexes dropped below
    indexes = [
        index
        for table in (Copy.__table__, IdentityLink.__table__)  # type: ignore[attr-defined]
        for index in table.indexes
    ]
    subjects = range(copies // len(TARGETS))
    started = time.perf_counter()
    raw = raw_connection(path)
    for index in indexes:
        raw.execute(f"DROP INDEX {index.name}")
    raw.execute("PRAGMA journal_mode=OFF")
    raw.execute("PRAGMA synchronous=OFF")
    raw.execute("PRAGMA cache_size=-1000000")
    key_engine = ledger.make_engine(f"sqlite:///{key_db}")  # holds the data key
    with Session(key_engine) as db:
        for target in TARGETS:
            raw.execute("BEGIN")
            for chunk in batches(copy_rows(vault, db, target, subjects), 100_000):
                raw.executemany(INSERT_COPY, chunk)
            run_id = f"{target.job}-{subjects.start}"
            raw.execute(
                INSERT_RUN, (run_id, ESTATE, target.job, FINISHED_SQLITE, len(subjects))
            )
            raw.execute("COMMIT")
    raw.close()
    key_engine.dispose()
    insert_links(path, vault, len(subjects), pairs)
    engine = ledger.make_engine(f"sqlite:///{path}")
    for index in indexes:  # the same CREATE INDEX statements lethe's schema issues
        index.create(engine)
    engine.dispose()
    return time.perf_counter() - started


# --- look-ups ----------------------------------------------------------------


@dataclass
class Lookups:
    """One kind of look-up at one ledger size: times of both arms."""

    copies: int
    records: int  # Contacts the e-mail names
    raw_ms: list[float]
    lethe_ms: list[float]
    plans: list[str]
    size: str


def lookups(
    path: Path, vault: Vault, subjects: int, count: int, pairs: int, budget: float
) -> list[Lookups]:
    """Time both arms for people with one record and for people with two."""
    engine = ledger.make_engine(f"sqlite:///{path}")
    raw = raw_connection(path)
    chosen = random.Random(5).sample(range(subjects), count + WARM_UP)
    cases = [
        (1, [email(n) for n in chosen]),
        (2, [twice_email(n) for n in range(pairs)]),
    ]
    results = []
    for records, addresses in cases:
        digests = [vault.digest("email", normalize_email(a)) for a in addresses]
        warm_up = WARM_UP if records == 1 else 1
        raw_ms, lethe_ms = time_arms(engine, raw, digests, records, warm_up, budget)
        plans = query_plans(engine, raw, digests[0])
        copies = subjects * len(TARGETS)
        results.append(Lookups(copies, records, raw_ms, lethe_ms, plans, size_of(path)))
    raw.close()
    engine.dispose()
    return results


def time_arms(
    engine: Engine,
    raw: sqlite3.Connection,
    digests: list[str],
    records: int,
    warm_up: int,
    budget: float,
) -> tuple[list[float], list[float]]:
    """Alternate the arms over ``digests``; stop early once ``budget`` s are spent."""
    raw_ms: list[float] = []
    lethe_ms: list[float] = []
    arms: list[tuple[list[float], Callable[[Any, str], int], Any]] = [
        (raw_ms, raw_lookup, raw),
        (lethe_ms, lethe_lookup, engine),
    ]
    deadline = time.perf_counter() + budget
    for number, digest in enumerate(digests):
        if time.perf_counter() > deadline and len(lethe_ms) >= MIN_TIMED:
            break
        if number < warm_up and time.perf_counter() > deadline - budget * 0.9:
            warm_up = number  # warming up would eat the budget: a scan, likely
        for times, look, handle in arms if number % 2 else arms[::-1]:
            started = time.perf_counter()
            keys = look(handle, digest)
            elapsed = (time.perf_counter() - started) * 1000
            if keys != DATASETS_FOUND * records:
                sys.exit(f"a look-up found {keys} keys, not {DATASETS_FOUND * records}")
            if number >= warm_up:
                times.append(elapsed)
    return raw_ms, lethe_ms


def lethe_lookup(engine: Engine, digest: str) -> int:
    with Session(engine) as db:
        subjects = lineage.subjects_for(db, ESTATE, [digest])
        return sum(h.key_count for h in lineage.where(db, ESTATE, subjects))


def raw_lookup(raw: sqlite3.Connection, digest: str) -> int:
    subjects = [row[0] for row in raw.execute(RAW_LINKS, (ESTATE, digest))]
    copies = raw.execute(
        RAW_COPIES.format(",".join("?" * len(subjects))), (ESTATE, *subjects)
    ).fetchall()
    edges = raw.execute(RAW_EDGES, (ESTATE,)).fetchall()
    raw.execute(RAW_ALIASES, (ESTATE,)).fetchall()  # none here, but where reads them
    # copy columns: id, estate, system, dataset, key_digest, ...;
    # flow_edge columns: id, estate, source, target, job, key_passthrough, ...
    passthrough = {(e[2], e[3]) for e in edges if e[5]}
    inferred = [c for c in copies for s, _ in passthrough if c[3] == s]
    return len(copies) + len(inferred)


def query_plans(engine: Engine, raw: sqlite3.Connection, digest: str) -> list[str]:
    """SQLite's plan for the statements lethe's look-up sends on the big tables."""
    sent: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        sent.append((statement, params))

    event.listen(engine, "before_cursor_execute", keep)
    lethe_lookup(engine, digest)
    event.remove(engine, "before_cursor_execute", keep)
    plans = []
    for statement, params in sent:
        table = re.search(r"\bFROM\s+(\w+)", statement)[1]  # type: ignore[index]
        if table not in ("copy", "identity_link"):
            continue  # flow edges and aliases: a few rows by estate
        steps = raw.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
        plans.append(f"{table}: " + "; ".join(step[-1] for step in steps))
    return plans


# --- output ------------------------------------------------------------------


def print_ingest(result: Ingest) -> None:
    raw_rate = result.copies / result.raw_s
    print(
        f"\ningest: {result.copies:,} copies ({result.copies // len(TARGETS):,} "
        f"Contacts x {len(TARGETS)} datasets, one job run a dataset)"
    )
    print(f"{'arm':<42} {'copies':>10} {'s':>7} {'copies/s':>9} {'vs raw':>7}")
    print("-" * 79)
    lines = [
        ("raw sqlite3 executemany (rows made first)", result.copies, result.raw_s),
        ("digest + seal of those rows (not in raw)", result.copies, result.crypto_s),
        ("lineage.bulk.record_manifest_bulk", result.copies, result.lethe_s),
        ("lineage.record_manifest (ORM, a sample)", result.orm_copies, result.orm_s),
    ]
    for name, copies, seconds in lines:
        ratio = raw_rate / (copies / seconds)
        print(
            f"{name:<42} {copies:>10,} {seconds:>7.2f} {copies / seconds:>9,.0f} "
            f"{ratio:>6.2f}x"
        )
    floor = result.raw_s + result.crypto_s
    orm_estimate = result.orm_s / result.orm_copies * result.copies
    print(
        f"record_manifest_bulk / (raw + digest + seal): {result.lethe_s / floor:.2f}x; "
        f"record_manifest would take ~{orm_estimate:,.0f} s for {result.copies:,}"
    )
    print(
        f"ledger: {result.lethe_size} with identity links (raw arm {result.raw_size})"
    )


def try_index(path: Path) -> None:
    """Add the index this benchmark argues for, to measure it before lethe has it."""
    raw = raw_connection(path)
    raw.execute(f"CREATE INDEX IF NOT EXISTS {TRY_INDEX}")
    raw.close()


def print_lookups(results: list[Lookups], built: dict[int, float]) -> None:
    print(
        "\nwhere is this person: subjects_for + where for one e-mail digest, "
        "one session a look-up"
    )
    print(
        f"{'copies':>11} {'records':>7} {'look-ups':>8} {'raw ms med/p95':>16} "
        f"{'lethe ms med/p95':>18} {'lethe/raw':>9} {'ledger':>10}"
    )
    print("-" * 85)
    for result in results:
        ratio = statistics.median(result.lethe_ms) / statistics.median(result.raw_ms)
        print(
            f"{result.copies:>11,} {result.records:>7} {len(result.raw_ms):>8,} "
            f"{summary(result.raw_ms):>16} {summary(result.lethe_ms):>18} "
            f"{ratio:>8.1f}x {result.size:>10}"
        )
    print(
        "records: Contacts the e-mail names (each holds 5 copies); the raw arm "
        "names its index (INDEXED BY ix_copy_subject_digest)"
    )
    for copies, seconds in built.items():
        print(
            f"the {copies:,}-copy ledger was written raw in {seconds:.0f} s "
            "(lethe's schema; indexes built after the load)"
        )
    print("\nSQLite's plans for lethe's look-up statements:")
    for result in results:
        for plan in result.plans:
            print(f"  {result.copies:>11,} x{result.records}  {plan}")
    if any("copy USING INDEX ix_copy_estate " in p for r in results for p in r.plans):
        print(
            "  ix_copy_estate (estate=?) reads every copy of the estate: see "
            "bench/README-lineage.md"
        )


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"{statistics.median(ordered):.2f} / {p95:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--copies", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=1_000)
    parser.add_argument(
        "--pair-lookups",
        type=int,
        default=20,
        help="look-ups of people with two records (slow: see the plans)",
    )
    parser.add_argument("--big", type=int, default=10_000_000)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--orm-sample", type=int, default=20_000)
    parser.add_argument(
        "--budget",
        type=float,
        default=30.0,
        help="seconds for each kind of look-up at each size (at least 5 are timed)",
    )
    parser.add_argument(
        "--try-index",
        action="store_true",
        help=f"add CREATE INDEX {TRY_INDEX} before the look-ups",
    )
    parser.add_argument("--workdir", type=Path, help="kept afterwards if given")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lethe-bench-lineage-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["LETHE_HOME"] = str(workdir / "home")
    os.environ.pop("LETHE_DATABASE_URL", None)
    vault = current().vault
    pairs = args.pair_lookups + 1  # one warms up
    started = time.perf_counter()
    print(
        f"lineage bench: SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores, "
        f"ledgers in {workdir}"
    )
    try:
        result = ingest(workdir, vault, args.copies, pairs, args.orm_sample)
        print_ingest(result)
        small = workdir / "lethe-1m.db"
        subjects = args.copies // len(TARGETS)
        if args.try_index:
            try_index(small)
            print(f"\n--try-index: CREATE INDEX {TRY_INDEX}")
        found = lookups(small, vault, subjects, args.lookups, pairs, args.budget)
        built: dict[int, float] = {}
        if not args.skip_big:
            big = workdir / "big.db"
            built[args.big] = build_big(workdir, vault, args.big, pairs, key_db=small)
            if args.try_index:
                try_index(big)
            big_subjects = args.big // len(TARGETS)
            found += lookups(big, vault, big_subjects, args.lookups, pairs, args.budget)
        print_lookups(found, built)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntook {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
