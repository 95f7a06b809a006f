"""`bwv server` as an operator runs it: dock tokens, status, settings, TLS and mutual TLS."""

from __future__ import annotations

from kit import systemd_verify_complaints

import datetime
import hashlib
import http.client
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openbwv.server.service import open_metadata

from .conftest import make_home, write_server_config
from .server_kit import BWV, ServerProcess


def bwv(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, BWV_HOME=str(home))
    return subprocess.run([BWV, *args], env=env, capture_output=True, text=True, timeout=60)


def test_add_dock_prints_a_token_once_and_keeps_only_its_digest(tmp_path):
    home = make_home(tmp_path / "home")
    first = bwv(home.root, "server", "add-dock", "--id", "dock-station-3")
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip().splitlines()[-1]
    assert token.startswith("bwvd_") and len(token) == 48

    db = open_metadata(home)
    try:
        (stored,) = db.reader().execute("SELECT token_sha256 FROM docks WHERE dock_id = 'dock-station-3'").fetchone()
        assert token not in repr(db.reader().execute("SELECT * FROM docks").fetchall())
    finally:
        db.close()
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    if db.engine_name == "sqlite":
        assert token not in (home.server_dir / "evidence.db").read_bytes().decode("latin-1")

    again = bwv(home.root, "server", "add-dock", "--id", "dock-station-3")
    assert again.returncode == 2 and "--rotate" in again.stderr
    rotated = bwv(home.root, "server", "add-dock", "--id", "dock-station-3", "--rotate")
    assert rotated.returncode == 0 and rotated.stdout.strip().splitlines()[-1] != token

    bad = bwv(home.root, "server", "add-dock", "--id", "../dock")
    assert bad.returncode == 2 and "dock id" in bad.stderr


def test_status_on_an_empty_server(tmp_path):
    home = make_home(tmp_path / "home")
    out = bwv(home.root, "server", "status")
    assert out.returncode == 0, out.stderr
    assert "0 segment(s) from 0 device(s)" in out.stdout and "0 flagged chain gap(s)" in out.stdout


def test_bad_settings_or_missing_keys_stop_the_server_with_exit_2(tmp_path):
    home = make_home(tmp_path / "home")
    for args, words in [
        (("--listen", "nowhere"), "HOST:PORT"),
        (("--listen", "127.0.0.1:0", "--max-concurrent", "0"), "max concurrent"),
        (("--listen", "127.0.0.1:0", "--tls-cert", str(tmp_path / "none.pem")), "--tls-key"),
        (("--listen", "127.0.0.1:0", "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(tmp_path / "k")),
         "TLS"),
    ]:
        out = bwv(home.root, "server", *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert words in out.stderr
    empty = bwv(tmp_path / "no-keys", "server", "--listen", "127.0.0.1:0")
    assert empty.returncode == 2 and "bwv keys server" in empty.stderr


def test_help_reads_as_a_manual_with_examples():
    out = subprocess.run([BWV, "server", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for words in ("examples:", "bwv server add-dock --id", "--tls-client-ca", "docs/upload-protocol.md",
                  "exit status", "listening on"):
        assert words in out.stdout, words


# --------------------------------------------------------------------------- TLS
def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_cert=None, issuer_key=None, *, ca=False, server=False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                        critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key=None) -> Path:
    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return path


@pytest.fixture
def pki(tmp_path):
    ca_key = _key()
    ca = _cert("OpenBWV test CA", ca_key, ca=True)
    server_key, client_key = _key(), _key()
    return {
        "ca": _write(tmp_path / "ca.pem", ca),
        "server_cert": _write(tmp_path / "server.pem", _cert("evidence", server_key, ca, ca_key, server=True)),
        "server_key": _write(tmp_path / "server.key", key=server_key),
        "client": _write(tmp_path / "client.pem", _cert("dock-1", client_key, ca, ca_key), client_key),
    }


def _health(url: str, ca: Path, client: Path | None = None) -> dict:
    ctx = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        ctx.load_cert_chain(str(client))
    host, port = url.removeprefix("https://").rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    try:
        conn.request("GET", "/api/v1/health")
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


def test_tls_and_mutual_tls_with_settings_from_the_config_file(tmp_path, pki):
    home = make_home(tmp_path / "home")
    write_server_config(
        home,
        f'tls_cert = "{pki["server_cert"]}"\n'
        f'tls_key = "{pki["server_key"]}"\n'
        "max_concurrent = 3\n"
    )
    with ServerProcess(home.root, "--reserve-mb", "0") as server:
        assert server.url.startswith("https://127.0.0.1:")
        assert _health(server.url, pki["ca"])["status"] == "ok"

    with ServerProcess(home.root, "--reserve-mb", "0", "--tls-client-ca", str(pki["ca"])) as server:
        assert _health(server.url, pki["ca"], pki["client"])["status"] == "ok"
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _health(server.url, pki["ca"])  # no client certificate: no connection


# --------------------------------------------------------------------------- systemd
UNIT = Path(__file__).resolve().parents[2] / "hw" / "systemd" / "openbwv-server.service"


def test_the_systemd_unit_runs_bwv_server_as_a_dedicated_user_and_restarts():
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(UNIT)
    service = unit["Service"]
    assert service["ExecStart"].split()[:2] == ["/opt/openbwv/venv/bin/bwv", "server"]
    assert service["User"] == "openbwv" and service["Restart"] == "always"
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_server_unit(tmp_path):
    assert systemd_verify_complaints(UNIT, tmp_path) == []


def test_the_dock_uploads_over_mutual_tls(tmp_path, pki):
    """The dock's uploader presents its client certificate and checks the server's against the force's CA."""
    from openbwv.dock.errors import UploadUnavailable
    from openbwv.dock.tus_upload import TusUploader
    from openbwv.enrol import enrol_device

    from .conftest import add_dock
    from .server_kit import DeviceChain, check_receipt

    home = make_home(tmp_path / "home")
    token = add_dock(home)
    enrol_device(home, "cam-tls")
    seg = DeviceChain(home, "cam-tls", tmp_path / "segs").seal()
    args = ("--reserve-mb", "0", "--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"]),
            "--tls-client-ca", str(pki["ca"]))
    with ServerProcess(home.root, *args) as server:
        up = TusUploader(server.url, token, verify=str(pki["ca"]), client_cert=(str(pki["client"]), str(pki["client"])))
        check_receipt(home, up.upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash, lambda n: None), seg)
        with pytest.raises(UploadUnavailable):  # no client certificate: the handshake fails, nothing is sent
            TusUploader(server.url, token, verify=str(pki["ca"])).upload(
                seg.path, seg.device_id, seg.sequence, seg.segment_hash, lambda n: None)


def test_db_on_the_command_line_chooses_the_database_and_a_bad_one_is_refused_by_name(tmp_path, metadata_url):
    home = make_home(tmp_path / "home")
    added = bwv(home.root, "server", "--db", metadata_url, "add-dock", "--id", "dock-cli")
    assert added.returncode == 0, added.stderr
    db = open_metadata(home, metadata_url)
    try:
        assert [d for d, _ in db.docks()] == ["dock-cli"]
    finally:
        db.close()
    for bad, says in (("mysql://db/evidence", "engine 'mysql' is not supported"),
                      ("postgresql://bwv:secret@db/evidence", "pgpass")):
        refused = bwv(home.root, "server", "--db", bad, "--listen", "127.0.0.1:0")
        assert refused.returncode == 2 and says in refused.stderr and "secret" not in refused.stderr, refused.stderr
