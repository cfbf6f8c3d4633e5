"""The schema of PostgresStorage, step by step, and the opening that applies what is pending.

Migrations run in one transaction under an advisory lock of their schema, so
processes that open the same database together migrate it once.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final

import attrs

from ...errors import StorageError

if TYPE_CHECKING:
    import psycopg

__all__ = ["LOCK_CLASS", "MIGRATIONS", "Migration", "prepare", "render"]

_logger = logging.getLogger("services_ai_plugins.storage")

#: The first key of the advisory lock that migrations take ("SAIP"); the second
#: is a hash of the schema name, so schemas migrate independently.
LOCK_CLASS: Final = 0x5341_4950


@attrs.frozen
class Migration:
    """One step of the schema: applied once, in one transaction, in version order."""

    version: int
    description: str
    #: SQL statements; ``{s}`` stands for the quoted schema name.
    script: str


_SCHEMA_1: Final = """
CREATE TABLE {s}.meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO {s}.meta (key, value) VALUES ('generation', 0);

CREATE TABLE {s}.plugins (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    name                TEXT NOT NULL,
    version             TEXT NOT NULL,
    status              TEXT COLLATE "C" NOT NULL,
    manifest            JSONB NOT NULL,
    code_hash           TEXT NOT NULL,
    source              TEXT NOT NULL,
    package_path        TEXT,
    installed_at        TIMESTAMPTZ NOT NULL,
    installed_by        TEXT NOT NULL,
    approved_at         TIMESTAMPTZ,
    approved_by         TEXT,
    status_reason       TEXT,
    granted_permissions TEXT[] NOT NULL,
    revision            BIGINT NOT NULL
);
CREATE INDEX plugins_status ON {s}.plugins (status, id);

CREATE TABLE {s}.plugin_tenants (
    plugin_id        TEXT COLLATE "C" NOT NULL REFERENCES {s}.plugins (id),
    tenant           TEXT COLLATE "C" NOT NULL,
    enabled          BOOLEAN NOT NULL,
    suspended_reason TEXT,
    optional_grants  TEXT[] NOT NULL,
    settings         JSONB NOT NULL,
    changed_at       TIMESTAMPTZ NOT NULL,
    changed_by       TEXT NOT NULL,
    revision         BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, tenant)
);
CREATE INDEX plugin_tenants_running ON {s}.plugin_tenants (tenant, plugin_id)
    WHERE enabled AND suspended_reason IS NULL;

-- History tables carry no foreign key: they outlive the plugin's row.
CREATE TABLE {s}.plugin_versions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plugin_id    TEXT COLLATE "C" NOT NULL,
    version      TEXT NOT NULL,
    code_hash    TEXT NOT NULL,
    changelog    TEXT,
    installed_at TIMESTAMPTZ NOT NULL,
    installed_by TEXT NOT NULL
);
CREATE INDEX plugin_versions_plugin ON {s}.plugin_versions (plugin_id, id);

CREATE TABLE {s}.audit_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT COLLATE "C" NOT NULL,
    action      TEXT COLLATE "C" NOT NULL,
    plugin_id   TEXT COLLATE "C" NOT NULL,
    tenant      TEXT COLLATE "C",
    before_json JSONB,
    after_json  JSONB
);
CREATE INDEX audit_events_plugin ON {s}.audit_events (plugin_id, id);
CREATE INDEX audit_events_tenant ON {s}.audit_events (tenant, id);
CREATE INDEX audit_events_actor ON {s}.audit_events (actor, id);
CREATE INDEX audit_events_at ON {s}.audit_events (at);

CREATE TABLE {s}.failures (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plugin_id TEXT COLLATE "C" NOT NULL,
    tenant    TEXT COLLATE "C",
    hook      TEXT COLLATE "C" NOT NULL,
    exc_type  TEXT NOT NULL,
    message   TEXT NOT NULL,
    traceback TEXT NOT NULL,
    at        TIMESTAMPTZ NOT NULL,
    resolved  BOOLEAN NOT NULL
);
CREATE INDEX failures_plugin ON {s}.failures (plugin_id, resolved, id);

