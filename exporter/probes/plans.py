"""Plan checks of the app's critical queries, as the app runs them.

Each query of :mod:`exporter.probes.app_queries` that must stay on an index is
explained twice, with realistic bind parameters taken from the most recent done
scan:

``custom``
    ``EXPLAIN (FORMAT JSON, COSTS OFF)`` with the values bound over the
    extended protocol: the plan of the first five executions of a prepared
    statement (the planner sees the values).
``generic``
    the value-independent plan a prepared statement switches to after five
    executions. PostgreSQL 16+: ``EXPLAIN (GENERIC_PLAN)`` on the ``$n`` text.
    Older servers: ``PREPARE`` the statement, ``SET LOCAL plan_cache_mode =
    force_generic_plan`` and ``EXPLAIN EXECUTE`` it, inside one read-only
    transaction (so the setting ends with it, also on error), then
    ``DEALLOCATE``. A failure inside the transaction makes the lane drop the
    connection, prepared statement and all.

The plan tree is reduced to its shape (node types, relations, indexes, join
types, strategies, parent relationships, scan directions; no costs or row
counts) and hashed; a different hash for the same query and plan kind counts
as a plan change and is logged once with the old and new shape
(``query_plan_changed``).

The probe reads application tables (EXPLAIN takes ACCESS SHARE locks on
them), so it runs on the ``app`` lane.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import structlog

from exporter.probes import app_queries
from exporter.probes.base import LaneName, Session
from exporter.probes.latency import window_start
from exporter.probes.sampling import FALLBACK_INPUT, RecentScan, RecentScanSampler
from exporter.samples import Family, counter, gauge

log = structlog.get_logger("exporter.probes.plans")

PlanKind = Literal["custom", "generic"]
PLAN_KINDS: tuple[PlanKind, ...] = ("custom", "generic")

#: Keys of a plan node that make up its shape (everything else is dropped).
SHAPE_KEYS = (
    "Node Type",
    "Relation Name",
    "Index Name",
    "Join Type",
    "Strategy",
    "Parent Relationship",
    "Scan Direction",
)

#: A cuid-like id used when the table holds no done scan yet (a miss still plans).
FALLBACK_SCAN = RecentScan(id="c00000000000000000000000", slug="none0000", normalized_input=None)

#: Server version from which ``EXPLAIN (GENERIC_PLAN)`` exists.
GENERIC_PLAN_VERSION = 160000

Value = str | int | datetime


@dataclass(frozen=True)
class PlanInputs:
    """Realistic bind values for one run."""

    normalized_input: str
    scan: RecentScan
    window_start: datetime


@dataclass(frozen=True)
class CriticalQuery:
    """One app statement that must use ``index``."""

    name: str
    sql: str
    index: str
    params: Callable[[PlanInputs], tuple[Value, ...]]


def critical_queries(schema: str) -> list[CriticalQuery]:
    """The scan lookup, the three report queries and the recent-reports query."""
    return [
        CriticalQuery(
            "scan_lookup",
            app_queries.dedupe_lookup(schema),
            "Scan_dedupe_lookup_idx",
            lambda p: (p.normalized_input, "done", p.window_start, 1, 0),
        ),
        CriticalQuery(
            "report_scan",
            app_queries.scan_by_slug(schema),
            "Scan_slug_key",
            lambda p: (p.scan.slug, 1, 0),
        ),
        CriticalQuery(
            "report_evidence",
            app_queries.evidence_for_scan(schema),
            "Evidence_scan_covering_idx",
            lambda p: (p.scan.id, 0),
        ),
        CriticalQuery(
            "report_issues",
            app_queries.issues_for_scan(schema),
            "Issue_scan_covering_idx",
            lambda p: (p.scan.id, 0),
        ),
        CriticalQuery(
            "recent_reports",
            app_queries.recent_reports(schema),
            "Scan_recent_reports_idx",
            lambda p: ("done", 10, 0),
        ),
    ]


# -- pure SQL helpers ---------------------------------------------------------
def dollar_params(sql: str) -> str:
    """``%s`` placeholders (psycopg) to ``$1..$n`` (server-side parameter syntax)."""
    if "%%" in sql or "%(" in sql:
        raise ValueError("only plain %s placeholders are supported")
    counter_ = iter(range(1, sql.count("%s") + 1))
    return re.sub(r"%s", lambda _m: f"${next(counter_)}", sql)


def statement_name(query: str) -> str:
    return f"gecko_plan_{query}"


def custom_plan_sql(sql: str) -> str:
    return f"EXPLAIN (FORMAT JSON, COSTS OFF) {sql}"


@dataclass(frozen=True)
class Step:
    """One statement of a plan check.

    ``literals``: values for the statement's ``%s`` placeholders, bound client-side
    by the driver (:meth:`Session.fetch_literals`): ``EXECUTE name(...)`` takes no
    bind parameters (``could not determine data type of parameter $1``).
    """

    sql: str
    literals: tuple[Value, ...] | None = None

    @property
    def explains(self) -> bool:
        return self.sql.startswith("EXPLAIN")


def generic_plan_steps(
    server_version: int, query: str, sql: str, values: Sequence[Value]
) -> list[Step]:
    """Statements producing the generic plan; the EXPLAIN is the one returning rows."""
    text = dollar_params(sql)
    if server_version >= GENERIC_PLAN_VERSION:
        return [Step(f"EXPLAIN (GENERIC_PLAN, FORMAT JSON, COSTS OFF) {text}")]
    name = statement_name(query)
    placeholders = ", ".join("%s" for _ in values)
    return [
        Step("BEGIN READ ONLY"),
        Step("SET LOCAL plan_cache_mode = force_generic_plan"),
        Step(f"PREPARE {name} AS {text}"),
        Step(f"EXPLAIN (FORMAT JSON, COSTS OFF) EXECUTE {name}({placeholders})", tuple(values)),
        Step(f"DEALLOCATE {name}"),
        Step("COMMIT"),
    ]


# -- pure plan analysis ---------------------------------------------------------
Shape = dict[str, Any]


def plan_root(explain_output: Any) -> dict[str, Any]:
    """The top plan node of ``EXPLAIN (FORMAT JSON)`` output (list, dict or JSON text)."""
    doc = json.loads(explain_output) if isinstance(explain_output, str) else explain_output
    if isinstance(doc, list):
        doc = doc[0]
    if not isinstance(doc, dict) or not isinstance(doc.get("Plan"), dict):
        raise TypeError("not EXPLAIN (FORMAT JSON) output")
    root: dict[str, Any] = doc["Plan"]
    return root


def plan_shape(node: dict[str, Any]) -> Shape:
    """The node with only :data:`SHAPE_KEYS`, children reduced recursively."""
    shape: Shape = {k: node[k] for k in SHAPE_KEYS if k in node}
    children = node.get("Plans") or []
    if children:
        shape["Plans"] = [plan_shape(child) for child in children]
    return shape


def fingerprint(shape: Shape) -> str:
    canonical = json.dumps(shape, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def uses_index(shape: Shape, index: str) -> bool:
    if shape.get("Index Name") == index:
        return True
    return any(uses_index(child, index) for child in shape.get("Plans", []))


def shape_text(shape: Shape) -> str:
    """A one-line rendering for logs: ``Limit(Index Scan Backward[Scan.Scan_x_idx])``."""
    label = str(shape.get("Node Type", "?"))
    for key in ("Strategy", "Join Type"):
        if key in shape:
            label = f"{shape[key]} {label}"
    if shape.get("Scan Direction") == "Backward":
        label += " Backward"
    target = ".".join(str(shape[k]) for k in ("Relation Name", "Index Name") if k in shape)
    if target:
        label += f"[{target}]"
    children = shape.get("Plans", [])
    if children:
        label += "(" + ", ".join(shape_text(c) for c in children) + ")"
    return label


@dataclass(frozen=True)
class PlanChange:
    query: str
    plan: PlanKind
    old_shape: Shape
    new_shape: Shape


class PlanTracker:
    """Remembers each (query, plan) fingerprint and counts changes (pure)."""

    def __init__(self) -> None:
        self.shapes: dict[tuple[str, PlanKind], tuple[str, Shape]] = {}
        self.changes: dict[tuple[str, PlanKind], int] = {}

    def observe(self, query: str, plan: PlanKind, shape: Shape) -> PlanChange | None:
        key = (query, plan)
        digest = fingerprint(shape)
        previous = self.shapes.get(key)
        self.shapes[key] = (digest, shape)
        self.changes.setdefault(key, 0)
        if previous is None or previous[0] == digest:
            return None
        self.changes[key] += 1
        return PlanChange(query, plan, previous[1], shape)


def uses_index_family(results: dict[tuple[str, PlanKind, str], bool]) -> Family:
    return gauge(
        "gecko_query_plan_uses_index",
        "1 if the current plan of the app query uses its index (custom: planned with the "
        "bound values; generic: the plan a prepared statement switches to).",
        labelnames=("query", "plan", "index"),
        values={key: 1.0 if used else 0.0 for key, used in results.items()},
    )


# -- the probe ------------------------------------------------------------------
class PlansProbe:
    """Explains the critical queries and watches their plan shapes."""

    name = "plans"
    lane: LaneName = "app"

    def __init__(
        self,
        schema: str,
        sampler: RecentScanSampler,
        *,
        window_seconds: float = 900,
        queries: Sequence[CriticalQuery] | None = None,
    ) -> None:
        self.queries = list(queries) if queries is not None else critical_queries(schema)
        self.sampler = sampler
        self.window_seconds = window_seconds
        self.tracker = PlanTracker()

    async def _inputs(self, session: Session, now: float) -> PlanInputs:
        await self.sampler.refresh_if_stale(session)
        scan = self.sampler.next_scan() or FALLBACK_SCAN
        return PlanInputs(
            normalized_input=self.sampler.next_input() or FALLBACK_INPUT,
            scan=scan,
            window_start=window_start(now, self.window_seconds),
        )

    async def _explain(
        self, session: Session, query: CriticalQuery, kind: PlanKind, values: tuple[Value, ...]
    ) -> Shape:
        if kind == "custom":
            rows = await session.fetch(custom_plan_sql(query.sql), values, prepare=False)
        else:
            rows = []
            for step in generic_plan_steps(session.server_version, query.name, query.sql, values):
                if step.literals is None:
                    result = await session.fetch(step.sql, prepare=False)
                else:
                    result = await session.fetch_literals(step.sql, step.literals)
                if step.explains:
                    rows = result
        if not rows:
            raise ValueError(f"EXPLAIN of {query.name} returned no rows")
        return plan_shape(plan_root(next(iter(rows[0].values()))))

    async def collect(self, session: Session, now: float) -> list[Family]:
        inputs = await self._inputs(session, now)
        results: dict[tuple[str, PlanKind, str], bool] = {}
        for query in self.queries:
            values = query.params(inputs)
            for kind in PLAN_KINDS:
                shape = await self._explain(session, query, kind, values)
                results[(query.name, kind, query.index)] = uses_index(shape, query.index)
                change = self.tracker.observe(query.name, kind, shape)
                if change is not None:
                    log.warning(
                        "query_plan_changed",
                        query=change.query,
                        plan=change.plan,
                        index=query.index,
                        uses_index=results[(query.name, kind, query.index)],
                        old_shape=shape_text(change.old_shape),
                        new_shape=shape_text(change.new_shape),
                        old_fingerprint=fingerprint(change.old_shape),
                        new_fingerprint=fingerprint(change.new_shape),
                    )
        return [uses_index_family(results)]

    def persistent(self) -> list[Family]:
        return [
            counter(
                "gecko_query_plan_changes_total",
                "Plan-shape changes of the app query (hash of node types, relations, indexes, "
                "join types, strategies, directions; costs and rows ignored).",
                labelnames=("query", "plan"),
                values={key: float(n) for key, n in self.tracker.changes.items()},
            )
        ]
