"""Dashboard 2: "Gecko Advisor database — health and migrations".

Critical index presence/validity and plan index use as state timelines, plan changes and
applied migrations as annotations, table access patterns, cache hit ratio, dead tuples and
bloat, lock queues, migrations and index builds, and the top statements.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.models import dashboard as dashboard_model

from grafana.panels import (
    BLUE,
    DATASOURCE,
    GREEN,
    ORANGE,
    RED,
    Common,
    Query,
    Step,
    dashboard,
    rate,
    sel,
    stat,
    state_timeline,
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


def _state_row(board: dashboard_builder.Dashboard) -> dashboard_builder.Dashboard:
    board = board.with_row(dashboard_builder.Row("State"))
    return (
        board.with_panel(
            stat(
                Common(
                    title="Critical indexes missing",
                    description=(
                        "Critical indexes of the app schema that do not exist. Bad: anything "
                        "above 0 (GeckoCriticalIndexMissing): the lookups they serve fall back "
                        "to sequential scans."
                    ),
                    queries=[Query(f"sum(1 - {sel('gecko_index_present')})", legend="missing")],
                    runbooks=["GeckoCriticalIndexMissing"],
                    width=4,
                    height=5,
                    steps=(Step(None, GREEN), Step(1, RED)),
                )
            )
        )
        .with_panel(
            stat(
                Common(
                    title="Invalid indexes",
                    description=(
                        "Invalid indexes in the app schemas (left by a failed CREATE INDEX "
                        "CONCURRENTLY). Bad: anything above 0 (GeckoInvalidIndex): they cost "
                        "writes and serve no reads; the table below names them."
                    ),
                    queries=[Query(f"max({sel('gecko_invalid_indexes')})", legend="invalid")],
                    runbooks=["GeckoInvalidIndex"],
                    width=4,
                    height=5,
                    steps=(Step(None, GREEN), Step(1, RED)),
                )
            )
        )
        .with_panel(
            stat(
                Common(
                    title="Plans not using their index",
                    description=(
                        "Watched query plans (custom and generic) that no longer use the "
                        "critical index they should. Bad: anything above 0 "
                        "(GeckoQueryPlanRegression)."
                    ),
                    queries=[
                        Query(
                            f"sum(1 - {sel('gecko_query_plan_uses_index')})",
                            legend="regressed plans",
                        )
                    ],
                    runbooks=["GeckoQueryPlanRegression"],
                    width=4,
                    height=5,
                    steps=(Step(None, GREEN), Step(1, RED)),
                )
            )
        )
        .with_panel(
            stat(
                Common(
                    title="Failed migrations",
                    description=(
                        "Prisma migrations started but neither finished nor rolled back. "
                        "Bad: anything above 0 (GeckoMigrationFailed): prisma migrate deploy "
                        "refuses to run (P3009) until it is resolved."
                    ),
                    queries=[Query(f"max({sel('gecko_migrations_failed')})", legend="failed")],
                    runbooks=["GeckoMigrationFailed"],
                    width=4,
                    height=5,
                    steps=(Step(None, GREEN), Step(1, RED)),
                )
            )
        )
        .with_panel(
            stat(
                Common(
                    title="Migrations applied",
                    description=(
                        "Finished rows in _prisma_migrations. Bad: lower than the number of "
                        "migrations in the deployed release, or dropping (table restored)."
                    ),
                    queries=[Query(f"max({sel('gecko_migrations_applied')})", legend="applied")],
                    runbooks=["GeckoMigrationFailed"],
                    width=4,
                    height=5,
                    steps=(Step(None, BLUE),),
                ),
                color_background=False,
                sparkline=False,
            )
        )
        .with_panel(
            stat(
                Common(
                    title="Last migration finished",
                    description=(
                        "When the newest applied migration finished. Bad: a deploy happened but "
                        "this did not move (the migration did not run), or it moved outside a "
                        "deploy window."
                    ),
                    queries=[
                        Query(
                            f"max({sel('gecko_migration_last_finished_timestamp_seconds')}) * 1000",
                            legend="finished",
                        )
                    ],
                    runbooks=["GeckoMigrationFailed"],
                    unit="dateTimeFromNow",
                    width=4,
                    height=5,
                    steps=(Step(None, BLUE),),
                ),
                color_background=False,
                sparkline=False,
            )
        )
    )


def _index_row(board: dashboard_builder.Dashboard) -> dashboard_builder.Dashboard:
    board = board.with_row(dashboard_builder.Row("Critical indexes and query plans"))
    return (
        board.with_panel(
            state_timeline(
                Common(
                    title="Critical index present",
                    description=(
                        "Whether each critical index exists. Bad: a red MISSING lane "
                        "(GeckoCriticalIndexMissing) — dropped by a migration or never created."
                    ),
                    queries=[
                        Query(f"min by (index) ({sel('gecko_index_present')})", legend="{{index}}")
                    ],
                    runbooks=["GeckoCriticalIndexMissing"],
                    unit="none",
                    steps=(Step(None, RED), Step(1, GREEN)),
                    mappings=((1, "present", GREEN), (0, "MISSING", RED)),
                )
            )
        )
        .with_panel(
            state_timeline(
                Common(
                    title="Critical index valid",
                    description=(
                        "Whether each critical index is valid and ready (indisvalid and "
                        "indisready). Bad: a red INVALID lane (GeckoInvalidIndex) — the planner "
                        "ignores it; rebuild it with REINDEX INDEX CONCURRENTLY."
                    ),
                    queries=[
                        Query(f"min by (index) ({sel('gecko_index_valid')})", legend="{{index}}")
                    ],
                    runbooks=["GeckoInvalidIndex"],
                    unit="none",
                    steps=(Step(None, RED), Step(1, GREEN)),
                    mappings=((1, "valid", GREEN), (0, "INVALID", RED)),
                )
            )
        )
        .with_panel(
            state_timeline(
                Common(
                    title="Plan uses critical index",
                    description=(
                        "For each watched query and plan kind (custom/generic), whether the plan "
                        "uses its critical index. Bad: a red SEQ SCAN lane "
                        "(GeckoQueryPlanRegression); plan changes are marked as annotations."
                    ),
                    queries=[
                        Query(
                            f"min by (query, plan, index) ({sel('gecko_query_plan_uses_index')})",
                            legend="{{query}} ({{plan}}) → {{index}}",
                        )
                    ],
                    runbooks=["GeckoQueryPlanRegression"],
                    unit="none",
                    steps=(Step(None, RED), Step(1, GREEN)),
                    mappings=((1, "uses index", GREEN), (0, "NOT USING INDEX", RED)),
                )
            )
        )
        .with_panel(
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
                    unit="short",
                    min=0,
                ),
                bars=True,
            )
        )
        .with_panel(
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
                    width=12,
                ),
                hide_columns=("Time", "Value"),
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Critical index scans per second",
                    description=(
                        "Index scans of each critical index. Bad: a scan rate that drops to 0 "
                        "while traffic continues (the planner stopped using the index)."
                    ),
                    queries=[
                        Query(
                            f"sum by (index) ({rate('gecko_index_scans_total')})",
                            legend="{{index}}",
                        )
                    ],
                    runbooks=["GeckoQueryPlanRegression"],
                    unit="ops",
                    min=0,
                )
            )
        )
    )


def _tables_row(board: dashboard_builder.Dashboard) -> dashboard_builder.Dashboard:
    board = board.with_row(dashboard_builder.Row("Table access, cache and bloat"))
    return (
        board.with_panel(
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
                                "gecko_table_seq_scans_total",
                                "gecko_table_index_scans_total",
                                "table",
                            ),
                            legend="{{table}}",
                        )
                    ],
                    runbooks=["GeckoQueryPlanRegression", "GeckoCriticalIndexMissing"],
                    unit="percentunit",
                    min=0,
                    max=1,
                )
            )
        )
        .with_panel(
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
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Buffer cache hit ratio",
                    description=(
                        "Share of block requests served from shared buffers: the whole database "
                        "and each table's heap. Bad: below about 99 % for an OLTP database — the "
                        "working set no longer fits in memory or a query reads too much."
                    ),
                    queries=[
                        Query(
                            _ratio(
                                "gecko_database_blocks_hit_total",
                                "gecko_database_blocks_read_total",
                                "job, instance",
                            ),
                            legend="database {{instance}}",
                        ),
                        Query(
                            _ratio(
                                "gecko_table_heap_blocks_hit_total",
                                "gecko_table_heap_blocks_read_total",
                                "table",
                            ),
                            legend="{{table}} heap",
                        ),
                        Query(
                            _ratio(
                                "gecko_table_index_blocks_hit_total",
                                "gecko_table_index_blocks_read_total",
                                "table",
                            ),
                            legend="{{table}} indexes",
                        ),
                    ],
                    runbooks=["GeckoReportGenerationSlow"],
                    unit="percentunit",
                    steps=(Step(None, RED), Step(0.9, ORANGE), Step(0.99, GREEN)),
                    max=1,
                ),
                threshold_line=True,
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Dead tuples per table",
                    description=(
                        "Dead rows waiting for vacuum per table. Bad: a count that keeps growing "
                        "and that autovacuum does not bring down — usually a long transaction "
                        "(see Longest running query and idle transaction on the overview)."
                    ),
                    queries=[
                        Query(
                            f"max by (table) ({sel('gecko_table_dead_tuples')})",
                            legend="{{table}}",
                        ),
                    ],
                    runbooks=["GeckoSlowQuery"],
                    unit="short",
                    min=0,
                )
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Dead tuple ratio per table",
                    description=(
                        "Dead / (live + dead) rows per table. Bad: above the dashed 20 % line "
                        "and not falling after autovacuum runs."
                    ),
                    queries=[
                        Query(
                            f"max by (table) ({sel('gecko_table_dead_tuple_ratio')})",
                            legend="{{table}}",
                        ),
                    ],
                    runbooks=["GeckoSlowQuery"],
                    unit="percentunit",
                    steps=(Step(None, GREEN), Step(0.2, RED)),
                    min=0,
                    max=1,
                ),
                threshold_line=True,
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Estimated bloat per table",
                    description=(
                        "Estimated wasted space in each table's heap. Bad: a share above about "
                        "30 % that keeps growing — plan a VACUUM (FULL) or pg_repack window."
                    ),
                    queries=[
                        Query(
                            f"max by (table) ({sel('gecko_table_bloat_ratio')})",
                            legend="{{table}}",
                        ),
                    ],
                    runbooks=["GeckoReportGenerationSlow"],
                    unit="percentunit",
                    steps=(Step(None, GREEN), Step(0.3, RED)),
                    min=0,
                    max=1,
                ),
                threshold_line=True,
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Table and bloat size",
                    description=(
                        "Heap size and estimated bloat in bytes per table. Bad: bloat bytes "
                        "growing faster than the table, or a table growing unexpectedly fast."
                    ),
                    queries=[
                        Query(
                            f"max by (table) ({sel('gecko_table_size_bytes')})",
                            legend="{{table}} size",
                        ),
                        Query(
                            f"max by (table) ({sel('gecko_table_bloat_bytes')})",
                            legend="{{table}} bloat",
                        ),
                    ],
                    runbooks=["GeckoReportGenerationSlow"],
                    unit="bytes",
                    min=0,
                )
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Critical index size",
                    description=(
                        "Size of each critical index. Bad: sudden growth (index bloat after "
                        "mass updates) or a drop to nothing (index dropped)."
                    ),
                    queries=[
                        Query(
                            f"max by (index) ({sel('gecko_index_size_bytes')})",
                            legend="{{index}}",
                        )
                    ],
                    runbooks=["GeckoCriticalIndexMissing"],
                    unit="bytes",
                    min=0,
                )
            )
        )
    )


def _locks_row(board: dashboard_builder.Dashboard) -> dashboard_builder.Dashboard:
    board = board.with_row(dashboard_builder.Row("Locks"))
    return board.with_panel(
        timeseries(
            Common(
                title="Lock waits",
                description=(
                    "Backends waiting on heavyweight locks, ACCESS EXCLUSIVE requests waiting "
                    "(DDL queued) and backends queued behind them. Bad: any ACCESS EXCLUSIVE "
                    "waiter with others queued behind it (GeckoLockQueueBehindDDL) — a migration "
                    "blocks all traffic on the table; set lock_timeout on DDL."
                ),
                queries=[
                    Query(
                        sel("gecko_lock_waiting_backends"),
                        legend="waiting backends {{instance}}",
                    ),
                    Query(
                        sel("gecko_lock_access_exclusive_waiting"),
                        legend="ACCESS EXCLUSIVE waiting {{instance}}",
                    ),
                    Query(
                        sel("gecko_lock_waiting_behind_access_exclusive"),
                        legend="queued behind DDL {{instance}}",
                    ),
                ],
                runbooks=["GeckoLockQueueBehindDDL"],
                unit="short",
                min=0,
            )
        )
    ).with_panel(
        timeseries(
            Common(
                title="Longest lock wait",
                description=(
                    "How long the longest current lock wait has lasted. Bad: above the dashed "
                    "5 s line — requests are stuck behind a lock holder (see Lock waits)."
                ),
                queries=[
                    Query(
                        sel("gecko_lock_longest_wait_seconds"),
                        legend="longest wait {{instance}}",
                    )
                ],
                runbooks=["GeckoLockQueueBehindDDL", "GeckoSlowQuery"],
                unit="s",
                steps=(Step(None, GREEN), Step(5, RED)),
                min=0,
            ),
            threshold_line=True,
        )
    )


def _migrations_row(board: dashboard_builder.Dashboard) -> dashboard_builder.Dashboard:
    board = board.with_row(dashboard_builder.Row("Migrations and index builds"))
    return board.with_panel(
        timeseries(
            Common(
                title="Migrations applied and failed",
                description=(
                    "Applied and failed Prisma migrations over time, and whether "
                    "prisma migrate holds its advisory lock. Bad: failed above 0 "
                    "(GeckoMigrationFailed), or a migration in progress for many minutes."
                ),
                queries=[
                    Query(sel("gecko_migrations_applied"), legend="applied {{instance}}"),
                    Query(sel("gecko_migrations_failed"), legend="failed {{instance}}"),
                    Query(
                        sel("gecko_migration_in_progress"),
                        legend="in progress {{instance}}",
                    ),
                ],
                runbooks=["GeckoMigrationFailed"],
                unit="short",
                min=0,
            )
        )
    ).with_panel(
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
                    Query(
                        sel("gecko_index_builds_in_progress"),
                        legend="builds running {{instance}}",
                    ),
                    Query(
                        f"max by (table, index, phase) ({sel('gecko_index_build_progress_ratio')})",
                        legend="{{index}} on {{table}}: {{phase}}",
                    ),
                ],
                runbooks=["GeckoInvalidIndex", "GeckoLockQueueBehindDDL"],
                unit="short",
                min=0,
            )
        )
    )


def _statements_row(board: dashboard_builder.Dashboard) -> dashboard_builder.Dashboard:
    board = board.with_row(dashboard_builder.Row("Statements (pg_stat_statements)"))
    return board.with_panel(
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
        )
    ).with_panel(
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
                    Query(
                        "topk(10, max by (queryid) (max_over_time("
                        f"{sel('gecko_statement_mean_exec_time_seconds')}[$__range])))",
                        instant=True,
                        table=True,
                    ),
                    Query(
                        "topk(10, max by (queryid) (max_over_time("
                        f"{sel('gecko_statement_max_exec_time_seconds')}[$__range])))",
                        instant=True,
                        table=True,
                    ),
                ],
                runbooks=["GeckoSlowQuery"],
                unit="s",
            ),
            hide_columns=("Time",),
        )
    )


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
    board = _state_row(board)
    board = _index_row(board)
    board = _tables_row(board)
    board = _locks_row(board)
    board = _migrations_row(board)
    board = _statements_row(board)
    return board.build()
