"""Bulk API 2.0 ingest work: what a closed delete or hardDelete job does to
the records when its clock reaches JobComplete, and the result CSVs it leaves.

The job rows themselves (state, clock, uploads) live in ``_salesforce_store``;
this module applies an upload row by row, as the org does, so one bad row fails
alone and lands in ``failedResults`` with the org's ``CODE:message:fields --``
text.
"""

from __future__ import annotations

import csv
import io
import re
from typing import TYPE_CHECKING, Any

from lethe.emulators._salesforce_schema import SalesforceError, normal_id

if TYPE_CHECKING:
    from lethe.emulators._salesforce_store import SalesforceStore

DELIMITERS = {
    "COMMA": ",",
    "BACKQUOTE": "`",
    "CARET": "^",
    "PIPE": "|",
    "SEMICOLON": ";",
    "TAB": "\t",
}
OPEN_STATES = ("Open", "UploadComplete", "InProgress")


def csv_text(header: list[str], rows: list[list[str]], line_ending: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator=line_ending)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _bulk_error(error: SalesforceError) -> str:
    fields = ",".join(error.fields)
    return (
        f"{error.code}:{error.message}:{fields} --"
        if fields
        else f"{error.code}:{error.message}:--"
    )


def _job_failure(message: str) -> dict[str, Any]:
    return {
        "state": "Failed",
        "errorMessage": message,
        "_success_csv": None,
        "_failed_csv": None,
    }


def process_job(
    store: SalesforceStore, info: dict[str, Any], upload: str | None
) -> dict[str, Any]:
    """Apply a completed delete/hardDelete job row by row, as the org does."""
    line_ending = "\r\n" if info["lineEnding"] == "CRLF" else "\n"
    if not upload:
        return _job_failure("InvalidBatch : no data was uploaded for this job")
    bare_lf = re.search(r"(?<!\r)\n", upload) is not None
    if (line_ending == "\n" and "\r\n" in upload) or (
        line_ending == "\r\n" and bare_lf
    ):
        return _job_failure(
            "ClientInputError : LineEnding is invalid on user data. Current "
            f"LineEnding setting is {info['lineEnding']}"
        )
    delimiter = DELIMITERS[info["columnDelimiter"]]
    rows = list(csv.reader(io.StringIO(upload, newline=""), delimiter=delimiter))
    header, data = rows[0], [row for row in rows[1:] if row]
    id_column = next((i for i, name in enumerate(header) if name.lower() == "id"), None)
    if id_column is None:
        bad = header[0] if header else ""
        return _job_failure(f"InvalidBatch : Field name not found : {bad}")
    hard = info["operation"] == "hardDelete"
    ok: list[list[str]] = []
    failed: list[list[str]] = []
    for row in data:
        raw = row[id_column] if id_column < len(row) else ""
        error = _bulk_delete_one(store, raw, info["object"], hard=hard)
        if error is None:
            ok.append([normal_id(raw) or raw, "false", *row])
        else:
            failed.append(["", _bulk_error(error), *row])
    return {
        "state": "JobComplete",
        "numberRecordsProcessed": len(data),
        "numberRecordsFailed": len(failed),
        "apiActiveProcessingTime": info["totalProcessingTime"],
        "_success_csv": csv_text(["sf__Id", "sf__Created", *header], ok, line_ending),
        "_failed_csv": csv_text(["sf__Id", "sf__Error", *header], failed, line_ending),
    }


def _bulk_delete_one(
    store: SalesforceStore, raw: str, sobject: str, *, hard: bool
) -> SalesforceError | None:
    normal = normal_id(raw)
    if normal is None:
        return SalesforceError(400, "MALFORMED_ID", "bad id " + raw, ["Id"])
    if store.sobject_of(normal) != sobject:
        why = f"Invalid id value for this SObject type: {raw}"
        return SalesforceError(400, "INVALID_ID_FIELD", why, ["Id"])
    with store._transaction():
        error = store._delete_one(normal, hard=hard, sobject=sobject)
    if error is not None and error.code == "NOT_FOUND":
        return SalesforceError(
            400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"
        )
    return error
