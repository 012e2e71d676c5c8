"""Hardened XML parsing, the cached project schemas, and the element helpers all mappers share."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache, lru_cache, wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast
from zoneinfo import ZoneInfo

from lxml import etree

from mappers.codes import (
    NS_APPREC_10,
    NS_APPREC_11,
    NS_DIALOG,
    NS_FK1,
    NS_MSGHEAD,
    NS_RELATION,
    NS_XCAL,
)
from mappers.errors import (
    BadEncoding,
    EmptyDocument,
    HostileXml,
    InvalidInput,
    NotWellFormed,
    SchemaInvalid,
    TooDeep,
    TooLarge,
)

MAX_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 100
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
SCHEMA_FILE = SCHEMA_DIR / "timebok.xsd"

# Short prefixes for readable error messages; the instance documents use their own.
PREFIXES: dict[str, str] = {
    NS_MSGHEAD: "mh",
    NS_DIALOG: "dia",
    NS_FK1: "fk1",
    NS_XCAL: "xcal",
    NS_RELATION: "pr",
    NS_APPREC_10: "ar",
    NS_APPREC_11: "ar",
}

_XML_DECL = re.compile(rb"<\?xml\s[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_PROLOG_ITEM = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->)", re.DOTALL)
_CLARK = re.compile(r"\{([^}]*)\}")
_P = ParamSpec("_P")
_R = TypeVar("_R")
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class _PerThread(threading.local):
    """Parser, schema and depth probes, built lazily once per thread.

    lxml validators keep their error log on the instance and parsers hold a parsing
    context, so sharing one across threads would mix up errors; one per thread is cheap.
    """

    parser: etree.XMLParser | None = None
    schema: etree.XMLSchema | None = None
    probes: dict[int, etree.XPath]

    def __init__(self) -> None:
        self.probes = {}


_local = _PerThread()


# ---------------------------------------------------------------------------- parsing


def parse(data: bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> etree._Element:
    """Parse untrusted bytes, refusing empty, oversized, non-UTF-8, DTD-bearing or too deep XML."""
    if len(data) > max_bytes:
        raise TooLarge(f"document is {len(data)} bytes, over the cap of {max_bytes} bytes")
    if not data or data.isspace():
        raise EmptyDocument("empty document")
    _check_utf8(data)
    _check_prolog(data)
    root = _parse(data)
    if root.getroottree().docinfo.internalDTD is not None:
        raise HostileXml("document has a DOCTYPE; DTDs and entity declarations are refused")
    _check_depth(root, max_depth)
    return root


def _check_utf8(data: bytes) -> None:
    """Refuse anything that is not UTF-8, naming the offending byte."""
    if data.startswith(_UTF16_BOMS):
        raise BadEncoding("document starts with a UTF-16 byte-order mark; only UTF-8 is accepted")
    declared = _XML_DECL.match(data.removeprefix(_UTF8_BOM))
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        name = declared.group(1).decode("ascii", "replace")
        raise BadEncoding(f"declared encoding {name!r}; only UTF-8 is accepted")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start]
        raise BadEncoding(
            f"not valid UTF-8: byte 0x{bad:02x} at offset {exc.start} ({exc.reason})"
        ) from exc


def _check_prolog(data: bytes) -> None:
    """Refuse a DOCTYPE before libxml2 sees it: no DTD, so no entity expansion of any kind."""
    pos = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    while (item := _PROLOG_ITEM.match(data, pos)) is not None:
        pos = item.end()
    rest = data[pos : pos + 64].lstrip()
    if rest.startswith(b"<!"):
        raise HostileXml("document has a DOCTYPE; DTDs and entity declarations are refused")


def _parse(data: bytes) -> etree._Element:
    """Run the hardened parser, mapping libxml2's own limits to our error classes."""
    try:
        return etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        message = str(exc)
        if "depth" in message.lower():
            raise TooDeep(f"elements nested too deeply: {message}") from exc
        raise NotWellFormed(f"not well-formed XML: {message}") from exc


def _parser() -> etree.XMLParser:
    """The per-thread hardened parser."""
    if _local.parser is None:
        _local.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,  # keeps libxml2's own size and depth limits on
            remove_comments=True,  # a comment inside a value would split its text
            remove_pis=True,
            collect_ids=False,  # no xml:id hash table for an attacker to fill
        )
    return _local.parser


def _check_depth(root: etree._Element, max_depth: int) -> None:
    """Refuse elements nested deeper than max_depth (libxml2 itself stops at 256)."""
    probe = _local.probes.get(max_depth)
    if probe is None:
        # An element at depth max_depth + 1 exists iff this path selects something; XPath
        # walks level by level in C, with no Python recursion.
        probe = etree.XPath("boolean(/" + "/".join(["*"] * (max_depth + 1)) + ")")
        _local.probes[max_depth] = probe
    if probe(root):
        raise TooDeep(f"elements nested deeper than {max_depth} levels")


# ---------------------------------------------------------------------------- schemas


_COMPILING = threading.Lock()


def schema() -> etree.XMLSchema:
    """The project schema set (timebok.xsd and its imports), compiled once per thread."""
    if _local.schema is None:
        # libxml2 reads the imported schema files through shared parser state: two threads
        # compiling at once can fail with "not valid XML Schema". One compile at a time.
        with _COMPILING:
            _local.schema = etree.XMLSchema(file=str(SCHEMA_FILE))
    return _local.schema


def validate(root: etree._Element) -> None:
    """Validate against the project schemas, raising SchemaInvalid with readable lines."""
    checker = schema()
    if checker.validate(root):
        return
    # lxml-stubs do not describe the error log's entries.
    entries = cast("Iterable[Any]", checker.error_log)
    raise SchemaInvalid([_describe(entry, root) for entry in entries])


