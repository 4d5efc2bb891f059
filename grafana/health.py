"""Dashboard 2: "Gecko Advisor database — health and migrations".

Critical index presence/validity and plan index use as state timelines, plan changes and
applied migrations as annotations, table access patterns, cache hit ratio, dead tuples and
bloat, lock queues, migrations and index builds, and the top statements.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.models import dashboard as dashboard_model

from grafana.panels import (
    DATASOURCE,
    GREEN,
    ORANGE,
    RED,
    Common,
    PanelBuilder,
    Query,
    Step,
    Tile,
    bad_from,
    dashboard,
    info_stat,
    problem_count,
    rate,
    row,
    sel,
    state_lanes,
    table,
    timeseries,
)

UID = "gecko-health"
TITLE = "Gecko Advisor database — health and migrations"

PLAN_CHANGES_ANNOTATION = (
    "sum by (job, instance, query, plan) "
    f"({rate('gecko_query_plan_changes_total', fn='increase')}) > 0"
)
MIGRATION_ANNOTATION = (
    f"sum by (job, instance) ({rate('gecko_migrations_applied', fn='changes')}) > 0"
)


def _ratio(numerator: str, denominator_other: str, by: str) -> str:
    """``num / (num + other)`` of per-second rates, aggregated ``by`` first."""
    num = f"sum by ({by}) ({rate(numerator)})"
    other = f"sum by ({by}) ({rate(denominator_other)})"
    return f"{num} / ({num} + {other})"


#: State tiles that count problems: each is red from 1 on and fires the alert it links to.
PROBLEM_TILES = (
    Tile(
        title="Critical indexes missing",
        description=(
            "Critical indexes of the app schema that do not exist. Bad: anything above 0 "
            "(GeckoCriticalIndexMissing): the lookups they serve fall back to sequential scans."
        ),
        expr=f"sum(1 - {sel('gecko_index_present')})",
        legend="missing",
        runbooks=["GeckoCriticalIndexMissing"],
    ),
    Tile(
        title="Invalid indexes",
        description=(
            "Invalid indexes in the app schemas (left by a failed CREATE INDEX "
            "CONCURRENTLY). Bad: anything above 0 (GeckoInvalidIndex): they cost "
            "writes and serve no reads; the table below names them."
        ),
        expr=f"max({sel('gecko_invalid_indexes')})",
        legend="invalid",
        runbooks=["GeckoInvalidIndex"],
    ),
    Tile(
        title="Plans not using their index",
        description=(
            "Watched query plans (custom and generic) that no longer use the "
            "critical index they should. Bad: anything above 0 "
            "(GeckoQueryPlanRegression)."
        ),
        expr=f"sum(1 - {sel('gecko_query_plan_uses_index')})",
        legend="regressed plans",
        runbooks=["GeckoQueryPlanRegression"],
    ),
    Tile(
        title="Failed migrations",
        description=(
            "Prisma migrations started but neither finished nor rolled back. "
            "Bad: anything above 0 (GeckoMigrationFailed): prisma migrate deploy "
            "refuses to run (P3009) until it is resolved."
        ),
        expr=f"max({sel('gecko_migrations_failed')})",
        legend="failed",
        runbooks=["GeckoMigrationFailed"],
    ),
)

#: State tiles without a threshold: where the migrations stand.
MIGRATION_TILES = (
    Tile(
        title="Migrations applied",
        description=(
            "Finished rows in _prisma_migrations. Bad: lower than the number of "
            "migrations in the deployed release, or dropping (table restored)."
        ),
        expr=f"max({sel('gecko_migrations_applied')})",
        legend="applied",
        runbooks=["GeckoMigrationFailed"],
    ),
    Tile(
        title="Last migration finished",
        description=(
            "When the newest applied migration finished. Bad: a deploy happened but "
            "this did not move (the migration did not run), or it moved outside a "
            "deploy window."
        ),
        expr=f"max({sel('gecko_migration_last_finished_timestamp_seconds')}) * 1000",
        legend="finished",
        runbooks=["GeckoMigrationFailed"],
        unit="dateTimeFromNow",
    ),
)


def _state_panels() -> list[PanelBuilder]:
    return [
        *(problem_count(tile) for tile in PROBLEM_TILES),
        *(info_stat(tile) for tile in MIGRATION_TILES),
    ]


def _index_panels() -> list[PanelBuilder]:
    return [
        state_lanes(
            "Critical index present",
            "Whether each critical index exists. Bad: a red MISSING lane "
            "(GeckoCriticalIndexMissing) — dropped by a migration or never created.",
            Query(f"min by (index) ({sel('gecko_index_present')})", legend="{{index}}"),
            ["GeckoCriticalIndexMissing"],
            good="present",
            bad="MISSING",
        ),
        state_lanes(
            "Critical index valid",
            "Whether each critical index is valid and ready (indisvalid and "
            "indisready). Bad: a red INVALID lane (GeckoInvalidIndex) — the planner "
            "ignores it; rebuild it with REINDEX INDEX CONCURRENTLY.",
            Query(f"min by (index) ({sel('gecko_index_valid')})", legend="{{index}}"),
            ["GeckoInvalidIndex"],
            good="valid",
            bad="INVALID",
        ),
        state_lanes(
            "Plan uses critical index",
            "For each watched query and plan kind (custom/generic), whether the plan "
            "uses its critical index. Bad: a red SEQ SCAN lane "
            "(GeckoQueryPlanRegression); plan changes are marked as annotations.",
            Query(
                f"min by (query, plan, index) ({sel('gecko_query_plan_uses_index')})",
                legend="{{query}} ({{plan}}) → {{index}}",
            ),
            ["GeckoQueryPlanRegression"],
            good="uses index",
            bad="NOT USING INDEX",
        ),
        timeseries(
            Common(
                title="Plan shape changes",
                description=(
                    "Plan-shape fingerprint changes per watched query and plan kind. Bad: a "
                    "change not caused by a deploy or ANALYZE, especially together with a "
                    'red lane on "Plan uses critical index".'
                ),
                queries=[
                    Query(
                        "sum by (query, plan) "
                        f"({rate('gecko_query_plan_changes_total', fn='increase')})",
                        legend="{{query}} ({{plan}})",
                    )
                ],
                runbooks=["GeckoQueryPlanRegression"],
                min=0,
            ),
            bars=True,
        ),
        table(
            Common(
                title="Invalid indexes by name",
                description=(
                    "Every invalid index in the app schemas. Bad: any row "
                    "(GeckoInvalidIndex); drop it, or REINDEX INDEX CONCURRENTLY it once the "
                    "cause (often a unique violation) is fixed."
                ),
                queries=[
                    Query(
                        f"max by (job, instance, table, index) ({sel('gecko_invalid_index')})",
                        instant=True,
                        table=True,
                    )
                ],
                runbooks=["GeckoInvalidIndex"],
            ),
            hide_columns=("Time", "Value"),
        ),
        timeseries(
            Common(
                title="Critical index scans per second",
                description=(
                    "Index scans of each critical index. Bad: a scan rate that drops to 0 "
                    "while traffic continues (the planner stopped using the index)."
                ),
                queries=[
                    Query(f"sum by (index) ({rate('gecko_index_scans_total')})", legend="{{index}}")
                ],
                runbooks=["GeckoQueryPlanRegression"],
                unit="ops",
                min=0,
            )
        ),
    ]


def _per_table(metric: str, legend: str = "{{table}}") -> Query:
    """The worst instance's ``metric`` for each table."""
    return Query(f"max by (table) ({sel(metric)})", legend=legend)


