"""Shared parse layer of the migration gate: Prisma migrations → statements with locks.

SQL is parsed with PostgreSQL's own grammar (libpg_query, PostgreSQL 18 parser)
through ``postgast`` (BSD-2-Clause; pglast would be GPL-3.0). Each statement is
classified into a ``kind``, the relations it touches (as PostgreSQL resolves
the written names: ``"Scan"`` stays ``Scan``, unquoted ``Foo`` becomes ``foo``,
schema-qualified only when written so) and the strongest lock it takes per the
PostgreSQL documentation ("Explicit Locking", "ALTER TABLE", "CREATE INDEX").

Layouts accepted by :func:`load_migrations`, in the order given:

- a ``migration.sql`` (or any ``*.sql``) file: one migration;
- a Prisma migration folder (holds ``migration.sql``): one migration named after the folder;
- a ``prisma/migrations`` folder: every subfolder holding a ``migration.sql`` is one
  migration, in name order (the order Prisma applies them); other files
  (``migration_lock.toml``) are ignored, a subfolder without ``migration.sql`` is an error.

Rollback convention: ``down.sql`` (preferred) or ``rollback.sql`` beside ``migration.sql``;
for a loose ``name.sql`` file, ``name.down.sql`` or ``name.rollback.sql`` beside it.
Prisma reads only ``migration.sql`` from a migration folder, so these files never run by accident.

Pure: no I/O but reading the files, no database.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import postgast

from exporter.errors import ExporterError

# The protobuf messages of libpg_query's parse tree. Typed Any: postgast's generated stub
# does not parse under mypy (see pyproject), so the classifier converts at the boundary.
pb: Any = importlib.import_module("postgast.pg_query_pb2")

__all__ = [
    "LOCK_LEVELS",
    "GateInputError",
    "Migration",
    "Statement",
    "load_migration_file",
    "load_migrations",
    "lock_rank",
    "parse_sql",
    "read_sql",
    "stronger_lock",
]

#: PostgreSQL table-level lock modes, weakest first ("" = takes no table lock).
LOCK_LEVELS: tuple[str, ...] = (
    "",
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
)

AE = "ACCESS EXCLUSIVE"
SRE = "SHARE ROW EXCLUSIVE"
SUE = "SHARE UPDATE EXCLUSIVE"

ROLLBACK_NAMES = ("down.sql", "rollback.sql")


class GateInputError(ExporterError):
    """Bad gate input (missing path, unparsable SQL): one line naming file and line."""


def lock_rank(lock: str) -> int:
    """Position of ``lock`` in :data:`LOCK_LEVELS` (0 for no lock)."""
    return LOCK_LEVELS.index(lock)


def stronger_lock(a: str, b: str) -> str:
    return a if lock_rank(a) >= lock_rank(b) else b


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a migration file, classified.

    ``scans`` is true when the statement reads the whole table while it holds its lock,
    so the lock is held for a time that grows with the table: SET NOT NULL, constraint
    validation, index builds. A ``CREATE INDEX CONCURRENTLY`` also scans (twice), but
    under SHARE UPDATE EXCLUSIVE, which blocks neither reads nor writes: read ``lock``
    together with ``scans``. ``rewrites`` means the table (and its indexes) are written
    anew under ACCESS EXCLUSIVE.

    For ``drop_index``/``rename_index`` the parse knows only the index name: ``tables``
    holds the index (a relation); resolve its table in the catalog (``pg_index``).
    """

    file: Path
    line: int
    text: str
    kind: str
    tables: tuple[str, ...]
    lock: str
    rewrites: bool
    scans: bool
    concurrent: bool
    # --- additions beyond the shared contract ---
    column: int = 1  # 1-based column of the first token
    end_line: int = 0  # 1-based line of the last character
    actions: tuple[str, ...] = ()  # one kind per ALTER TABLE sub-command (else (kind,))
    creates: tuple[str, ...] = ()  # relations this statement creates (table, index)
    setting: str | None = None  # for kind "set"/"reset": the parameter name (lower case)
    setting_value: str | None = None  # for kind "set": the value as written (unquoted)
    setting_local: bool = False  # SET LOCAL
    leading: str = field(default="", repr=False)  # text between the previous statement and this one


