"""Divergence reconciliation on the sample estate: quiet while copies agree,
an alert once more than 5 % of sampled countries differ."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import select

from flows.divergence import rules_of
from lethe import ledger
from lethe.errors import ConfigError
from lineage.models import Alert
from tests.helpers import Estate


def test_divergence_rules_are_validated() -> None:
    with pytest.raises(ConfigError, match="needs name, source"):
        rules_of({"divergence": [{"name": "x"}]})
    with pytest.raises(ConfigError, match="threshold is a share"):
        rules_of(
            {
                "divergence": [
                    {
                        "name": "x",
                        "source": "a:b",
                        "source_field": "f",
                        "target": "c:d",
                        "target_field": "g",
                        "threshold": 5,
                    }
                ]
            }
        )


@pytest.mark.e2e
def test_divergence_alerts_above_the_threshold(estate: Estate) -> None:
    from flows.capture import capture_lineage
    from flows.divergence import check_divergence

    capture_lineage()
    quiet = check_divergence()["contact_country"]
    assert quiet["compared"] == quiet["sampled"] > 10
    assert quiet["divergent"] == 0 and not quiet["alert"]

    # A downstream job rewrote the country of a few contacts (about 10 %).
    engine = create_engine(estate.settings["systems"]["warehouse"]["url"])
    with engine.begin() as db:
        ids = [
            r[0]
            for r in db.execute(text("SELECT sf_id FROM raw_sf_contact ORDER BY sf_id"))
        ]
        changed = ids[: max(2, len(ids) // 10)]
        for sf_id in changed:
            db.execute(
                text("UPDATE raw_sf_contact SET country = 'Atlantis' WHERE sf_id = :i"),
                {"i": sf_id},
            )
    engine.dispose()
    loud = check_divergence()["contact_country"]
    assert loud["divergent"] == len(changed) and loud["alert"]
    assert loud["ratio"] > 0.05
    with ledger.session() as db:
        alerts = db.exec(select(Alert).where(Alert.kind == "divergence")).all()
    assert len(alerts) == 1 and "Atlantis" not in alerts[0].detail
