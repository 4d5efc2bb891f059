"""The application's own statements in pg_stat_statements, from real traffic (pure).

The statements probe reads ``pg_stat_statements`` once per interval; this
module finds in those rows the five statements of the Gecko Advisor app that
the latency alerts are about and keeps exporter-owned counters for them:

========================  ===========================================
``scan_lookup``           §4.1 dedupe lookup (``app_queries.dedupe_lookup``)
``report_scan``           §4.4 the report's scan, by slug (or by id)
``report_evidence``       §4.4 the report's evidence
``report_issues``         §4.4 the report's issues
``recent_reports``        §4.5 recent reports with the whole-Evidence count
========================  ===========================================

**Identification by text shape, not by queryid.** A queryid hashes the parse
tree, which holds the *resolved parameter types* (``LIMIT $4`` bound as
``int2`` or left ``unknown`` gives two ids) and the *relation OIDs* (a table
dropped and recreated gives new ids). A stored id, or one computed from the
exporter's own connection, would therefore miss the app's statements whenever
its driver types a parameter differently, and after every table rebuild. The
text pg_stat_statements keeps for an entry does not change with either: it is
the statement as sent, constants replaced by ``$n``. Both that text and the
exporter's own SQL (:mod:`exporter.probes.app_queries`, the shapes Prisma 5.22
sends) are reduced to a *fingerprint* (tokens; parameters, numbers and string
literals as ``?``; comments and whitespace dropped; keywords lower-cased), and
an entry whose fingerprint equals one of the app's is that statement. SQL
comments such as Prisma 7's sqlcommenter tags do not matter, nor does layout.

**Cheap reads.** Texts are only needed for queryids not seen before: the
classification (queryid -> name or "not ours") is cached for as long as the
queryid stays in pg_stat_statements, and the texts are read (``showtext :=
true``, the expensive part: the whole text file) only when unknown queryids
are present, at most once per ``text_refresh_seconds`` (600 s) — or at every run while
one of the five names has no entry at all (right after a reset or a rebuild).
Calls of an entry classified late are not lost: its totals since it was
created are added when it is first counted.

**The exporter's own executions** (its latency probes run these exact shapes)
are left out by role: rows of the exporter's own ``userid`` never count.

**Counters never go down.** Per entry ``(userid, queryid, toplevel)`` the previous totals
are kept; each run adds the positive difference. A total that went down (a
``pg_stat_statements_reset()``, an eviction and re-creation), or a changed
``stats_since`` (PostgreSQL 17+), means the entry started again: its whole
current value is added. The exported counters are the exporter's own sums, so
a reset, an eviction or a new queryid never makes a rate negative.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from exporter.probes import app_queries
from exporter.probes.base import Row
from exporter.samples import Family, counter, gauge

#: the ``query`` label values (a contract)
APP_QUERY_NAMES: tuple[str, ...] = (
    "scan_lookup",
    "report_scan",
    "report_evidence",
    "report_issues",
    "recent_reports",
)
#: texts longer than this are not one of the app's statements (they are ~1.5 kB)
MAX_TEXT_CHARS = 20000

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>/\*.*?\*/|--[^\n]*)
    | (?P<ident>"(?:[^"]|"")*")
    | (?P<string>[eE]?'(?:[^']|'')*')
    | (?P<param>\$\d+|%s)
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<op>::|<=|>=|<>|!=|\|\||\S)
    """,
    re.VERBOSE | re.DOTALL,
)


def fingerprint(sql: str) -> str:
    """The statement's shape: tokens, values as ``?``, no comments or layout (pure).

    ``SELECT a,b FROM t WHERE x = $1 AND 1=1 /*route='x'*/`` and the psycopg
    text ``SELECT a, b FROM t WHERE x = %s AND 1=1`` give the same fingerprint.
    """
    tokens: list[str] = []
    for match in _TOKEN.finditer(sql):
        kind, text = match.lastgroup, match.group()
        if kind in ("space", "comment"):
            continue
        if kind in ("param", "number", "string"):
            tokens.append("?")
        elif kind == "word":
            tokens.append(text.lower())
        else:
            tokens.append(text)
    while tokens and tokens[-1] == ";":
        tokens.pop()
    return " ".join(tokens)


