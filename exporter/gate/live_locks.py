"""Table-level lock modes: names, strength and the conflict table (pure).

From PostgreSQL's documentation ("Explicit Locking", Table 13.2). The parse
layer names modes the way the documentation does ("ACCESS EXCLUSIVE");
``pg_locks.mode`` names them ``AccessExclusiveLock``.
"""

from __future__ import annotations

from exporter.gate.sql import LOCK_LEVELS

#: Modes from weakest to strongest (the parse layer's levels, without "no lock").
MODES: tuple[str, ...] = LOCK_LEVELS[1:]

_CONFLICTS: dict[str, frozenset[str]] = {
    "ACCESS SHARE": frozenset({"ACCESS EXCLUSIVE"}),
    "ROW SHARE": frozenset({"EXCLUSIVE", "ACCESS EXCLUSIVE"}),
    "ROW EXCLUSIVE": frozenset({"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"}),
    "SHARE UPDATE EXCLUSIVE": frozenset(
        {"SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"}
    ),
    "SHARE": frozenset(
        {
            "ROW EXCLUSIVE",
            "SHARE UPDATE EXCLUSIVE",
            "SHARE ROW EXCLUSIVE",
            "EXCLUSIVE",
            "ACCESS EXCLUSIVE",
        }
    ),
    "SHARE ROW EXCLUSIVE": frozenset(
        {
            "ROW EXCLUSIVE",
            "SHARE UPDATE EXCLUSIVE",
            "SHARE",
            "SHARE ROW EXCLUSIVE",
            "EXCLUSIVE",
            "ACCESS EXCLUSIVE",
        }
    ),
    "EXCLUSIVE": frozenset(MODES[1:]),
    "ACCESS EXCLUSIVE": frozenset(MODES),
}


def normalize(mode: str) -> str:
    """``AccessExclusiveLock`` / ``access exclusive`` -> ``ACCESS EXCLUSIVE``; '' if unknown."""
    text = mode.strip()
    if text.endswith("Lock"):
        text = text[: -len("Lock")]
    if text.upper() == text or " " in text or "_" in text:
        words = text.replace("_", " ").split()
    else:  # CamelCase, as pg_locks writes it
        words = []
        current = ""
        for ch in text:
            if ch.isupper() and current:
                words.append(current)
                current = ch
            else:
                current += ch
        if current:
            words.append(current)
    name = " ".join(w.upper() for w in words)
    return name if name in _CONFLICTS else ""


def conflicts(a: str, b: str) -> bool:
    """Whether two table lock modes conflict (either name form)."""
    na, nb = normalize(a), normalize(b)
    return bool(na and nb and nb in _CONFLICTS[na])


def strongest(modes: list[str] | tuple[str, ...]) -> str:
    """The strongest of the given modes ('' when none is known)."""
    known = [normalize(m) for m in modes]
    ranked = [m for m in known if m]
    return max(ranked, key=MODES.index) if ranked else ""


def blocks_reads(mode: str) -> bool:
    """A plain SELECT (ACCESS SHARE) waits behind this mode."""
    return conflicts(mode, "ACCESS SHARE")


def blocks_writes(mode: str) -> bool:
    """INSERT/UPDATE/DELETE (ROW EXCLUSIVE) wait behind this mode."""
    return conflicts(mode, "ROW EXCLUSIVE")
