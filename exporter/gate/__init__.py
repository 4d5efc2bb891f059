"""Migration safety gate: ``gecko-exporter lint``, ``preflight`` and ``verify``.

``exporter.gate.sql`` is the shared parse layer (PostgreSQL's own grammar via
libpg_query): migrations become ``Migration``/``Statement`` records with the
tables each statement touches and the lock it takes. ``lint`` reads them
statically; ``preflight`` and ``verify`` hold them against a live database.
"""