def anchors(shapes: Iterable[str]) -> tuple[tuple[str, ...], ...] | None:
    """What a statement of each of these shapes must contain: its quoted identifiers (pure).

    A fingerprint keeps quoted identifiers as written, so a text with a shape's
    fingerprint contains each of that shape's quoted identifiers verbatim
    (``"Evidence"``, ``"scanId"``); a text that lacks one of each shape's is none of
    the shapes, without tokenizing it. ``None`` when a shape quotes no identifier
    (then every text is fingerprinted).
    """
    out: list[tuple[str, ...]] = []
    for shape in shapes:
        idents = {t for t in shape.split(" ") if len(t) > 2 and t[0] == t[-1] == '"'}
        if not idents:
            return None
        out.append(tuple(sorted(idents, key=len, reverse=True)))
    return tuple(out)


def app_shapes(schema: str) -> dict[str, str]:
    """Fingerprint -> query name of the app's statements in ``schema`` (pure)."""
    sources: list[tuple[str, str]] = [
        ("scan_lookup", app_queries.dedupe_lookup(schema)),
        ("report_scan", app_queries.scan_by_slug(schema)),
        ("report_scan", app_queries.scan_by_id(schema)),
        ("report_evidence", app_queries.evidence_for_scan(schema)),
        ("report_issues", app_queries.issues_for_scan(schema)),
        ("recent_reports", app_queries.recent_reports(schema)),
    ]
    return {fingerprint(sql): name for name, sql in sources}


def texts_sql(schema_sql: str, *, exclude_own_role: bool) -> str:
    """Texts of the queryids passed as ``%s`` (a bigint array) in this database (pure).

    ``schema_sql`` is the extension's schema, already quoted.
    """
    own = "AND s.userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)"
    return f"""
SELECT DISTINCT ON (s.queryid) s.queryid::text AS queryid, s.query AS query
FROM {schema_sql}.pg_stat_statements(showtext := true) s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.queryid = ANY(%s::bigint[]) {own if exclude_own_role else ""}
"""


@dataclass(frozen=True)
class EntryTotals:
    """Totals of one pg_stat_statements entry (``userid``, ``queryid``) at one read."""

    calls: float
    exec_ms: float
    rows: float
    since: str | None

    @classmethod
    def of(cls, row: Mapping[str, object]) -> EntryTotals:
        since = row.get("since")
        return cls(
            _number(row.get("calls")),
            _number(row.get("total_ms")),
            _number(row.get("rows")),
            None if since is None else str(since),
        )

    def minus(self, before: EntryTotals | None) -> EntryTotals:
        """What this entry added since ``before`` (everything when it started again)."""
        restarted = (
            before is None
            or self.calls < before.calls
            or self.exec_ms < before.exec_ms
            or self.rows < before.rows
            or (self.since is not None and self.since != before.since)
        )
        if restarted or before is None:  # (None: for the type checker)
            return self
        return EntryTotals(
            self.calls - before.calls, self.exec_ms - before.exec_ms, self.rows - before.rows, None
        )


def _number(value: object) -> float:
    if value is None:
        return 0.0
    return float(value)  # type: ignore[arg-type]


