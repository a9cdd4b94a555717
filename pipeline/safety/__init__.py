"""Safety filters: blocked sites, personal data, benchmark decontamination."""

from __future__ import annotations

from pipeline.errors import CurateError


class SafetyInputError(CurateError):
    """A blocklist or an evaluation set that cannot be used (missing, empty, not text, without the named fields);
    the message names the path and what is wrong."""
