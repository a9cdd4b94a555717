"""The one error base class of the project.

A `CurateError` is a problem the user can fix (a bad flag or config value, an input that is not there, an
endpoint that answers 404, an output folder that is a file, a full disk): every command ends it with one
line on stderr and exit code 2, never a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class CurateError(Exception):
    """A fixable mistake or condition; the message names what was wrong and what to do."""


class StageStopped(CurateError):
    """A stage stopped before marking anything done (misconfiguration found by its first requests or
    shards); finished shards of earlier runs are kept, and a rerun with the cause fixed goes on."""


class OutputNotWritable(CurateError):
    """An output could not be written (no space, no permission, a file where a folder should be)."""


# Output that cannot be written is fixable (another --out, free space, permissions).
_FIXABLE_OS_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                      errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                      errno.EROFS: "read-only file system", errno.ENOTDIR: "a path component is a file, not a folder",
                      errno.EEXIST: "a file is in the way", errno.EISDIR: "it is a folder"}


def output_error(exc: OSError, path=None) -> OutputNotWritable | None:
    """The fixable error for an OSError met while writing outputs, or None when it is not one of those."""
    if exc.errno not in _FIXABLE_OS_ERRORS:
        return None
    where = exc.filename or path
    return OutputNotWritable(f"cannot write {where}: {_FIXABLE_OS_ERRORS[exc.errno]}. Finished shards are kept: "
                             "fix the cause and run the same command again to resume")