@dataclass(frozen=True)
class Migration:
    name: str
    path: Path
    statements: tuple[Statement, ...]
    rollback: Path | None

    @property
    def lock_timeout(self) -> str | None:
        """Value of the first ``SET lock_timeout`` in the file, if any."""
        for st in self.statements:
            if st.kind == "set" and st.setting == "lock_timeout":
                return st.setting_value
        return None


# --------------------------------------------------------------------------- loading


def load_migrations(paths: Sequence[Path]) -> list[Migration]:
    """Load every migration under ``paths`` (see the module docstring for layouts)."""
    migrations: list[Migration] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            migrations.append(load_migration_file(path))
        elif path.is_dir():
            if (path / "migration.sql").is_file():
                migrations.append(load_migration_file(path / "migration.sql"))
                continue
            subdirs = sorted(p for p in path.iterdir() if p.is_dir())
            if not subdirs:
                raise GateInputError(
                    f"{path}: no migration.sql and no migration folders in this directory"
                )
            for sub in subdirs:
                sql_file = sub / "migration.sql"
                if not sql_file.is_file():
                    raise GateInputError(f"{sub}: migration folder without migration.sql")
                migrations.append(load_migration_file(sql_file))
        elif path.exists():
            raise GateInputError(f"{path}: not a file or directory")
        else:
            raise GateInputError(f"{path}: no such file or directory")
    return migrations


def load_migration_file(path: Path) -> Migration:
    if path.name == "migration.sql":
        name = path.parent.name or path.stem
        candidates = [path.parent / n for n in ROLLBACK_NAMES]
    else:
        name = path.name.removesuffix(".sql")
        candidates = [path.with_name(f"{name}.down.sql"), path.with_name(f"{name}.rollback.sql")]
    rollback = next((c for c in candidates if c.is_file()), None)
    return Migration(
        name=name, path=path, statements=tuple(parse_sql(read_sql(path), path)), rollback=rollback
    )


def read_sql(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GateInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise GateInputError(f"{path}:{line}: not valid UTF-8") from None
    nul = data.find(b"\x00")
    if nul >= 0:  # the parser would stop there and everything after it go unchecked
        line = data[:nul].count(b"\n") + 1
        raise GateInputError(f"{path}:{line}: contains a NUL byte (PostgreSQL cannot take it)")
    if text.startswith("\ufeff"):  # PostgreSQL reads it as part of the first word
        raise GateInputError(
            f"{path}:1: starts with a UTF-8 byte order mark"
            " (PostgreSQL rejects it: save the file without one)"
        )
    return text


# --------------------------------------------------------------------------- parsing


def parse_sql(sql: str, file: Path) -> list[Statement]:
    """Parse ``sql`` (the text of ``file``) into classified statements.

    Raises GateInputError("<file>:<line>: syntax error …") on SQL PostgreSQL rejects.
    """
    data = sql.encode("utf-8")
    try:
        tree = postgast.parse(sql)
    except postgast.PgQueryError as exc:
        pos = exc.cursorpos - 1 if exc.cursorpos > 0 else len(data)
        line = data[:pos].count(b"\n") + 1
        message = exc.message.replace("\r", "\\r").replace("\n", "\\n")  # one line
        raise GateInputError(f"{file}:{line}: {message}") from None
    out: list[Statement] = []
    prev_end = 0
    counted, line = 0, 1  # lines counted incrementally: recounting from 0 is quadratic
    for raw in tree.stmts:
        start = _skip_trivia(data, raw.stmt_location)
        end = raw.stmt_location + raw.stmt_len if raw.stmt_len else len(data)
        text = data[start:end].decode("utf-8").rstrip()
        line += data.count(b"\n", counted, start)
        counted = start
        line_start = data.rfind(b"\n", 0, start) + 1
        column = len(data[line_start:start].decode("utf-8")) + 1
        end_line = line + text.count("\n")
        leading = data[prev_end:start].decode("utf-8")
        prev_end = end
        info = _classify(raw.stmt)
        out.append(
            Statement(
                file=file,
                line=line,
                text=text,
                kind=info.kind,
                tables=tuple(dict.fromkeys(info.tables)),
                lock=info.lock,
                rewrites=info.rewrites,
                scans=info.scans,
                concurrent=info.concurrent,
                column=column,
                end_line=end_line,
                actions=info.actions or (info.kind,),
                creates=info.creates,
                setting=info.setting,
                setting_value=info.setting_value,
                setting_local=info.setting_local,
                leading=leading,
            )
        )
    return out


def _skip_trivia(data: bytes, pos: int) -> int:
    """First byte at or after ``pos`` that is not whitespace or a comment."""
    n = len(data)
    while pos < n:
        if data[pos : pos + 1].isspace():
            pos += 1
        elif data.startswith(b"--", pos):
            nl = data.find(b"\n", pos)
            pos = n if nl < 0 else nl + 1
        elif data.startswith(b"/*", pos):
            depth, pos = 1, pos + 2
            while pos < n and depth:
                if data.startswith(b"/*", pos):
                    depth, pos = depth + 1, pos + 2
                elif data.startswith(b"*/", pos):
                    depth, pos = depth - 1, pos + 2
                else:
                    pos += 1
        else:
            break
    return pos


# --------------------------------------------------------------------------- classification


@dataclass
class _Info:
    kind: str = "other"
    tables: list[str] = field(default_factory=list)
    lock: str = ""
    rewrites: bool = False
    scans: bool = False
    concurrent: bool = False
    actions: tuple[str, ...] = ()
    creates: tuple[str, ...] = ()
    setting: str | None = None
    setting_value: str | None = None
    setting_local: bool = False


def _rel(rv: Any) -> str:
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)


