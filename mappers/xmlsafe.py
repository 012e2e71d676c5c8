"""Hardened XML parsing, the cached project schemas, and the element helpers all mappers share."""

from __future__ import annotations

import codecs
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
    MapperError,
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
_XML_DECL_TEXT = re.compile(r"\A(<\?xml\s[^>]*?encoding\s*=\s*)[\"']([^\"']*)[\"']")
_ENC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,39}")  # XML 1.0 EncName, capped
_PROLOG_ITEM = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->)", re.DOTALL)
_CLARK = re.compile(r"\{([^}]*)\}")
_P = ParamSpec("_P")
_R = TypeVar("_R")
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class _Family:
    """A Unicode encoding form recognised by its byte-order mark or first characters."""

    name: str  # as a declaration names it
    codec: str  # the Python codec that decodes the whole document (BOM included)
    codecs: frozenset[str]  # Python names of the declarations that agree with it
    width: int  # bytes per code unit


_UTF8 = _Family("UTF-8", "utf-8-sig", frozenset({"utf-8", "utf-8-sig"}), 1)
_UTF16 = frozenset({"utf-16", "utf-16-le", "utf-16-be"})
_UTF32 = frozenset({"utf-32", "utf-32-le", "utf-32-be"})
# XML 1.0 appendix F; the four-byte forms first, since a UTF-32LE mark starts like UTF-16LE's.
_SIGNATURES: tuple[tuple[bytes, _Family], ...] = (
    (b"\x00\x00\xfe\xff", _Family("UTF-32", "utf-32", _UTF32, 4)),
    (b"\xff\xfe\x00\x00", _Family("UTF-32", "utf-32", _UTF32, 4)),
    (b"\x00\x00\x00<", _Family("UTF-32BE", "utf-32-be", _UTF32, 4)),
    (b"<\x00\x00\x00", _Family("UTF-32LE", "utf-32-le", _UTF32, 4)),
    (_UTF8_BOM, _UTF8),
    (b"\xfe\xff", _Family("UTF-16", "utf-16", _UTF16, 2)),
    (b"\xff\xfe", _Family("UTF-16", "utf-16", _UTF16, 2)),
    (b"\x00<\x00?", _Family("UTF-16BE", "utf-16-be", _UTF16, 2)),
    (b"<\x00?\x00", _Family("UTF-16LE", "utf-16-le", _UTF16, 2)),
)


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
    """Parse untrusted bytes; refuse empty, oversized, misencoded, DTD-bearing or too deep XML."""
    if len(data) > max_bytes:
        raise TooLarge(f"document is {len(data)} bytes, over the cap of {max_bytes} bytes")
    if not data or data.isspace():
        raise EmptyDocument("empty document")
    data = as_utf8(data)
    _check_prolog(data)
    root = _parse(data)
    if root.getroottree().docinfo.internalDTD is not None:
        raise HostileXml("document has a DOCTYPE; DTDs and entity declarations are refused")
    _check_depth(root, max_depth)
    return root


def as_utf8(data: bytes) -> bytes:
    """The document as UTF-8 bytes, checked against its byte-order mark and declaration.

    UTF-8 input comes back as it is. Any other encoding the document declares correctly
    (ISO-8859-1, windows-1252, UTF-16 with its byte-order mark, ...) and both Python and
    lxml know is decoded strictly and re-encoded as UTF-8 with the declaration changed to
    match, so every later check sees exactly the text lxml parses. Bytes that contradict
    their declaration, and non-UTF-8 bytes without one, are BadEncoding (T01).
    """
    family = _family(data)
    declared = _declared(data, family)
    utf8 = declared is None or _codec_name(declared) in _UTF8.codecs
    if utf8 and (family is None or family is _UTF8):
        _check_utf8(data)
        return data
    text = _decode(data, family, declared)
    if not text.strip():
        raise EmptyDocument("empty document")
    return _XML_DECL_TEXT.sub(r'\g<1>"UTF-8"', text, count=1).encode("utf-8")


def document_text(data: bytes) -> str:
    """Best-effort text of a stored document for people to read (never for parsing)."""
    try:
        return as_utf8(data).decode("utf-8")
    except MapperError:
        return data.decode("utf-8", "replace")


def _family(data: bytes) -> _Family | None:
    """The Unicode encoding form a byte-order mark or the first characters show, if any."""
    for prefix, family in _SIGNATURES:
        if data.startswith(prefix):
            return family
    return None


def _declared(data: bytes, family: _Family | None) -> str | None:
    """The encoding name of the XML declaration; BadEncoding when it is no encoding name."""
    if family is None:
        found = _XML_DECL.match(data)
        name = None if found is None else found.group(1).decode("ascii", "replace")
    else:
        head = data[: 512 * family.width].decode(family.codec, "ignore")
        found_text = _XML_DECL_TEXT.match(head.removeprefix("\ufeff"))
        name = None if found_text is None else found_text.group(2)
    if name is not None and not _ENC_NAME.fullmatch(name):
        raise BadEncoding(f"declared encoding {name[:40]!r} is not an encoding name")
    return name


def _decode(data: bytes, family: _Family | None, declared: str | None) -> str:
    """Strictly decode a non-UTF-8 document, refusing any contradiction."""
    label = declared or (family.name if family is not None else "UTF-8")
    codec = _codec_name(label)
    if codec is None or not _lxml_knows(label):
        raise BadEncoding(f"declared encoding {label!r} is not one timebok can read")
    if family is not None and codec not in family.codecs:
        raise BadEncoding(
            f"declared encoding {label!r} contradicts the document's {family.name} "
            "byte-order mark or first characters"
        )
    try:
        text = data.decode(family.codec if family is not None else codec)
    except UnicodeDecodeError as exc:
        bad = data[exc.start]
        raise BadEncoding(
            f"not valid {label}: byte 0x{bad:02x} at offset {exc.start} ({exc.reason})"
        ) from exc
    if family is None and not data.isascii() and _is_utf8(data):
        # Every byte is valid ISO-8859-1, so only this shows the usual mistake: UTF-8 text
        # under a single-byte declaration (genuine Norwegian ISO-8859-1 is never valid UTF-8).
        raise BadEncoding(f"declared encoding {label!r}, but the bytes are UTF-8")
    return text.removeprefix("\ufeff")


def _is_utf8(data: bytes) -> bool:
    """Whether the bytes are valid UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@lru_cache(maxsize=64)
def _codec_name(label: str) -> str | None:
    """Python's canonical name for an encoding label; None when it is not a text encoding."""
    try:
        info = codecs.lookup(label)
        "".encode(info.name)  # LookupError for bytes-to-bytes and text-to-text codecs
    except LookupError:
        return None
    return info.name


@lru_cache(maxsize=64)
def _lxml_knows(label: str) -> bool:
    """Whether libxml2 reads a document declaring `label` (a tiny probe, once per label)."""
    codec = _codec_name(label)
    if codec is None:
        return False
    probe = f'<?xml version="1.0" encoding="{label}"?><a/>'
    try:
        return etree.fromstring(probe.encode(codec), _parser()).tag == "a"
    except (UnicodeError, etree.XMLSyntaxError):
        return False


def _check_utf8(data: bytes) -> None:
    """Refuse bytes that are not UTF-8, naming the offending byte."""
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