def _describe(entry: Any, root: etree._Element) -> str:
    """One readable line: where (line and element path) and what, with short prefixes."""
    line: int = entry.line
    where = _element_path(root, entry.path)
    if line:
        where = f"line {line}, {where}"
    return f"{where}: {short_names(str(entry.message))}"


def _element_path(root: etree._Element, xpath: str | None) -> str:
    """Turn libxml2's '/*/*[2]' path into '/MsgHead/Document[2]/...'."""
    try:
        found = root.getroottree().xpath(xpath) if xpath else []
    except etree.XPathError:
        found = []
    if not isinstance(found, list) or not found or not isinstance(found[0], etree._Element):
        return xpath or "/"
    steps = []
    for element in [found[0], *found[0].iterancestors()]:
        steps.append(_step(element))
    return "/" + "/".join(reversed(steps))


def _step(element: etree._Element) -> str:
    """The local name, with a position when siblings share the name."""
    name = etree.QName(element).localname
    parent = element.getparent()
    if parent is None:
        return name
    same = [sibling for sibling in parent if sibling.tag == element.tag]
    return name if len(same) == 1 else f"{name}[{same.index(element) + 1}]"


def short_names(message: str) -> str:
    """Replace '{namespace}Name' in a message with 'prefix:Name' (or 'Name' when unknown)."""
    return _CLARK.sub(_prefix, message)


def _prefix(match: re.Match[str]) -> str:
    """The short prefix for one '{namespace}'."""
    prefix = PREFIXES.get(match.group(1))
    return "" if prefix is None else f"{prefix}:"


# ---------------------------------------------------------------------------- building


def new_root(tag: str, namespace: str, **prefixes: str) -> etree._Element:
    """A root element with `namespace` as default namespace and optional extra prefixes."""
    nsmap: dict[str | None, str] = {None: namespace}
    nsmap.update(prefixes)
    # lxml-stubs type nsmap keys as str, but None (the default namespace) is what lxml wants.
    return etree.Element(tag, nsmap=cast("dict[str, str]", nsmap))


def sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    """Append a child element, with text when given."""
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def coded(
    parent: etree._Element, tag: str, v: str, dn: str | None = None, s: str | None = None
) -> etree._Element:
    """Append a KITH CS/CV element: code V, code system S, display name DN."""
    attrib = {"V": v}
    if s is not None:
        attrib["S"] = s
    if dn is not None:
        attrib["DN"] = dn
    return etree.SubElement(parent, tag, attrib)


# lxml's _Element.__copy__ copies the whole subtree; called directly it skips copy.deepcopy's
# dispatch, which costs as much as copying a small template. (lxml-stubs do not declare it.)
clone: Callable[[etree._Element], etree._Element] = etree._Element.__copy__  # type: ignore[attr-defined]


def guarded(build: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn lxml's ValueError for text or attributes XML cannot carry into InvalidInput."""

    @wraps(build)
    def guard(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        """The builder, with ValueError from lxml as InvalidInput."""
        try:
            return build(*args, **kwargs)
        except ValueError as exc:
            raise InvalidInput(f"a value cannot be carried in XML: {exc}") from exc

    return guard


def serialise(root: etree._Element) -> bytes:
    """UTF-8 bytes with an XML declaration."""
    body: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def format_datetime(value: datetime, where: str) -> str:
    """xs:dateTime in UTC with Z; a naive datetime is refused because its instant is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{where}: datetime must be timezone-aware")
    return _utc_text(value)


@lru_cache(maxsize=256)
def _utc_text(value: datetime) -> str:
    """The UTC text of an aware datetime; cached because a message repeats its GenDate."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------- reading


def first(parent: etree._Element | None, tag: str) -> etree._Element | None:
    """The first child with this (Clark-notation) tag; twice as fast as find(), which goes
    through ElementPath."""
    if parent is not None:
        for element in parent.iterchildren(tag):
            return element
    return None


def child(parent: etree._Element, tag: str) -> etree._Element:
    """The required child element (schema-valid input always has it)."""
    element = first(parent, tag)
    if element is None:
        name = etree.QName(tag).localname
        raise SchemaInvalid([f"{etree.QName(parent).localname}/{name} is missing"])
    return element


def text_of(parent: etree._Element, tag: str) -> str | None:
    """The text of an optional child, '' when present but empty."""
    element = first(parent, tag)
    if element is None:
        return None
    return element.text or ""


def all_text(element: etree._Element) -> str:
    """All text below an element (free text may carry XHTML markup)."""
    if len(element) == 0:
        return element.text or ""
    return etree.tostring(element, method="text", encoding="unicode", with_tail=False)


def required_text(parent: etree._Element, tag: str) -> str:
    """The text of a required child."""
    return child(parent, tag).text or ""


def attr(element: etree._Element | None, name: str) -> str | None:
    """An attribute of an optional element."""
    return None if element is None else element.get(name)


def parse_datetime(text: str, where: str) -> datetime:
    """An aware datetime from xs:dateTime; without a zone it is Norwegian local time."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise SchemaInvalid([f"{where}: {text!r} is not a date-time timebok can read"]) from exc
    if value.tzinfo is None:
        # KITH senders (AppRec 1.0 in particular) often omit the zone; they mean Norway.
        return value.replace(tzinfo=_oslo())
    return value


@cache
def _oslo() -> ZoneInfo:
    """Europe/Oslo, loaded on first use rather than at import."""
    return ZoneInfo("Europe/Oslo")
