"""The honest level of what happened in one system, in words an auditor reads.

Levels (issue-tracker wording, DESIGN "honest outcomes"): deleted
(logically), deleted and physically purged by DATE, anonymised, retained
under BASIS until DATE, deferred by a legal hold, awaiting the vendor, failed,
no data held.
"""

from __future__ import annotations

from erasure.models import AWAITING_VENDOR, DEFERRED, DONE, FAILED, NO_DATA, SystemStep

ERASED_ACTIONS = ("deleted", "already_absent")


def is_settled(step: SystemStep) -> bool:
    return step.state == NO_DATA or (step.state == DONE and step.verified)


def outcome_label(step: SystemStep) -> str:
    """The honest level of what happened, as the certificate states it."""
    if step.state == NO_DATA:
        return "no data held"
    if step.state == DEFERRED:
        return "deferred by legal hold"
    if step.state == AWAITING_VENDOR:
        sla = step.dates.get("vendor_sla_by")
        return f"awaiting vendor (SLA {sla})" if sla else "awaiting vendor"
    if step.state == FAILED:
        return "failed"
    if step.action == "retained":
        label = f"retained under {step.basis} until {step.retained_until}"
        if any(part.get("also_anonymise") for part in step.parts.values()):
            label += "; personal fields anonymised"
        return label
    if step.action == "anonymised":
        return "anonymised"
    purged_by = step.dates.get("physically_purged_by")
    if step.action in ERASED_ACTIONS and purged_by:
        if step.action == "already_absent":
            return f"already absent; deleted, physically purged by {purged_by}"
        deleted_at = step.dates.get("deleted_at", "")
        level = (
            "deleted" if purged_by[:10] <= deleted_at[:10] else "deleted (logically)"
        )
        return f"{level}, physically purged by {purged_by}"
    if step.action == "already_absent":
        return "already absent"
    if step.action == "deleted" and "query_all_may_list_until" in step.dates:
        return "deleted (hard delete: out of the Recycle Bin, not recoverable)"
    return "deleted (logically)" if step.action == "deleted" else step.state
