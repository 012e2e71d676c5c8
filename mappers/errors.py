"""Mapping errors: a named tree, each class carrying the AppRec 8221 code it maps to."""

from __future__ import annotations

from mappers.codes import AppRecError
from mappers.model import OriginalMsgRef, Party


class MapperError(Exception):
    """Base of every mapping failure; `code` is the 8221 error code for the AppRec."""

    code: AppRecError = AppRecError.FORMAT_OTHER

    def __init__(self, message: str, *, code: AppRecError | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        # Filled in by incoming.parse_any when the MsgHead could still be read, so the worker
        # can address an Avvist receipt to the sender of a message it could not map.
        self.original: OriginalMsgRef | None = None
        self.sender: Party | None = None
        self.receiver: Party | None = None


class NotWellFormed(MapperError):
    """Not XML, or not well-formed XML (T01)."""

    code = AppRecError.NOT_XML


class EmptyDocument(NotWellFormed):
    """The body is empty or only whitespace (T01)."""


class BadEncoding(NotWellFormed):
    """The bytes are not UTF-8, or declare another encoding (T01)."""


class HostileXml(NotWellFormed):
    """A DOCTYPE / DTD (entity expansion, external entities) refused before it is read (T01)."""


class TooLarge(NotWellFormed):
    """Larger than the size cap; refused before parsing (T01)."""


class TooDeep(NotWellFormed):
    """Elements nested deeper than the depth cap (T01)."""


class SchemaInvalid(MapperError):
    """Well-formed XML that does not validate against the project schemas (T02)."""

    code = AppRecError.NOT_VALID

    def __init__(self, errors: list[str], *, code: AppRecError | None = None) -> None:
        head = errors[0] if errors else "document does not validate"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{head}{more}", code=code)
        self.errors = list(errors)


class UnsupportedMessage(MapperError):
    """Valid XML, but not a message type, process or function timebok handles (T10)."""

    code = AppRecError.UNSUPPORTED


class DataError(MapperError):
    """Valid XML whose business data cannot be used (E3x)."""

    code = AppRecError.PATIENT_DATA_MISSING


class MissingData(DataError):
    """Required business data is absent, e.g. the patient's FNR (E30 unless told otherwise)."""

    code = AppRecError.PATIENT_FNR_MISSING


class InvalidData(DataError):
    """Business data is present but wrong, e.g. FNR check digits (E31 unless told otherwise)."""

    code = AppRecError.PATIENT_FNR_WRONG


class InvalidInput(MapperError):
    """A dataclass handed to a builder cannot become a valid message (X99)."""

    code = AppRecError.OTHER
