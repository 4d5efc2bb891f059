"""The Gecko Advisor app's own statements, in the exact shapes Prisma 5.22 sends.

Literals such as ``'done'`` are bind parameters, columns are schema-qualified,
``findFirst`` ends in ``LIMIT $n OFFSET $m``: probes exercise the same plans
(including the generic plan a prepared statement switches to) as production.
"""

from __future__ import annotations

from exporter.probes.sql import qualified, quote_ident

SCAN_COLUMNS = (
    "id", "targetType", "input", "normalizedInput", "status", "score", "progress", "label",
    "summary", "startedAt", "finishedAt", "slug", "source", "dedupeOfId", "shareMessage", "meta",
    "userId", "isPublic", "isProScan", "scannerIp", "createdAt", "updatedAt",
)  # fmt: skip
EVIDENCE_COLUMNS = ("id", "scanId", "kind", "severity", "title", "details", "createdAt")
ISSUE_COLUMNS = (
    "id", "scanId", "key", "severity", "category", "title", "summary", "howToFix",
    "whyItMatters", "references", "sortWeight", "createdAt", "updatedAt",
)  # fmt: skip


def _cols(schema: str, table: str, columns: tuple[str, ...], casts: dict[str, str]) -> str:
    t = qualified(schema, table)
    return ", ".join(f"{t}.{quote_ident(c)}{casts.get(c, '')}" for c in columns)


def dedupe_lookup(schema: str) -> str:
    """§4.1: ``$1`` normalizedInput, ``$2`` 'done', ``$3`` window start, ``$4`` 1, ``$5`` 0."""
    t = qualified(schema, "Scan")
    return (
        f"SELECT {_cols(schema, 'Scan', SCAN_COLUMNS, {})} FROM {t} "
        f'WHERE ({t}."normalizedInput" = %s AND {t}."status" = %s AND {t}."finishedAt" >= %s) '
        f'ORDER BY {t}."finishedAt" DESC LIMIT %s OFFSET %s'
    )


def scan_by_slug(schema: str) -> str:
    """§4.4 first statement: ``$1`` slug, ``$2`` 1, ``$3`` 0."""
    t = qualified(schema, "Scan")
    return (
        f"SELECT {_cols(schema, 'Scan', SCAN_COLUMNS, {})} FROM {t} "
        f'WHERE ({t}."slug" = %s AND 1=1) LIMIT %s OFFSET %s'
    )


def scan_by_id(schema: str) -> str:
    """§4.4 first statement by id (``/api/scan/:id``): ``$1`` scan id, ``$2`` 1, ``$3`` 0."""
    t = qualified(schema, "Scan")
    return (
        f"SELECT {_cols(schema, 'Scan', SCAN_COLUMNS, {})} FROM {t} "
        f'WHERE ({t}."id" = %s AND 1=1) LIMIT %s OFFSET %s'
    )


def evidence_for_scan(schema: str) -> str:
    """§4.4 second statement: ``$1`` scan id, ``$2`` 0."""
    t = qualified(schema, "Evidence")
    return (
        f"SELECT {_cols(schema, 'Evidence', EVIDENCE_COLUMNS, {})} FROM {t} "
        f'WHERE {t}."scanId" IN (%s) ORDER BY {t}."createdAt" ASC OFFSET %s'
    )


def issues_for_scan(schema: str) -> str:
    """§4.4 third statement: ``$1`` scan id, ``$2`` 0."""
    t = qualified(schema, "Issue")
    return (
        f"SELECT {_cols(schema, 'Issue', ISSUE_COLUMNS, {'severity': '::text'})} FROM {t} "
        f'WHERE {t}."scanId" IN (%s) ORDER BY {t}."sortWeight" ASC, {t}."createdAt" ASC '
        "OFFSET %s"
    )


def recent_reports(schema: str) -> str:
    """§4.5: ``$1`` 'done', ``$2`` 10, ``$3`` 0 (groups the whole Evidence table)."""
    s = qualified(schema, "Scan")
    e = qualified(schema, "Evidence")
    return (
        'SELECT s."id", s."slug", s."input", s."score", s."label", s."createdAt", '
        'COALESCE(ev."_aggr_count_evidence", 0) AS "_aggr_count_evidence" '
        f'FROM {s} s LEFT JOIN (SELECT "scanId", COUNT(*) AS "_aggr_count_evidence" '
        f'FROM {e} WHERE 1=1 GROUP BY "scanId") ev ON s."id" = ev."scanId" '
        'WHERE s."status" = %s ORDER BY s."createdAt" DESC LIMIT %s OFFSET %s'
    )


def recent_done_scans(schema: str) -> str:
    """Sampling of realistic probe inputs (uses ``Scan_recent_reports_idx``)."""
    t = qualified(schema, "Scan")
    return (
        f'SELECT "id", "slug", "normalizedInput" FROM {t} '
        'WHERE "status" = %s ORDER BY "createdAt" DESC LIMIT %s'
    )
