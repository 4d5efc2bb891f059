"""A real PgBouncer (``/usr/sbin/pgbouncer``) on a random loopback port, for tests.

The runner lives in :mod:`gecko_demo.pgbouncer` (the demo starts one too); this
module is the test suite's name for it. It pools one database of a test
PostgreSQL as ``gecko`` and serves the admin console (``pgbouncer``) to a
``stats_users`` account; :meth:`PgBouncer.kill` and :meth:`PgBouncer.pause`
simulate an outage and a freeze. Every process started is stopped on exit.

Usage::

    tool = require_tool("pgbouncer", "/usr/sbin/pgbouncer")
    with PgBouncer(tool, backend_port=cluster.port, dbname=db.dbname,
                   users={"postgres": cluster.password}, pool_size=2) as bouncer:
        bouncer.admin_url()           # GECKO_PGBOUNCER_URL
        bouncer.client_dsn("postgres", cluster.password)
"""

from __future__ import annotations

from gecko_demo.pgbouncer import DATABASE, STATS_USER
from gecko_demo.pgbouncer import PgBouncerServer as PgBouncer

__all__ = ["DATABASE", "STATS_USER", "PgBouncer"]