class AppStatements:
    """Classifies pg_stat_statements entries and sums the app's statements (pure).

    Driven by the statements probe: :meth:`to_classify` names the queryids
    whose text is needed this run (possibly none), :meth:`learn` takes their
    texts, :meth:`update` takes the run's rows.
    """

    def __init__(
        self,
        schema: str,
        *,
        text_refresh_seconds: float = 600.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.shapes = app_shapes(schema)
        self._anchors = anchors(self.shapes)
        self.text_refresh_seconds = text_refresh_seconds
        self.clock = clock or time.monotonic
        #: queryid -> name, or None: not one of the app's statements
        self.names: dict[str, str | None] = {}
        self._previous: dict[tuple[str, str, bool], EntryTotals] = {}
        self._last_texts: float | None = None
        self.totals: dict[str, list[float]] = {n: [0.0, 0.0, 0.0] for n in APP_QUERY_NAMES}
        self.identified: dict[str, bool] = dict.fromkeys(APP_QUERY_NAMES, False)
        #: how many times texts were read (tests and the benchmark look at it)
        self.text_reads = 0

    def classify(self, text: str) -> str | None:
        if len(text) > MAX_TEXT_CHARS:
            return None
        if self._anchors is not None and not any(
            all(ident in text for ident in idents) for idents in self._anchors
        ):
            return None  # most texts: not one of the app's (tokenizing them cost the most)
        return self.shapes.get(fingerprint(text))

    def to_classify(self, rows: Sequence[Row]) -> list[str]:
        """Queryids (of other roles) whose text should be read now; [] when none or not yet."""
        unknown = sorted({str(r["queryid"]) for r in rows if not r.get("own")} - self.names.keys())
        if not unknown:
            return []
        seen = {self.names[str(r["queryid"])] for r in rows if str(r["queryid"]) in self.names}
        missing = any(name not in seen for name in APP_QUERY_NAMES)
        now = self.clock()
        if (
            missing
            or self._last_texts is None
            or now - self._last_texts >= self.text_refresh_seconds
        ):
            return unknown
        return []

    def learn(self, asked: Iterable[str], texts: Sequence[Row]) -> None:
        """Cache the classification of ``asked`` from the texts read for them."""
        self.text_reads += 1
        self._last_texts = self.clock()
        found = {str(r["queryid"]): str(r.get("query") or "") for r in texts}
        for queryid in asked:
            self.names[queryid] = self.classify(found.get(queryid, ""))

    def update(self, rows: Sequence[Row]) -> None:
        """Add this run's positive deltas of the app's entries; refresh ``identified``."""
        present: set[str] = set()
        current: dict[tuple[str, str, bool], EntryTotals] = {}
        for row in rows:
            queryid = str(row["queryid"])
            present.add(queryid)
            name = self.names.get(queryid)
            if name is None or row.get("own"):
                continue
            key = (str(row.get("userid")), queryid, bool(row.get("toplevel", True)))
            totals = EntryTotals.of(row)
            current[key] = totals
            delta = totals.minus(self._previous.get(key))
            sums = self.totals[name]
            sums[0] += delta.calls
            sums[1] += delta.exec_ms / 1000
            sums[2] += delta.rows
        self._previous = current
        # the cache lives as long as its queryid stays in pg_stat_statements
        self.names = {q: n for q, n in self.names.items() if q in present}
        found = {self.names[q] for _, q, _ in current}
        self.identified = {name: name in found for name in APP_QUERY_NAMES}

    def unavailable(self) -> None:
        """pg_stat_statements cannot be read: nothing is identified (counters stay)."""
        self.identified = dict.fromkeys(APP_QUERY_NAMES, False)

    def families(self) -> list[Family]:
        """The ``identified`` state (a per-run family)."""
        return [
            gauge(
                "gecko_app_query_identified",
                "1 when the application's statement has an entry in pg_stat_statements "
                "(identified by its text shape, the exporter's own role left out); 0 when it "
                "has none yet or pg_stat_statements cannot be read.",
                labelnames=("query",),
                values={(n,): 1.0 if self.identified[n] else 0.0 for n in APP_QUERY_NAMES},
            )
        ]

    def persistent(self) -> list[Family]:
        """The exporter-owned counters (never decrease)."""
        return [
            counter(
                "gecko_app_query_calls_total",
                "Calls of the application's statement from real traffic (pg_stat_statements, "
                "exporter's own role left out; resets and evictions never make it go down).",
                labelnames=("query",),
                values={(n,): self.totals[n][0] for n in APP_QUERY_NAMES},
            ),
            counter(
                "gecko_app_query_exec_time_seconds_total",
                "Execution time of the application's statement from real traffic "
                "(pg_stat_statements total_exec_time).",
                labelnames=("query",),
                values={(n,): self.totals[n][1] for n in APP_QUERY_NAMES},
            ),
            counter(
                "gecko_app_query_rows_total",
                "Rows returned by the application's statement from real traffic.",
                labelnames=("query",),
                values={(n,): self.totals[n][2] for n in APP_QUERY_NAMES},
            ),
        ]