def _tables_panels() -> list[PanelBuilder]:
    return [
        timeseries(
            Common(
                title="Sequential scan share per table",
                description=(
                    "Sequential scans / (sequential + index scans) per table. Bad: a large "
                    "table (Scan, Evidence, Issue) rising towards 100 % — its lookups stopped "
                    "using an index."
                ),
                queries=[
                    Query(
                        _ratio(
                            "gecko_table_seq_scans_total", "gecko_table_index_scans_total", "table"
                        ),
                        legend="{{table}}",
                    )
                ],
                runbooks=["GeckoQueryPlanRegression", "GeckoCriticalIndexMissing"],
                unit="percentunit",
                min=0,
                max=1,
            )
        ),
        timeseries(
            Common(
                title="Rows read per second by access path",
                description=(
                    "Rows read by sequential scans versus fetched through indexes. Bad: "
                    "sequential rows per second far above index rows on the big tables."
                ),
                queries=[
                    Query(
                        f"sum by (table) ({rate('gecko_table_seq_tuples_read_total')})",
                        legend="{{table}} seq",
                    ),
                    Query(
                        f"sum by (table) ({rate('gecko_table_index_tuples_fetched_total')})",
                        legend="{{table}} index",
                    ),
                ],
                runbooks=["GeckoQueryPlanRegression"],
                unit="cps",
                min=0,
            )
        ),
        timeseries(
            Common(
                title="Buffer cache hit ratio",
                description=(
                    "Share of block requests served from shared buffers: the whole database "
                    "and each table's heap. Bad: below about 99 % for an OLTP database — the "
                    "working set no longer fits in memory or a query reads too much."
                ),
                queries=[
                    Query(_ratio(hit, read, by), legend=legend)
                    for hit, read, by, legend in (
                        (
                            "gecko_database_blocks_hit_total",
                            "gecko_database_blocks_read_total",
                            "job, instance",
                            "database {{instance}}",
                        ),
                        (
                            "gecko_table_heap_blocks_hit_total",
                            "gecko_table_heap_blocks_read_total",
                            "table",
                            "{{table}} heap",
                        ),
                        (
                            "gecko_table_index_blocks_hit_total",
                            "gecko_table_index_blocks_read_total",
                            "table",
                            "{{table}} indexes",
                        ),
                    )
                ],
                runbooks=["GeckoReportGenerationSlow"],
                unit="percentunit",
                steps=(Step(None, RED), Step(0.9, ORANGE), Step(0.99, GREEN)),
                max=1,
            ),
            threshold_line=True,
        ),
        timeseries(
            Common(
                title="Dead tuples per table",
                description=(
                    "Dead rows waiting for vacuum per table. Bad: a count that keeps growing "
                    "and that autovacuum does not bring down — usually a long transaction "
                    "(see Longest running query and idle transaction on the overview)."
                ),
                queries=[_per_table("gecko_table_dead_tuples")],
                runbooks=["GeckoSlowQuery"],
                min=0,
            )
        ),
        timeseries(
            Common(
                title="Dead tuple ratio per table",
                description=(
                    "Dead / (live + dead) rows per table. Bad: above the dashed 20 % line "
                    "and not falling after autovacuum runs."
                ),
                queries=[_per_table("gecko_table_dead_tuple_ratio")],
                runbooks=["GeckoSlowQuery"],
                unit="percentunit",
                steps=bad_from(0.2),
                min=0,
                max=1,
            ),
            threshold_line=True,
        ),
        timeseries(
            Common(
                title="Estimated bloat per table",
                description=(
                    "Estimated wasted space in each table's heap. Bad: a share above about "
                    "30 % that keeps growing — plan a VACUUM (FULL) or pg_repack window."
                ),
                queries=[_per_table("gecko_table_bloat_ratio")],
                runbooks=["GeckoReportGenerationSlow"],
                unit="percentunit",
                steps=bad_from(0.3),
                min=0,
                max=1,
            ),
            threshold_line=True,
        ),
        timeseries(
            Common(
                title="Table and bloat size",
                description=(
                    "Heap size and estimated bloat in bytes per table. Bad: bloat bytes "
                    "growing faster than the table, or a table growing unexpectedly fast."
                ),
                queries=[
                    _per_table("gecko_table_size_bytes", "{{table}} size"),
                    _per_table("gecko_table_bloat_bytes", "{{table}} bloat"),
                ],
                runbooks=["GeckoReportGenerationSlow"],
                unit="bytes",
                min=0,
            )
        ),
        timeseries(
            Common(
                title="Critical index size",
                description=(
                    "Size of each critical index. Bad: sudden growth (index bloat after "
                    "mass updates) or a drop to nothing (index dropped)."
                ),
                queries=[
                    Query(f"max by (index) ({sel('gecko_index_size_bytes')})", legend="{{index}}")
                ],
                runbooks=["GeckoCriticalIndexMissing"],
                unit="bytes",
                min=0,
            )
        ),
    ]