CREATE TABLE {s}.hook_metrics (
    plugin_id      TEXT COLLATE "C" NOT NULL,
    hook           TEXT COLLATE "C" NOT NULL,
    calls          BIGINT NOT NULL,
    errors         BIGINT NOT NULL,
    total_duration DOUBLE PRECISION NOT NULL,
    max_duration   DOUBLE PRECISION NOT NULL,
    last_call      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (plugin_id, hook)
);
"""

_STORE_LEDGER: Final = """
-- What each plugin keeps in its key-value store per tenant (the values live with the
-- host services); every charge locks the totals row first, so charges of one store queue.
CREATE TABLE {s}.store_totals (
    plugin_id TEXT COLLATE "C" NOT NULL,
    tenant    TEXT COLLATE "C" NOT NULL,
    keys      BIGINT NOT NULL,
    bytes     BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, tenant)
);
CREATE TABLE {s}.store_sizes (
    plugin_id TEXT COLLATE "C" NOT NULL,
    tenant    TEXT COLLATE "C" NOT NULL,
    key       TEXT COLLATE "C" NOT NULL,
    bytes     BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, tenant, key)
);
"""

_STORE_VALUES: Final = """
-- The plugins' key-value stores the SDK keeps (for host services without their own), as
-- ASCII JSON text; each value is charged in store_sizes in the same transaction, under the
-- lock of its store's totals row.
CREATE TABLE {s}.store_values (
    plugin_id TEXT COLLATE "C" NOT NULL,
    tenant    TEXT COLLATE "C" NOT NULL,
    key       TEXT COLLATE "C" NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (plugin_id, tenant, key)
);
"""

_VERSIONS: Final = """
-- The archive a plugin's code is materialised from, and a version staged beside the
-- running one.
ALTER TABLE {s}.plugins ADD COLUMN artifact TEXT COLLATE "C", ADD COLUMN staged JSONB;

-- Versions that ran before, kept for a rollback: one per (plugin, version). No foreign
-- key, as for the history tables. Listed by kept_at, then by id (which an upsert keeps).
CREATE TABLE {s}.plugin_kept_versions (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    plugin_id           TEXT COLLATE "C" NOT NULL,
    version             TEXT COLLATE "C" NOT NULL,
    manifest            JSONB NOT NULL,
    code_hash           TEXT NOT NULL,
    source              TEXT NOT NULL,
    package_path        TEXT,
    artifact            TEXT COLLATE "C",
    granted_permissions TEXT[] NOT NULL,
    tenants             JSONB NOT NULL,
    kept_at             TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (plugin_id, version)
);

-- Uploaded archives by the SHA-256 (lowercase hex) of their bytes. ZIP archives are
-- compressed already: stored out of line as they are, without another compression.
CREATE TABLE {s}.plugin_artifacts (
    sha256    TEXT COLLATE "C" PRIMARY KEY,
    data      BYTEA NOT NULL,
    size      BIGINT NOT NULL,
    stored_at TIMESTAMPTZ NOT NULL
);
ALTER TABLE {s}.plugin_artifacts ALTER COLUMN data SET STORAGE EXTERNAL;
"""

# The data-access log: one row per granted API call on tenant data (issue 22). record_ids holds
# at most MAX_ACCESS_IDS ids; count is how many records the call returned.
_ACCESS_LOG: Final = """
CREATE TABLE {s}.access_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plugin_id   TEXT COLLATE "C" NOT NULL,
    tenant      TEXT COLLATE "C" NOT NULL,
    method      TEXT COLLATE "C" NOT NULL,
    permission  TEXT COLLATE "C" NOT NULL,
    record_type TEXT COLLATE "C",
    record_ids  TEXT[] NOT NULL,
    count       INTEGER NOT NULL,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX access_log_plugin_tenant ON {s}.access_log (plugin_id, tenant, at);
