"""The official KITH schemas (../shared/standards/kith), for conformance checks in any test.

They have no xCal or Pasientrelasjon schema, so the wrapper imports the project's profiles
for those two namespaces.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from lxml import etree

from mappers import xmlsafe
from mappers.codes import NS_APPREC_10, NS_APPREC_11, NS_DIALOG, NS_MSGHEAD, NS_RELATION, NS_XCAL

STANDARDS = Path(__file__).resolve().parents[1].parent / "shared" / "standards" / "kith"
EXAMPLES = STANDARDS / "examples"
AVAILABLE = (STANDARDS / "MsgHead-v1_2.xsd").is_file()
SKIP_REASON = f"official KITH schemas not found at {STANDARDS}; conformance check skipped"


@functools.cache
def schema() -> etree.XMLSchema:
    """One wrapper schema: official MsgHead, Dialogmelding, AppRec 1.0/1.1 + our two profiles."""
    imports = {
        NS_MSGHEAD: STANDARDS / "MsgHead-v1_2.xsd",
        NS_DIALOG: STANDARDS / "dialogmelding-v1.1.xsd",
        NS_APPREC_10: STANDARDS / "apprec-v1.0.xsd",
        NS_APPREC_11: STANDARDS / "apprec-v1.1.xsd",
        NS_XCAL: xmlsafe.SCHEMA_DIR / "xcal.xsd",
        NS_RELATION: xmlsafe.SCHEMA_DIR / "pasientrelasjon.xsd",
    }
    lines = "\n".join(
        f'  <xs:import namespace="{ns}" schemaLocation="{path.as_uri()}"/>'
        for ns, path in imports.items()
    )
    text = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">\n{lines}\n</xs:schema>\n'
    wrapper = Path(tempfile.mkdtemp(prefix="timebok-official-")) / "official.xsd"
    wrapper.write_text(text, encoding="utf-8")
    return etree.XMLSchema(etree.parse(str(wrapper)))


def validate_official(body: bytes) -> None:
    """Raise AssertionError listing every official-schema error of a document."""
    doc = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    validator = schema()
    if not validator.validate(doc):
        errors = "\n".join(f"line {e.line}: {e.message}" for e in validator.error_log)
        raise AssertionError(f"not valid against the official schemas:\n{errors}")