def _per_instance(*series: tuple[str, str]) -> list[Query]:
    """One query per ``(metric, what)``, legend ``"<what> {{instance}}"``."""
    return [Query(sel(metric), legend=f"{what} {{{{instance}}}}") for metric, what in series]


def _locks_panels() -> list[PanelBuilder]:
    return [
        timeseries(
            Common(
                title="Lock waits",
                description=(
                    "Backends waiting on heavyweight locks, ACCESS EXCLUSIVE requests waiting "
                    "(DDL queued) and backends queued behind them. Bad: any ACCESS EXCLUSIVE "
                    "waiter with others queued behind it (GeckoLockQueueBehindDDL) — a migration "
                    "blocks all traffic on the table; set lock_timeout on DDL."
                ),
                queries=_per_instance(
                    ("gecko_lock_waiting_backends", "waiting backends"),
                    ("gecko_lock_access_exclusive_waiting", "ACCESS EXCLUSIVE waiting"),
                    ("gecko_lock_waiting_behind_access_exclusive", "queued behind DDL"),
                ),
                runbooks=["GeckoLockQueueBehindDDL"],
                min=0,
            )
        ),
        timeseries(
            Common(
                title="Longest lock wait",
                description=(
                    "How long the longest current lock wait has lasted. Bad: above the dashed "
                    "5 s line — requests are stuck behind a lock holder (see Lock waits)."
                ),
                queries=_per_instance(("gecko_lock_longest_wait_seconds", "longest wait")),
                runbooks=["GeckoLockQueueBehindDDL", "GeckoSlowQuery"],
                unit="s",
                steps=bad_from(5),
                min=0,
            ),
            threshold_line=True,
        ),
    ]


