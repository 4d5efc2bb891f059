# syntax=docker/dockerfile:1
# gecko-exporter image: build with `docker build -t gecko-exporter:0.1.0 .` (see docs/deploy.md).

# ---- builder: resolve and install the package into a self-contained virtualenv ----
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

# psycopg's C implementation, compiled against Debian's libpq (psycopg's docs: the preferred
# installation for production; libpq and OpenSSL then get their security updates from the OS).
# The compiler and headers stay in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc=4:12.2.* libc6-dev=2.36-* libpq-dev=15.* \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter/ ./exporter/

# pyproject's psycopg[binary] bundles its own libpq, OpenSSL, krb5 and ldap (its libcrypto: 4-5 MiB
# resident beside the system one): psycopg-c of the same version replaces it, in the same layer.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/pip install --no-cache-dir "psycopg-c==$(/opt/venv/bin/python -c 'import psycopg; print(psycopg.__version__)')" \
    && /opt/venv/bin/pip uninstall --yes psycopg-binary

# ---- runtime: the virtualenv, tini as PID 1, a numeric non-root user ----
FROM python:3.11.14-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.* libpq5=15.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gecko \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gecko

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PSYCOPG_IMPL=c \
    GECKO_LISTEN_ADDRESS=0.0.0.0:8187 \
    GECKO_LOG_FORMAT=json

USER 10001:10001
WORKDIR /

EXPOSE 8187

# Docker/Compose only (Kubernetes uses the chart's probes). No curl in slim images: Python GETs
# /healthz on the port of GECKO_LISTEN_ADDRESS, over HTTP, then HTTPS when a web config turns TLS on
# (not verified: its own loopback). With client certificates required, use --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-m", "exporter.healthcheck"]

# tini forwards SIGTERM to the exporter (which exits 0 after closing its connections) and reaps
# zombies, e.g. the PostgreSQL children of `gecko-exporter demo`.
ENTRYPOINT ["/usr/bin/tini", "--", "gecko-exporter"]
CMD ["run"]
