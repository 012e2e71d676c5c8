"""The worker's error tree: retry-worthy (transient) vs give-up (permanent)."""

from __future__ import annotations


class TimebokError(Exception):
    """Base of every timebok error."""


class TransientError(TimebokError):
    """Worth retrying later: a dependency is down or busy."""


class EpjUnavailable(TransientError):
    """The EPJ transport (broker) could not be reached."""


class StoreUnavailable(TransientError):
    """The database could not be reached."""


class PermanentError(TimebokError):
    """Retrying will not help: the input or the code is wrong."""


class RejectedRequest(PermanentError):
    """A booking request broke a rule (reason is field-level and safe to show)."""


class NotFound(TimebokError):
    """The thing asked for does not exist."""


class NotMigrated(TimebokError):
    """The database schema is missing or behind; run `timebok migrate`."""
