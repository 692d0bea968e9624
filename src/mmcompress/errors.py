"""Errors that reach the user as one line and a non-zero exit status, never as a traceback."""

from __future__ import annotations

import errno

DISK_PROBLEMS = {
    errno.ENOSPC: "no space left on device writing {}; free space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded writing {}; free space or write elsewhere",
    errno.EACCES: "permission denied at {}; make it writable or write elsewhere",
    errno.EPERM: "operation not permitted at {}; make it writable or write elsewhere",
    errno.EROFS: "read-only file system at {}; write elsewhere",
}


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""

    exit_code = 1


class ConfigError(UserError):
    """A bad override, an unknown option or an invalid config value (exit status 2, like a usage error)."""

    exit_code = 2


def disk_problem(exc: BaseException) -> str | None:
    """The one-line message for a full disk or an unwritable path (ENOSPC, EDQUOT, EACCES, EPERM, EROFS)
    anywhere along the exception's chain (libraries wrap OSErrors in their own errors), naming the path."""
    chain = [exc]
    while len(chain) < 8 and (chain[-1].__cause__ or chain[-1].__context__):
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    full = [e for e in chain if isinstance(e, OSError) and e.errno in DISK_PROBLEMS]
    if not full:
        return None
    cause = next((e for e in full if e.filename), full[0])  # the one that knows its file
    where = cause.filename or "a file (rerun with --debug to see which)"
    return (
        DISK_PROBLEMS[cause.errno].format(where)
        + " (paths.runs=..., run_dir=..., MMCOMPRESS_CACHE=...) — rerun the same command to resume"
    )
