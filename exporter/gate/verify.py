"""``gecko-exporter verify``: after a migration, did it go well?

Checks, on one read-only session (see :mod:`exporter.db.oneshot`):

* ``critical_indexes``: every configured critical index exists in the app
  schema and is valid and ready (the ``indexes`` probe's SQL);
* ``invalid_indexes`` / ``index_builds``: no invalid index left in the app
  schemas, no index build still running (the ``migrations`` probe's catalog SQL);
* ``prisma_migrations``: ``_prisma_migrations`` has no failed or unfinished
  row and no deploy holds Prisma's advisory lock;
* ``plan:<query>:<custom|generic>``: the critical queries' plans use their
  index (the ``plans`` probe);
* ``latency:<probe>``: the two latency probes run N times, p95 under the
  thresholds (scan lookup 100 ms, report 2 s by default);
* ``invariant:<name>``: each configured data check returns zero rows
  (``SELECT count(*) FROM (<sql>) AS invariant`` under statement_timeout, in
  the read-only session);
* with a baseline from ``preflight --baseline``: ``baseline_plan:*`` (shape
  changes; a plan that lost its index fails) and ``baseline_latency:*`` (p95
  above ``max_latency_ratio`` x the baseline's, unless below a floor).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from exporter.config import Config, InvariantSettings
from exporter.errors import DatabaseError, DatabaseUnavailable, LockTimeout, StatementTimeout
from exporter.gate.live_measure import (
    Baseline,
    LatencyResult,
    PlanResult,
    measure_latency,
    measure_plans,
)
from exporter.gate.live_report import SCHEMA_VERSION, Check, Status, failures, fmt_seconds
from exporter.probes import indexes as indexes_probe
from exporter.probes import migrations as migrations_probe
from exporter.probes.base import Row, Session
from exporter.probes.sql import qualified

T = TypeVar("T")


@dataclass(frozen=True)
class VerifyOptions:
    runs: int
    baseline: Baseline | None = None
    baseline_path: Path | None = None


@dataclass(frozen=True)
class VerifyResult:
    server_version: int
    checks: tuple[Check, ...]
    plans: tuple[PlanResult, ...]
    latency: tuple[LatencyResult, ...]
    invariants: tuple[dict[str, Any], ...]
    baseline_path: Path | None

    @property
    def passed(self) -> bool:
        return not failures(self.checks)

    def document(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "verify",
            "result": "pass" if self.passed else "fail",
            "failures": [f"{c.name}: {c.summary}" for c in failures(self.checks)],
            "server_version": self.server_version,
            "checks": [c.as_dict() for c in self.checks],
            "plans": [p.as_dict() for p in self.plans],
            "latency": [lat.as_dict() for lat in self.latency],
            "invariants": list(self.invariants),
            "baseline": str(self.baseline_path) if self.baseline_path else None,
        }

    def text(self) -> str:
        from exporter.gate.live_report import render_checks  # noqa: PLC0415 - tiny, local

        head = "verify: PASS" if self.passed else "verify: FAIL"
        lines = [head, *render_checks(self.checks)]
        bad = failures(self.checks)
        if bad:
            lines.append(f"{len(bad)} failure(s): " + ", ".join(c.name for c in bad))
        return "\n".join(lines) + "\n"


def describe_db_error(exc: DatabaseError) -> str:
    """A database error as a check summary (pure)."""
    if isinstance(exc, LockTimeout):
        return "lock not available within lock_timeout (DDL holds or waits for a lock)"
    if isinstance(exc, StatementTimeout):
        return "cancelled at statement_timeout"
    return str(exc)


async def guarded(session: Session, name: str, run: Callable[[], Awaitable[T]]) -> T | Check:
    """Run one step; a query error becomes a failing check (the session is reset).

    An unreachable server is not a check result: it propagates (exit 2).
    """
    try:
        return await run()
    except DatabaseUnavailable:
        raise
    except DatabaseError as exc:
        try:
            await session.fetch("ROLLBACK")  # a failed explicit transaction (PG < 16 plans)
        except DatabaseUnavailable:
            raise
        except DatabaseError:
            pass
        return Check(name, "fail", f"could not run: {describe_db_error(exc)}")


# -- pure evaluations -------------------------------------------------------------
def critical_index_check(rows: Sequence[Row], names: Sequence[str]) -> Check:
    found = {str(r["index_name"]): r for r in rows}
    missing = [n for n in names if n not in found]
    invalid = [n for n in names if n in found and not (found[n]["valid"] and found[n]["ready"])]
    details = {"missing": missing, "invalid": invalid, "checked": list(names)}
    if missing or invalid:
        parts = []
        if missing:
            parts.append("missing: " + ", ".join(missing))
        if invalid:
            parts.append("invalid: " + ", ".join(invalid))
        return Check("critical_indexes", "fail", "; ".join(parts), details)
    return Check("critical_indexes", "pass", f"{len(names)} present and valid", details)


def catalog_checks(catalog: Row) -> list[Check]:
    """Invalid indexes and running builds from the migrations probe's catalog row."""
    invalid = list(catalog.get("invalid") or [])
    total = int(catalog.get("invalid_total") or 0)
    names = [f"{v['schema_name']}.{v['index_name']} on {v['table_name']}" for v in invalid]
    more = f" (+{total - len(names)} more)" if total > len(names) else ""
    checks = [
        Check(
            "invalid_indexes",
            "fail" if total else "pass",
            (f"{total} invalid: " + ", ".join(names) + more) if total else "none",
            {"count": total, "indexes": invalid},
        )
    ]
    builds = list(catalog.get("builds") or [])
    n_builds = int(catalog.get("builds_total") or 0)
    checks.append(
        Check(
            "index_builds",
            "fail" if n_builds else "pass",
            (
                f"{n_builds} running: "
                + ", ".join(
                    f"{b['index_name']} on {b['table_name']} ({b['phase']})" for b in builds
                )
            )
            if n_builds
            else "none running",
            {"count": n_builds, "builds": builds},
        )
    )
    return checks