def _migrations_panels() -> list[PanelBuilder]:
    return [
        timeseries(
            Common(
                title="Migrations applied and failed",
                description=(
                    "Applied and failed Prisma migrations over time, and whether "
                    "prisma migrate holds its advisory lock. Bad: failed above 0 "
                    "(GeckoMigrationFailed), or a migration in progress for many minutes."
                ),
                queries=_per_instance(
                    ("gecko_migrations_applied", "applied"),
                    ("gecko_migrations_failed", "failed"),
                    ("gecko_migration_in_progress", "in progress"),
                ),
                runbooks=["GeckoMigrationFailed"],
                min=0,
            )
        ),
        timeseries(
            Common(
                title="Index builds",
                description=(
                    "Running CREATE INDEX / REINDEX builds, and the fraction done of each "
                    '(by table, index and phase). Bad: a build stuck in a "waiting" phase '
                    "(it waits for old transactions) or one that fails and leaves an invalid "
                    "index behind."
                ),
                queries=[
                    *_per_instance(("gecko_index_builds_in_progress", "builds running")),
                    Query(
                        f"max by (table, index, phase) ({sel('gecko_index_build_progress_ratio')})",
                        legend="{{index}} on {{table}}: {{phase}}",
                    ),
                ],
                runbooks=["GeckoInvalidIndex", "GeckoLockQueueBehindDDL"],
                min=0,
            )
        ),
        timeseries(
            Common(
                title="Maintenance and backups running",
                description=(
                    "How long the longest maintenance work of each kind has run: index builds, "
                    "reindexes, VACUUM, ANALYZE, CLUSTER (the statement), backups and configured "
                    "maintenance sessions (their transaction). These are not slow queries: they "
                    "never raise the overview's longest query. Bad: an index build past 30 m "
                    "(GeckoLongIndexBuild) or a backup past 4 h (GeckoLongBackup)."
                ),
                queries=[
                    Query(
                        f"max by (kind) ({sel('gecko_maintenance_longest_seconds')})",
                        legend="{{kind}}",
                    )
                ],
                runbooks=["GeckoLongIndexBuild", "GeckoLongBackup"],
                unit="s",
                min=0,
            )
        ),
    ]


