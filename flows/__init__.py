"""Prefect flows: lineage capture and erasure. They take request ids only."""

from flows._prefect import configure

configure()