def prisma_check(catalog: Row, state: migrations_probe.MigrationState, table: str) -> Check:
    holders = int(catalog.get("lock_holders") or 0)
    details: dict[str, Any] = {
        "table_present": state.table_present,
        "applied": state.applied,
        "failed": state.failed,
        "unfinished": state.unfinished,
        "rolled_back": state.rolled_back,
        "advisory_lock_held": holders > 0,
        "failed_migrations": [
            {"migration_name": r.get("migration_name"), "logs": r.get("logs")}
            for r in state.failed_rows
        ],
    }
    if not state.table_present:
        return Check("prisma_migrations", "fail", f"{table} not found", details)
    problems = []
    if state.failed:
        names = ", ".join(str(r.get("migration_name")) for r in state.failed_rows)
        problems.append(f"{state.failed} failed ({names})")
    if state.unfinished:
        problems.append(f"{state.unfinished} unfinished (running or crashed)")
    if holders:
        problems.append("a migration is running (Prisma's advisory lock is held)")
    if problems:
        return Check("prisma_migrations", "fail", "; ".join(problems), details)
    return Check("prisma_migrations", "pass", f"{state.applied} applied, none failed", details)


def plan_checks(plans: Sequence[PlanResult], tables: Mapping[str, str]) -> list[Check]:
    """Each critical query's plans against its index (``tables``: index -> its table).

    * uses the index: pass;
    * a custom plan that reads the index's table with a sequential scan (no
      index at all): fail;
    * a custom plan on another index of that table (e.g. the redundant
      ``Scan_status_finishedAt_idx`` of an incrementally migrated database),
      and any generic plan without the index: warning. Under the default
      ``plan_cache_mode=auto`` a prepared statement switches to the generic
      plan only when its estimated cost is not higher than the custom plans'.

    Against a ``--baseline``, a plan that used its index and lost it fails.
    """
    checks = []
    for p in plans:
        name = f"plan:{p.query}:{p.plan}"
        if p.uses_index:
            checks.append(Check(name, "pass", f"uses {p.index}", p.as_dict()))
            continue
        table = tables.get(p.index) or p.index.split("_", 1)[0]
        status: Status = "warn"
        if p.plan == "custom" and (table in p.seq_scans or not p.indexes):
            status = "fail"
        used = f" (uses {', '.join(p.indexes)})" if p.indexes else ""
        checks.append(Check(name, status, f"does not use {p.index}{used}: {p.shape}", p.as_dict()))
    return checks


def latency_checks(latency: Sequence[LatencyResult], thresholds: dict[str, float]) -> list[Check]:
    checks = []
    for lat in latency:
        limit = thresholds[lat.probe]
        name = f"latency:{lat.probe}"
        details = {**lat.as_dict(), "threshold_seconds": limit}
        if lat.p95_seconds is None:
            checks.append(Check(name, "not_visible", "no run (no done scan to time)", details))
            continue
        ok = lat.p95_seconds <= limit
        checks.append(
            Check(
                name,
                "pass" if ok else "fail",
                f"p95 {fmt_seconds(lat.p95_seconds)} over {lat.runs} runs "
                f"({'<=' if ok else '>'} {fmt_seconds(limit)})",
                details,
            )
        )
    return checks


