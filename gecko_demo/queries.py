"""The Gecko Advisor app's SQL as Prisma 5.22 sends it (schema reference §4).

Prisma qualifies every table and column with ``"public"``, binds every
literal (``'done'``, limits, offsets) as a parameter and prepares statements
for reuse. Placeholders here are psycopg's ``%s``; the server sees ``$1``,
``$2``, ... exactly as from Prisma.
"""

from __future__ import annotations

from typing import Final

from exporter.probes import app_queries
from gecko_demo.datagen import EVIDENCE_COLUMNS, ISSUE_COLUMNS, SCAN_COLUMNS


def _cols(table: str, columns: tuple[str, ...]) -> str:
    return ",".join(f'"public"."{table}"."{c}"' for c in columns)


def _placeholders(count: int) -> str:
    return "(" + ",".join(["%s"] * count) + ")"


SCAN_ALL: Final = _cols("Scan", SCAN_COLUMNS)

# The read shapes the exporter's probes replay are shared with them.
# §4.1 dedupe lookup: (normalizedInput, 'done', now - 15 min, 1, 0)
DEDUPE_LOOKUP: Final = app_queries.dedupe_lookup("public")
# §4.4 report: scan by slug, then its evidence and issues
REPORT_SCAN_BY_SLUG: Final = app_queries.scan_by_slug("public")
REPORT_EVIDENCE: Final = app_queries.evidence_for_scan("public")
REPORT_ISSUES: Final = app_queries.issues_for_scan("public")
# §4.5 recent reports with the whole-Evidence count: ('done', 10, 0)
RECENT_REPORTS: Final = app_queries.recent_reports("public")

# §4.2 scan creation (v2 URL scans and stubs)
# every column but the three the app never writes on create
SCAN_INSERT_COLUMNS: Final = tuple(
    c for c in SCAN_COLUMNS if c not in ("dedupeOfId", "shareMessage", "userId")
)
SCAN_INSERT: Final = (
    'INSERT INTO "public"."Scan" ('
    + ",".join(f'"{c}"' for c in SCAN_INSERT_COLUMNS)
    + ") VALUES "
    + _placeholders(len(SCAN_INSERT_COLUMNS))
    + f" RETURNING {SCAN_ALL}"
)

# §4.3 status polling and the progress write-back
STATUS_POLL: Final = (
    'SELECT "public"."Scan"."id","public"."Scan"."status","public"."Scan"."score",'
    '"public"."Scan"."label","public"."Scan"."slug","public"."Scan"."updatedAt",'
    '"public"."Scan"."progress" FROM "public"."Scan"'
    ' WHERE ("public"."Scan"."id" = %s AND 1=1) LIMIT %s OFFSET %s'
)
PROGRESS_UPDATE: Final = (
    'UPDATE "public"."Scan" SET "progress" = %s, "updatedAt" = %s'
    ' WHERE ("public"."Scan"."id" = %s AND 1=1)'
)

# §4.4 report by id (``/api/scan/:id``)
REPORT_SCAN_BY_ID: Final = (
    f'SELECT {SCAN_ALL} FROM "public"."Scan"'
    ' WHERE ("public"."Scan"."id" = %s AND 1=1) LIMIT %s OFFSET %s'
)

# §4.6 worker writes
WORKER_START: Final = (
    'UPDATE "public"."Scan" SET "status" = %s, "startedAt" = %s, "progress" = %s,'
    ' "updatedAt" = %s WHERE ("public"."Scan"."id" = %s AND 1=1)'
)
CACHED_LISTS: Final = (
    'SELECT "public"."CachedList"."id","public"."CachedList"."source",'
    '"public"."CachedList"."version","public"."CachedList"."fetchedAt",'
    '"public"."CachedList"."data" FROM "public"."CachedList" WHERE 1=1 OFFSET %s'
)
EVIDENCE_INSERT_COLUMNS: Final = EVIDENCE_COLUMNS
ISSUE_INSERT_COLUMNS: Final = ISSUE_COLUMNS
_ISSUE_VALUE: Final = (
    '(%s,%s,%s,CAST(%s::text AS "public"."IssueSeverity"),%s,%s,%s,%s,%s,%s,%s,%s,%s)'
)


def evidence_insert(rows: int) -> str:
    """Prisma ``createMany`` of ``rows`` Evidence rows (one statement)."""
    return (
        'INSERT INTO "public"."Evidence" ('
        + ",".join(f'"{c}"' for c in EVIDENCE_INSERT_COLUMNS)
        + ") VALUES "
        + ",".join([_placeholders(len(EVIDENCE_INSERT_COLUMNS))] * rows)
        + " ON CONFLICT DO NOTHING"
    )


def issue_insert(rows: int) -> str:
    """Prisma ``createMany`` of ``rows`` Issue rows (enum cast as Prisma binds it)."""
    return (
        'INSERT INTO "public"."Issue" ('
        + ",".join(f'"{c}"' for c in ISSUE_INSERT_COLUMNS)
        + ") VALUES "
        + ",".join([_ISSUE_VALUE] * rows)
    )


SCORING_EVIDENCE: Final = (
    f'SELECT {_cols("Evidence", EVIDENCE_COLUMNS)} FROM "public"."Evidence"'
    ' WHERE "public"."Evidence"."scanId" = %s OFFSET %s'
)
SCORING_SCAN: Final = (
    'SELECT "public"."Scan"."id","public"."Scan"."input","public"."Scan"."normalizedInput",'
    '"public"."Scan"."targetType" FROM "public"."Scan"'
    ' WHERE ("public"."Scan"."id" = %s AND 1=1) LIMIT %s OFFSET %s'
)
ISSUE_DELETE: Final = 'DELETE FROM "public"."Issue" WHERE "public"."Issue"."scanId" = %s'
SCAN_DONE: Final = (
    'UPDATE "public"."Scan" SET "score" = %s, "label" = %s, "summary" = %s, "meta" = %s,'
    ' "status" = %s, "finishedAt" = %s, "progress" = %s, "updatedAt" = %s'
    ' WHERE ("public"."Scan"."id" = %s AND 1=1)'
)
SCAN_ERROR: Final = (
    'UPDATE "public"."Scan" SET "status" = %s, "finishedAt" = %s, "summary" = %s,'
    ' "updatedAt" = %s WHERE ("public"."Scan"."id" = %s AND 1=1)'
)

# §4.7 other traffic
HEALTH_CHECK: Final = "SELECT 1"
USER_BY_ID: Final = (
    'SELECT "public"."User"."id","public"."User"."email","public"."User"."name",'
    '"public"."User"."emailVerified","public"."User"."authMethod"::text,'
    '"public"."User"."subscription"::text,"public"."User"."subscriptionStatus"::text,'
    '"public"."User"."createdAt","public"."User"."updatedAt" FROM "public"."User"'
    ' WHERE ("public"."User"."id" = %s AND 1=1) LIMIT %s OFFSET %s'
)
USER_HISTORY: Final = (
    f'SELECT {SCAN_ALL} FROM "public"."Scan" WHERE ("public"."Scan"."userId" = %s'
    ' AND "public"."Scan"."createdAt" >= %s) ORDER BY "public"."Scan"."createdAt" DESC'
    " LIMIT %s OFFSET %s"
)