CREATE INDEX access_log_tenant ON {s}.access_log (tenant, at);
CREATE INDEX access_log_at ON {s}.access_log (at);
CREATE INDEX access_log_ids ON {s}.access_log USING GIN (record_ids);
"""

#: The schema, step by step. Append-only: a release that changes the schema
#: adds the next version at the end and never edits a published step, since
#: databases in the field have already applied it.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "plugins, tenants, versions, audit, failures and metrics", _SCHEMA_1),
    Migration(2, "the ledger of plugin store quotas", _STORE_LEDGER),
    Migration(3, "the plugins' key-value stores kept by the SDK", _STORE_VALUES),
    Migration(4, "staged and kept plugin versions, and the plugins' archives", _VERSIONS),
    Migration(5, "the data-access log", _ACCESS_LOG),
)

_CREATE_MIGRATIONS: Final = """
CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL
)
"""


@functools.lru_cache(maxsize=512)
def render(template: str, quoted_schema: str) -> str:
    """A statement with ``{s}`` replaced by the quoted schema name."""
    return template.replace("{s}", quoted_schema)


# -- opening: the schema and its migrations ------------------------------------------------


def prepare(conn: psycopg.Connection[Any], schema: str, lock_timeout: str, where: str) -> None:
    """Refuse a non-UTF-8 database or a newer schema; apply pending migrations."""
    encoding = conn.info.parameter_status("server_encoding")
    if encoding != "UTF8":
        raise StorageError(
            f"{where}: the database encoding is {encoding!r}; PostgresStorage needs a UTF8 "
            "database (CREATE DATABASE ... ENCODING 'UTF8')"
        )
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout,))
    quoted = f'"{schema}"'
    # Refuse a newer schema, or see that nothing is to do, before taking any lock.
    if not _pending_migrations(conn, schema, where):
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, schema))
        # Another process may have migrated since the first look: decide under the lock.
        exists = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
        if exists is None:
            # Not CREATE SCHEMA IF NOT EXISTS: that needs the CREATE privilege even
            # when the schema is there.
            conn.execute(render("CREATE SCHEMA {s}", quoted))
        conn.execute(render(_CREATE_MIGRATIONS, quoted))
        for migration in _pending_migrations(conn, schema, where):
            conn.execute(render(migration.script, quoted))
            conn.execute(
                render(
                    "INSERT INTO {s}.schema_migrations (version, description, applied_at)"
                    " VALUES (%s, %s, %s)",
                    quoted,
                ),
                (migration.version, migration.description, datetime.now(timezone.utc)),
            )
            _logger.info(
                "%s: applied schema migration %d of schema %s (%s)",
                where,
                migration.version,
                schema,
                migration.description,
            )


def _pending_migrations(conn: psycopg.Connection[Any], schema: str, where: str) -> list[Migration]:
    """The migrations not applied yet; StorageError if the schema is newer than the code."""
    quoted = f'"{schema}"'
    table = conn.execute(
        "SELECT to_regclass(%s)::text", (f"{quoted}.schema_migrations",)
    ).fetchone()
    applied: set[int] = set()
    if table is not None and table[0] is not None:
        rows = conn.execute(render("SELECT version FROM {s}.schema_migrations", quoted))
        applied = {int(row[0]) for row in rows.fetchall()}
    known = MIGRATIONS[-1].version if MIGRATIONS else 0
    newest = max(applied, default=0)
    if newest > known:
        raise StorageError(
            f"{where}: schema {schema!r} is at version {newest}, newer than this release "
            f"of services-ai-plugins knows (up to {known}); upgrade services-ai-plugins to use it"
        )
    return [m for m in MIGRATIONS if m.version not in applied]
