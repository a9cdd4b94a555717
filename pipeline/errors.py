"""The one error base class of the project.

A `CurateError` is a problem the user can fix (a bad flag or config value, an input that is not there, an
endpoint that answers 404, an output folder that is a file, a full disk): every command ends it with one
line on stderr and exit code 2, never a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CurateError(Exception):
    """A fixable mistake or condition; the message names what was wrong and what to do."""


class StageStopped(CurateError):
    """A stage stopped before marking anything done (misconfiguration found by its first requests or
    shards); finished shards of earlier runs are kept, and a rerun with the cause fixed goes on."""