def _top_statements(metric: str) -> Query:
    """The 10 statements with the highest ``metric`` over the dashboard's range, as a table."""
    return Query(
        f"topk(10, max by (queryid) (max_over_time({sel(metric)}[$__range])))",
        instant=True,
        table=True,
    )


def _statements_panels() -> list[PanelBuilder]:
    return [
        timeseries(
            Common(
                title="Top statements by execution time",
                description=(
                    "The 10 statements (by queryid) using the most execution time per second. "
                    "Bad: one statement dominating or suddenly joining the top — look it up "
                    "in pg_stat_statements by queryid."
                ),
                queries=[
                    Query(
                        "topk(10, sum by (queryid) "
                        f"({rate('gecko_statement_exec_time_seconds_total')}))",
                        legend="{{queryid}}",
                    )
                ],
                runbooks=["GeckoSlowQuery"],
                unit="s",
                min=0,
            ),
            stack=True,
        ),
        table(
            Common(
                title="Slowest statements (mean and max)",
                description=(
                    "Highest mean and max execution time per statement seen in the dashboard's "
                    "time range (statements are exported while they are in the top-N). Bad: a "
                    "mean above the 5 s slow-query threshold, or a report/lookup statement "
                    "with a mean far above its usual milliseconds."
                ),
                queries=[
                    _top_statements("gecko_statement_mean_exec_time_seconds"),
                    _top_statements("gecko_statement_max_exec_time_seconds"),
                ],
                runbooks=["GeckoSlowQuery"],
                unit="s",
            ),
            hide_columns=("Time",),
        ),
    ]


def _annotations(board: dashboard_builder.Dashboard) -> dashboard_builder.Dashboard:
    return board.annotation(
        dashboard_builder.AnnotationQuery()
        .name("Plan changes")
        .datasource(DATASOURCE)
        .expr(PLAN_CHANGES_ANNOTATION)
        .enable(True)
        .icon_color("orange")
    ).annotation(
        dashboard_builder.AnnotationQuery()
        .name("Migrations applied")
        .datasource(DATASOURCE)
        .expr(MIGRATION_ANNOTATION)
        .enable(True)
        .icon_color("blue")
    )


def build() -> dashboard_model.Dashboard:
    """Build the health and migrations dashboard model."""
    board = dashboard(
        UID,
        TITLE,
        "Critical indexes, query plans, table access, cache, bloat, locks, migrations and "
        "statements of the Gecko Advisor PostgreSQL database.",
    )
    board = _annotations(board)
    board = row(board, "State", _state_panels())
    board = row(board, "Critical indexes and query plans", _index_panels())
    board = row(board, "Table access, cache and bloat", _tables_panels())
    board = row(board, "Locks", _locks_panels())
    board = row(board, "Migrations and index builds", _migrations_panels())
    board = row(board, "Statements (pg_stat_statements)", _statements_panels())
    return board.build()