def _qualified(node: Any) -> str:
    """Name from a List of String nodes (DROP objects, type names)."""
    if node.HasField("list"):
        return ".".join(item.string.sval for item in node.list.items if item.HasField("string"))
    if node.HasField("string"):
        return str(node.string.sval)
    return ""


def _const_text(node: Any) -> str | None:
    if node.HasField("a_const"):
        c = node.a_const
        if c.HasField("sval"):
            return str(c.sval.sval)
        if c.HasField("ival"):
            return str(c.ival.ival)
        if c.HasField("fval"):
            return str(c.fval.fval)
        if c.HasField("boolval"):
            return "on" if c.boolval.boolval else "off"
    if node.HasField("type_cast"):
        return _const_text(node.type_cast.arg)
    return None


def _obj(t: int) -> str:
    return str(pb.ObjectType.Name(t))


# Functions PostgreSQL marks volatile that Prisma schemas use as defaults: a column added
# with one of these rewrites the table (non-volatile defaults do not since PostgreSQL 11).
_VOLATILE_FUNCS = frozenset(
    {"random", "gen_random_uuid", "uuid_generate_v4", "uuid_generate_v1", "clock_timestamp",
     "timeofday", "nextval", "uuidv4", "uuidv7", "txid_current"}
)  # fmt: skip

_SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})


def _has_volatile_call(node: Any) -> bool:
    for _field, child in postgast.walk(node):
        if isinstance(child, pb.FuncCall):
            name = child.funcname[-1].string.sval if child.funcname else ""
            if name.lower() in _VOLATILE_FUNCS:
                return True
    return False


def _column_def(col: Any, table: str) -> tuple[bool, bool, list[str], str]:
    """(rewrites, scans, referenced tables, extra lock) for a column added to ``table``."""
    rewrites = scans = False
    refs: list[str] = []
    type_name = col.type_name.names[-1].string.sval if col.type_name.names else ""
    if type_name.lower() in _SERIAL_TYPES:
        rewrites = True
    not_null = col.is_not_null
    has_default = False
    for c in col.constraints:
        if not c.HasField("constraint"):
            continue
        con = c.constraint
        ctype = pb.ConstrType.Name(con.contype)
        if ctype == "CONSTR_NOTNULL":
            not_null = True
        elif ctype == "CONSTR_DEFAULT":
            has_default = True
            if _has_volatile_call(con.raw_expr):
                rewrites = True
        elif ctype in ("CONSTR_IDENTITY",) or (
            ctype == "CONSTR_GENERATED" and con.generated_kind != "v"
        ):
            rewrites = True
        elif ctype in ("CONSTR_UNIQUE", "CONSTR_PRIMARY", "CONSTR_EXCLUSION", "CONSTR_CHECK"):
            scans = True
        elif ctype == "CONSTR_FOREIGN":
            refs.append(_rel(con.pktable))
            scans = True
    if not_null and not has_default and not rewrites:
        scans = True  # PostgreSQL checks every existing row (and fails if there is one)
    del table
    return rewrites, scans, refs, ""