def baseline_checks(
    baseline: Baseline,
    plans: Sequence[PlanResult],
    latency: Sequence[LatencyResult],
    *,
    max_ratio: float,
    floor_seconds: float,
) -> list[Check]:
    checks: list[Check] = []
    for p in plans:
        before = baseline.plans.get((p.query, p.plan))
        name = f"baseline_plan:{p.query}:{p.plan}"
        if before is None:
            checks.append(Check(name, "not_visible", "not in the baseline"))
            continue
        details: dict[str, Any] = {"before": before.shape, "after": p.shape}
        if before.fingerprint == p.fingerprint:
            checks.append(Check(name, "pass", "same plan shape", details))
        elif before.uses_index and not p.uses_index:
            checks.append(
                Check(name, "fail", f"lost {p.index}: {before.shape} -> {p.shape}", details)
            )
        else:
            checks.append(
                Check(name, "warn", f"shape changed: {before.shape} -> {p.shape}", details)
            )
    for lat in latency:
        before_lat = baseline.latency.get(lat.probe)
        name = f"baseline_latency:{lat.probe}"
        if before_lat is None or before_lat.p95_seconds is None or lat.p95_seconds is None:
            checks.append(Check(name, "not_visible", "no p95 to compare"))
            continue
        base = max(before_lat.p95_seconds, 1e-9)
        ratio = lat.p95_seconds / base
        lat_details: dict[str, Any] = {
            "before_p95_seconds": before_lat.p95_seconds,
            "after_p95_seconds": lat.p95_seconds,
            "ratio": round(ratio, 3),
            "max_ratio": max_ratio,
        }
        slower = ratio > max_ratio and lat.p95_seconds > floor_seconds
        checks.append(
            Check(
                name,
                "fail" if slower else "pass",
                f"p95 {fmt_seconds(before_lat.p95_seconds)} -> {fmt_seconds(lat.p95_seconds)} "
                f"(x{ratio:.2f}, limit x{max_ratio:g})",
                lat_details,
            )
        )
    return checks


def invariant_sql(invariant: InvariantSettings) -> str:
    """The count wrapped around a configured check (its SQL is validated as one query)."""
    return f"SELECT count(*)::bigint AS n FROM ({invariant.sql}\n) AS invariant"


# -- the command ------------------------------------------------------------------
async def run_verify(session: Session, settings: Config, options: VerifyOptions) -> VerifyResult:
    checks: list[Check] = []
    names = list(dict.fromkeys(settings.critical_indexes))
    rows = await guarded(
        session,
        "critical_indexes",
        lambda: session.fetch(indexes_probe.SQL, {"schema": settings.app_schema, "names": names}),
    )
    index_tables: dict[str, str] = {}
    if isinstance(rows, Check):
        checks.append(rows)
    else:
        checks.append(critical_index_check(rows, names))
        index_tables = {str(r["index_name"]): str(r["table_name"]) for r in rows}

    mig = settings.migrations
    key_high, key_low = migrations_probe.split_key(mig.advisory_lock_key)
    catalog = await guarded(
        session,
        "migrations_catalog",
        lambda: session.fetch_one(
            migrations_probe.CATALOG_SQL,
            {
                "schemas": settings.table_schemas(),
                "table": qualified(settings.app_schema, mig.table),
                "key_high": key_high,
                "key_low": key_low,
                "max_builds": mig.max_index_builds,
                "max_invalid": mig.max_invalid_indexes,
            },
        ),
    )
    if isinstance(catalog, Check) or catalog is None:
        checks.append(catalog or Check("migrations_catalog", "fail", "no row"))
    else:
        checks.extend(catalog_checks(catalog))
        present = bool(catalog["table_present"])
        table_row = (
            await guarded(
                session,
                "prisma_migrations",
                lambda: session.fetch_one(
                    migrations_probe.table_sql(settings.app_schema, mig.table)
                ),
            )
            if present
            else None
        )
        if isinstance(table_row, Check):
            checks.append(table_row)
        else:
            state = migrations_probe.migration_state(present, table_row)
            checks.append(prisma_check(catalog, state, mig.table))

    plans = await guarded(session, "plans", lambda: measure_plans(session, settings))
    plan_list: list[PlanResult] = []
    if isinstance(plans, Check):
        checks.append(plans)
    else:
        plan_list = plans
        checks.extend(plan_checks(plans, index_tables))

    gate = settings.gate
    latency = await guarded(
        session, "latency", lambda: measure_latency(session, settings, options.runs)
    )
    latency_list: list[LatencyResult] = []
    if isinstance(latency, Check):
        checks.append(latency)
    else:
        latency_list = latency
        checks.extend(
            latency_checks(
                latency,
                {
                    "scan_lookup": gate.scan_lookup_p95_max_seconds,
                    "report": gate.report_p95_max_seconds,
                },
            )
        )

    invariant_rows: list[dict[str, Any]] = []
    for inv in gate.invariants:
        name = f"invariant:{inv.name}"
        row = await guarded(session, name, partial(session.fetch_one, invariant_sql(inv)))
        if isinstance(row, Check):
            checks.append(row)
            invariant_rows.append({"name": inv.name, "rows": None, "error": row.summary})
            continue
        n = int(row["n"]) if row else 0
        invariant_rows.append({"name": inv.name, "rows": n, "error": None})
        checks.append(
            Check(
                name,
                "fail" if n else "pass",
                f"{n} row(s) violate it" if n else "0 rows",
                {"rows": n},
            )
        )

    if options.baseline is not None:
        checks.extend(
            baseline_checks(
                options.baseline,
                plan_list,
                latency_list,
                max_ratio=gate.max_latency_ratio,
                floor_seconds=gate.latency_ratio_floor_seconds,
            )
        )
    return VerifyResult(
        server_version=session.server_version,
        checks=tuple(checks),
        plans=tuple(plan_list),
        latency=tuple(latency_list),
        invariants=tuple(invariant_rows),
        baseline_path=options.baseline_path,
    )
