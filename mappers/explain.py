"""Plain-words diagnostics for any document, for the `timebok validate FILE.xml` command."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import xmlschema
from lxml import etree

from mappers import incoming, xmlsafe
from mappers.errors import MapperError


def explain(data: bytes, *, max_bytes: int = xmlsafe.MAX_BYTES, semantic: bool = True) -> list[str]:
    """Every problem timebok finds in a document, one readable line each; [] when it is fine.

    Hostile or not well-formed input gives one line with its AppRec code. Schema problems
    come from the pure-Python `xmlschema` validator, which names each element path and
    keeps going after the first error. With `semantic`, a schema-valid document is also
    mapped, so an unsupported process or a wrong FNR is reported too.
    """
    try:
        root = xmlsafe.parse(data, max_bytes=max_bytes)
        incoming.check_root(root)
    except MapperError as exc:
        return [describe_error(exc)]
    problems = [_describe(error) for error in _validator().iter_errors(etree.ElementTree(root))]
    if problems or not semantic:
        return problems
    try:
        incoming.map_root(root)
    except MapperError as exc:
        return [describe_error(exc)]
    return []


def describe_error(exc: MapperError) -> str:
    """One line for a mapper error: its 8221 code and message."""
    return f"{exc.code}: {exc}"


_CLASS = re.compile(r" for <class '[^']*'>")  # xmlschema names its Python types; users need not


@cache
def _validator() -> Any:
    """The project schemas for xmlschema, loaded on first use (it takes a moment)."""
    return xmlschema.XMLSchema(str(xmlsafe.SCHEMA_FILE))


def _describe(error: Any) -> str:
    """'line N, /path: what is wrong' for one xmlschema validation error."""
    path, line = str(error.path or "/"), error.sourceline
    if isinstance(error, xmlschema.XMLSchemaChildrenValidationError):
        child = error.invalid_child
        if child is None:
            what = f"missing required element {_expected(error)}"
        else:
            # point at the offending child itself, not at its parent
            line = getattr(child, "sourceline", None)
            path = f"{path}/{etree.QName(str(child.tag)).localname}"
            found = xmlsafe.short_names(str(child.tag))
            what = f"unexpected element {found}; expected {_expected(error)}"
    else:
        what = _CLASS.sub("", xmlsafe.short_names(str(error.reason or error.message)))
    return f"line {line}, {path}: {what}" if line else f"{path}: {what}"


def _expected(error: Any) -> str:
    """The expected element names of a content error, in plain words."""
    tags = [xmlsafe.short_names(str(tag)) for tag in (error.expected_tags or [])]
    return " or ".join(tags) if tags else "no more elements"