_SUE_SUBTYPES = frozenset(
    {"AT_SetStatistics", "AT_SetOptions", "AT_ResetOptions", "AT_SetRelOptions",
     "AT_ResetRelOptions", "AT_ReplaceRelOptions", "AT_ClusterOn", "AT_DropCluster",
     "AT_ValidateConstraint", "AT_AttachPartition"}
)  # fmt: skip
_SRE_SUBTYPES = frozenset(
    {"AT_EnableTrig", "AT_EnableAlwaysTrig", "AT_EnableReplicaTrig", "AT_DisableTrig",
     "AT_EnableTrigAll", "AT_DisableTrigAll", "AT_EnableTrigUser", "AT_DisableTrigUser"}
)  # fmt: skip
_REWRITE_SUBTYPES = frozenset(
    {"AT_SetLogged", "AT_SetUnLogged", "AT_SetAccessMethod", "AT_SetTableSpace"}
)  # fmt: skip
_SUBTYPE_KIND = {
    "AT_AddColumn": "add_column",
    "AT_DropColumn": "drop_column",
    "AT_AlterColumnType": "alter_column_type",
    "AT_SetNotNull": "set_not_null",
    "AT_DropNotNull": "drop_not_null",
    "AT_AddConstraint": "add_constraint",
    "AT_ValidateConstraint": "validate_constraint",
    "AT_DropConstraint": "drop_constraint",
    "AT_ColumnDefault": "set_default",
    "AT_AttachPartition": "attach_partition",
    "AT_DetachPartition": "detach_partition",
    "AT_AddIdentity": "add_identity",
}


def _alter_cmd(cmd: Any, table: str, info: _Info) -> tuple[str, str]:
    """Classify one ALTER TABLE sub-command; returns (kind, lock) and updates ``info``."""
    sub = pb.AlterTableType.Name(cmd.subtype)
    definition: Any = getattr(cmd, "def")  # "def" is a Python keyword
    kind = _SUBTYPE_KIND.get(sub, sub.removeprefix("AT_").lower())
    lock = AE
    if sub in _SUE_SUBTYPES:
        lock = SUE
    elif sub in _SRE_SUBTYPES:
        lock = SRE
    if sub in _REWRITE_SUBTYPES:
        info.rewrites = True
    if sub == "AT_AddColumn" and definition.HasField("column_def"):
        rewrites, scans, refs, _ = _column_def(definition.column_def, table)
        info.rewrites |= rewrites
        info.scans |= scans
        info.tables.extend(refs)
    elif sub == "AT_AlterColumnType":
        info.rewrites = True  # conservative: binary-coercible changes skip it, unknowable here
    elif sub in ("AT_SetNotNull", "AT_ValidateConstraint", "AT_AddIdentity"):
        info.scans = True
    elif sub == "AT_AddConstraint" and definition.HasField("constraint"):
        con = definition.constraint
        ctype = pb.ConstrType.Name(con.contype)
        if ctype == "CONSTR_FOREIGN":
            lock = SRE  # on the table and on the referenced table
            info.tables.append(_rel(con.pktable))
            info.scans |= not con.skip_validation
        elif ctype == "CONSTR_CHECK":
            info.scans |= not con.skip_validation
        elif ctype in ("CONSTR_UNIQUE", "CONSTR_PRIMARY", "CONSTR_EXCLUSION"):
            info.scans |= not con.indexname  # USING INDEX reuses a built index
    elif sub == "AT_DetachPartition" and definition.HasField("partition_cmd"):
        if definition.partition_cmd.concurrent:
            lock = SUE
            info.concurrent = True
        info.tables.append(_rel(definition.partition_cmd.name))
    elif sub == "AT_AttachPartition" and definition.HasField("partition_cmd"):
        info.tables.append(_rel(definition.partition_cmd.name))  # ACCESS EXCLUSIVE on it
        info.scans = True
    return kind, lock


