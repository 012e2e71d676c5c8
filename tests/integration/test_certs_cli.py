"""`timebok certs init` and the certificates of `timebok status`, as subprocesses (real stack)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_URL, ROOT
from worker.adapters import crypto
from worker.adapters.registry import Registry
from worker.adapters.store.migrate import upgrade
from worker.settings import SAMPLE_REGISTRY

pytestmark = pytest.mark.integration

OWN = "8093244"
CLINICS = ("8090001", "8090010", "8090020", "8090030")  # the sample registry's
XML = b'<?xml version="1.0" encoding="UTF-8"?><MsgHead/>'


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    """A migrated PostgreSQL schema of this module's own: status counts what it holds."""
    name = f"timebok_certs_{os.getpid()}_{secrets.token_hex(3)}"
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    migrating = create_engine(PG_URL, connect_args={"options": f"-csearch_path={name}"})
    upgrade(migrating)
    migrating.dispose()
    yield name
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    engine.dispose()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def registry_copy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "registry.toml"
    shutil.copy(SAMPLE_REGISTRY, path)
    return path


def with_certificates(registry: Path, lines: list[dict[str, str]], only: set[str] | None) -> None:
    """Put the lines `certs init` printed into the registry's [[clinic]] tables."""
    text_ = registry.read_text(encoding="utf-8")
    for entry in lines:
        if only is not None and entry["her_id"] not in only:
            continue
        anchor = f"her_id = {entry['her_id']}\n"
        assert anchor in text_
        text_ = text_.replace(
            anchor,
            anchor + f'signing_cert = "{entry["signing_cert"]}"\n'
            f'encryption_cert = "{entry["encryption_cert"]}"\n',
        )
    registry.write_text(text_, encoding="utf-8")


def init(registry: Path, directory: Path, *extra: str) -> dict[str, Any]:
    proc = run(
        {"TIMEBOK_REGISTRY_FILE": str(registry)}, "certs", "init", str(directory), "--json", *extra
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_certs_init_writes_the_pki_and_prints_the_lines_that_use_it(tmp_path: Path) -> None:
    registry = registry_copy(tmp_path / "conf")
    directory = tmp_path / "conf" / "certs"
    proc = run({"TIMEBOK_REGISTRY_FILE": str(registry)}, "certs", "init", str(directory))
    assert proc.returncode == 0, proc.stderr
    for her_id in (OWN, *CLINICS):
        for role in ("signing", "encryption"):
            key, cert = directory / f"{her_id}-{role}.key", directory / f"{her_id}-{role}.pem"
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
            assert cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert (directory / "ca.pem").exists() and (directory / "ca.key").exists()
    out = proc.stdout
    assert f"TIMEBOK_SIGNING_KEY={directory / (OWN + '-signing.key')}" in out
    assert f"TIMEBOK_ENCRYPTION_CERT={directory / (OWN + '-encryption.pem')}" in out
    assert 'signing_cert = "certs/8090001-signing.pem"' in out  # relative to the registry file
    assert 'encryption_cert = "certs/8090030-encryption.pem"' in out

    # the printed lines and settings work: the registry loads them, and a message goes round
    data = init(registry, directory)
    assert data["written"] == [] and len(data["kept"]) == 2 + 4 * (1 + len(CLINICS))
    with_certificates(registry, data["registry"], None)
    clinic = Registry.load(registry).clinic("8090001")
    assert clinic is not None and clinic.signing_cert == directory / "8090001-signing.pem"
    env = data["settings"]
    own = crypto.load_keys(
        Path(env["TIMEBOK_SIGNING_KEY"]),
        Path(env["TIMEBOK_SIGNING_CERT"]),
        Path(env["TIMEBOK_ENCRYPTION_KEY"]),
        Path(env["TIMEBOK_ENCRYPTION_CERT"]),
    )
    book = crypto.CertificateBook(Registry.load(registry).clinic)
    now = datetime.now(UTC)
    blob = crypto.protect(XML, own, book.party("8090001"), now)
    clinic_keys = crypto.load_keys_from_dir(directory, "8090001")
    own_certs = crypto.load_party_certs(
        Path(env["TIMEBOK_SIGNING_CERT"]), Path(env["TIMEBOK_ENCRYPTION_CERT"])
    )
    assert crypto.unprotect(blob, clinic_keys, own_certs, now) == XML


def test_certs_init_keeps_pairs_and_adds_missing_ones_unless_forced(tmp_path: Path) -> None:
    registry = registry_copy(tmp_path)
    directory = tmp_path / "pki"
    first = init(registry, directory)
    before = (directory / "8090001-signing.pem").read_bytes()
    (directory / "8090020-encryption.key").unlink()
    second = init(registry, directory)
    assert second["written"] == [
        str(directory / "8090020-encryption.key"),
        str(directory / "8090020-encryption.pem"),
    ]
    assert (directory / "8090001-signing.pem").read_bytes() == before
    forced = init(registry, directory, "--force")
    assert sorted(forced["written"]) == sorted(first["written"])
    assert (directory / "8090001-signing.pem").read_bytes() != before


def test_certs_init_with_a_broken_registry_exits_2(tmp_path: Path) -> None:
    proc = run(
        {"TIMEBOK_REGISTRY_FILE": str(tmp_path / "absent.toml")}, "certs", "init", str(tmp_path)
    )
    assert proc.returncode == 2
    assert "absent.toml: cannot read" in proc.stderr


# -- timebok status ---------------------------------------------------------------------------


def status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    proc = run(env, "status", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def stack_env(redis_url: str, schema: str, registry: Path) -> dict[str, str]:
    return {
        "TIMEBOK_BROKER_URL": redis_url,
        "TIMEBOK_DATABASE_URL": PG_URL,
        "TIMEBOK_DATABASE_SCHEMA": schema,
        "TIMEBOK_REGISTRY_FILE": str(registry),
    }


def cert_attention(data: dict[str, Any]) -> list[str]:
    return [a for a in data["attention"] if "cert" in a or "our keys" in a]


def test_status_without_certificates_on_kombu_is_as_before(
    redis_url: str, schema: str, tmp_path: Path
) -> None:
    code, data = status(stack_env(redis_url, schema, registry_copy(tmp_path)))
    assert code == 0, data["attention"]
    assert data["certificates"] == [] and data["attention"] == []


def test_status_lists_every_certificate_with_its_expiry(
    redis_url: str, schema: str, tmp_path: Path
) -> None:
    registry = registry_copy(tmp_path)
    data = init(registry, tmp_path / "pki")
    with_certificates(registry, data["registry"], None)
    env = stack_env(redis_url, schema, registry) | data["settings"]
    code, got = status(env)  # kombu: checked because certificates are configured
    assert code == 0, got["attention"]
    rows = got["certificates"]
    assert [(r["her_id"], r["role"], r["own"]) for r in rows] == [
        (her_id, role, her_id == OWN)
        for her_id in (OWN, *CLINICS)
        for role in ("signing", "encryption")
    ]
    assert all(r["days_left"] in (364, 365) and r["problem"] is None for r in rows)
    assert (
        rows[0]["not_after"][:10] == datetime.fromisoformat(rows[0]["not_after"]).date().isoformat()
    )
    text_ = run(env, "status")
    assert text_.returncode == 0
    assert "8093244 (own)" in text_.stdout and "days left" in text_.stdout


def test_status_needs_attention_for_a_certificate_expiring_within_30_days(
    redis_url: str, schema: str, tmp_path: Path
) -> None:
    registry = registry_copy(tmp_path)
    good = init(registry, tmp_path / "pki")
    soon = init(registry_copy(tmp_path / "soon"), tmp_path / "soon-pki", "--days", "29")
    with_certificates(registry, [e for e in soon["registry"] if e["her_id"] == "8090001"], None)
    with_certificates(registry, [e for e in good["registry"] if e["her_id"] != "8090001"], None)
    env = stack_env(redis_url, schema, registry) | good["settings"]
    code, data = status(env)  # kombu, but certificates are configured: they are checked
    assert code == 1
    warnings = cert_attention(data)
    assert len(warnings) == 2 and all("party 8090001's" in w for w in warnings)
    assert all("expires in 28 days" in w or "expires in 29 days" in w for w in warnings)


def test_status_needs_attention_for_an_expired_certificate_and_a_clinic_without_any(
    redis_url: str, schema: str, tmp_path: Path
) -> None:
    registry = registry_copy(tmp_path)
    good = init(registry, tmp_path / "pki")
    init(registry_copy(tmp_path / "old"), tmp_path / "old-pki", "--days", "-1")  # expired
    own = {
        k: v.replace(str(tmp_path / "pki"), str(tmp_path / "old-pki"))
        for k, v in good["settings"].items()
    }
    with_certificates(registry, good["registry"], {"8090001", "8090010"})  # not 8090020, 8090030
    code, data = status(
        stack_env(redis_url, schema, registry) | own | {"TIMEBOK_EPJ_TRANSPORT": "nhn"}
    )
    assert code == 1
    warnings = cert_attention(data)
    assert sum("our signing certificate" in w and "expired on" in w for w in warnings) == 1
    assert sum("our encryption certificate" in w and "expired on" in w for w in warnings) == 1
    # 8090020 takes bookings but has no certificates; 8090030 is not connected, so no matter
    assert "clinic 8090020: no signing_cert / encryption_cert in the registry" in " ".join(warnings)
    assert "8090030" not in " ".join(warnings)
    rows = {(r["her_id"], r["role"]): r for r in data["certificates"]}
    assert rows[(OWN, "signing")]["days_left"] < 0


def test_status_on_nhn_without_our_keys_needs_attention(
    redis_url: str, schema: str, tmp_path: Path
) -> None:
    env = stack_env(redis_url, schema, registry_copy(tmp_path)) | {"TIMEBOK_EPJ_TRANSPORT": "nhn"}
    code, data = status(env)
    assert code == 1
    assert any(a.startswith("our keys: TIMEBOK_SIGNING_KEY") for a in data["attention"])