_LOCK_MODES = {
    1: "ACCESS SHARE", 2: "ROW SHARE", 3: "ROW EXCLUSIVE", 4: SUE, 5: "SHARE",
    6: SRE, 7: "EXCLUSIVE", 8: AE,
}  # fmt: skip


def _classify(node: Any) -> _Info:
    info = _Info()
    which = node.WhichOneof("node")
    if which == "index_stmt":
        s = node.index_stmt
        info.kind, info.concurrent = "create_index", s.concurrent
        info.tables = [_rel(s.relation)]
        info.lock = SUE if s.concurrent else "SHARE"
        info.scans = True
        if s.idxname:
            schema = f"{s.relation.schemaname}." if s.relation.schemaname else ""
            info.creates = (schema + s.idxname,)
    elif which == "drop_stmt":
        s = node.drop_stmt
        obj = _obj(s.remove_type)
        names = [_qualified(o) for o in s.objects]
        info.concurrent = s.concurrent
        if obj == "OBJECT_INDEX":
            info.kind, info.tables = "drop_index", names
            info.lock = SUE if s.concurrent else AE
        elif obj in ("OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_SEQUENCE"):
            info.kind = _DROP_KIND[obj]
            info.tables, info.lock = names, AE
        else:
            info.kind = "drop_" + obj.removeprefix("OBJECT_").lower()
    elif which == "alter_table_stmt":
        s = node.alter_table_stmt
        table = _rel(s.relation)
        info.tables = [table]
        kinds: list[str] = []
        lock = ""
        for c in s.cmds:
            if c.HasField("alter_table_cmd"):
                kind, cmd_lock = _alter_cmd(c.alter_table_cmd, table, info)
                kinds.append(kind)
                lock = stronger_lock(lock, cmd_lock)
        info.actions, info.lock = tuple(kinds), lock
        info.kind = kinds[0] if len(set(kinds)) == 1 else _main_kind(kinds)
        if _obj(s.objtype) == "OBJECT_INDEX":
            info.kind, info.lock = "alter_index", SUE if lock != AE else AE
    elif which == "rename_stmt":
        s = node.rename_stmt
        obj = _obj(s.rename_type)
        target = _rel(s.relation) if s.HasField("relation") else _qualified(s.object)
        info.tables = [target] if s.HasField("relation") else []
        info.kind = {
            "OBJECT_COLUMN": "rename_column", "OBJECT_TABLE": "rename_table",
            "OBJECT_INDEX": "rename_index", "OBJECT_TABCONSTRAINT": "rename_constraint",
            "OBJECT_VIEW": "rename_view", "OBJECT_SEQUENCE": "rename_sequence",
        }.get(obj, "rename_" + obj.removeprefix("OBJECT_").lower())  # fmt: skip
        if info.tables:
            info.lock = SUE if obj == "OBJECT_INDEX" else AE
    elif which == "create_stmt":
        s = node.create_stmt
        table = _rel(s.relation)
        info.kind, info.creates = "create_table", (table,)
        info.tables = [table]
        for elt in list(s.table_elts) + list(s.constraints):
            if elt.HasField("column_def"):
                for c in elt.column_def.constraints:
                    if c.HasField("constraint") and c.constraint.HasField("pktable"):
                        info.tables.append(_rel(c.constraint.pktable))
            elif elt.HasField("constraint") and elt.constraint.HasField("pktable"):
                info.tables.append(_rel(elt.constraint.pktable))
        for parent in s.inh_relations:
            if parent.HasField("range_var"):
                info.tables.append(_rel(parent.range_var))
        # The new table is invisible to others; existing relations it references get a lock.
        if len(info.tables) > 1:
            info.lock = AE if s.HasField("partbound") else SRE
    elif which == "create_table_as_stmt":
        s = node.create_table_as_stmt
        table = _rel(s.into.rel)
        info.kind, info.creates, info.tables = "create_table", (table,), [table]
        info.lock = "ACCESS SHARE"
    elif which == "variable_set_stmt":
        s = node.variable_set_stmt
        setkind = pb.VariableSetKind.Name(s.kind)
        info.setting, info.setting_local = s.name.lower(), s.is_local
        if setkind in {"VAR_RESET", "VAR_RESET_ALL"}:
            info.kind = "reset"
        else:
            info.kind = "set"
            if setkind == "VAR_SET_DEFAULT":
                info.setting_value = "DEFAULT"
            elif s.args:
                values = [_const_text(a) for a in s.args]
                info.setting_value = ", ".join(v for v in values if v is not None)
    elif which == "transaction_stmt":
        tkind = pb.TransactionStmtKind.Name(node.transaction_stmt.kind)
        info.kind = {
            "TRANS_STMT_BEGIN": "begin", "TRANS_STMT_START": "begin",
            "TRANS_STMT_COMMIT": "commit", "TRANS_STMT_ROLLBACK": "rollback",
        }.get(tkind, "transaction")  # fmt: skip
    elif which == "reindex_stmt":
        s = node.reindex_stmt
        info.kind = "reindex"
        info.concurrent = any(
            p.HasField("def_elem") and p.def_elem.defname == "concurrently" for p in s.params
        )
        info.tables = [_rel(s.relation)] if s.HasField("relation") else [s.name]
        info.lock = SUE if info.concurrent else AE
        info.scans = True
    elif which == "vacuum_stmt":
        s = node.vacuum_stmt
        full = any(o.HasField("def_elem") and o.def_elem.defname == "full" for o in s.options)
        info.kind = ("vacuum_full" if full else "vacuum") if s.is_vacuumcmd else "analyze"
        info.tables = [
            _rel(r.vacuum_relation.relation) for r in s.rels if r.HasField("vacuum_relation")
        ]
        info.lock = AE if full else SUE
        info.rewrites, info.scans = full, True
    elif which == "cluster_stmt":
        s = node.cluster_stmt
        info.kind, info.lock, info.rewrites, info.scans = "cluster", AE, True, True
        info.tables = [_rel(s.relation)] if s.HasField("relation") else []
    elif which == "truncate_stmt":
        info.kind, info.lock = "truncate", AE
        info.tables = [_rel(r.range_var) for r in node.truncate_stmt.relations]
    elif which in ("insert_stmt", "update_stmt", "delete_stmt", "merge_stmt"):
        s2 = getattr(node, which)
        info.kind = which.removesuffix("_stmt")
        info.tables = [_rel(s2.relation)]
        info.lock = "ROW EXCLUSIVE"
        info.scans = which in ("update_stmt", "delete_stmt") and not s2.HasField("where_clause")
    elif which == "lock_stmt":
        s = node.lock_stmt
        info.kind = "lock"
        info.tables = [_rel(r.range_var) for r in s.relations if r.HasField("range_var")]
        info.lock = _LOCK_MODES.get(s.mode, AE)
    elif which == "create_trig_stmt":
        info.kind, info.lock = "create_trigger", SRE
        info.tables = [_rel(node.create_trig_stmt.relation)]
    elif which == "comment_stmt":
        info.kind = "comment"
    elif which == "do_stmt":
        info.kind = "do"  # PL/pgSQL body: not analysed
    elif which == "select_stmt":
        info.kind = "select"
    elif which == "create_enum_stmt":
        info.kind = "create_type"
    elif which == "alter_enum_stmt":
        info.kind = "alter_enum"
    elif which == "create_seq_stmt":
        info.kind = "create_sequence"
    elif which == "view_stmt":
        info.kind = "create_view"
        info.creates = (_rel(node.view_stmt.view),)
    elif which == "create_extension_stmt":
        info.kind = "create_extension"
    return info


_DROP_KIND = {
    "OBJECT_TABLE": "drop_table",
    "OBJECT_VIEW": "drop_view",
    "OBJECT_MATVIEW": "drop_view",
    "OBJECT_SEQUENCE": "drop_sequence",
}

_KIND_PRIORITY = (
    "alter_column_type", "add_column", "set_not_null", "add_constraint", "drop_column",
    "validate_constraint", "drop_constraint",
)  # fmt: skip


def _main_kind(kinds: Iterable[str]) -> str:
    listed = list(kinds)
    for k in _KIND_PRIORITY:
        if k in listed:
            return k
    return listed[0] if listed else "other"


def first_tokens(text: str, count: int = 4) -> str:
    """Upper-cased first ``count`` words of a statement (for display)."""
    return " ".join(re.findall(r"\S+", text)[:count]).upper()
