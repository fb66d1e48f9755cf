"""TLS and SuperNode authentication for processes-mode federations, without processes:
the loopback rule (an insecure federation off loopback is refused before anything
starts), the throwaway CA (a real TLS handshake in this process trusts it, and only it),
the user's own files, and the SuperNode keys Flower's own loaders accept."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from typer.testing import CliRunner

import lepton as lp
from lepton.cli._app import app
from lepton.errors import ConfigError, FederatedError, InsecureFederationError
from lepton.federated import TlsFiles, partition
from lepton.federated._processes import _descendant_groups
from lepton.federated._run import run
from lepton.federated._tls import (
    certificate_names,
    check_transport,
    dial_host,
    is_loopback,
    make_certificates,
    make_node_keys,
    resolve_tls,
)
from lepton.federated.recipe import FederatedConfig
from lepton.federated.recipe import run as run_recipe
from lepton.train.recipe import build_model


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.20", False),
     ("10.0.0.5", False), ("fl.example.org", False)],
)  # fmt: skip
def test_loopback_is_this_machine_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_wildcard_bind_is_dialled_on_loopback() -> None:
    assert dial_host("0.0.0.0") == "127.0.0.1"
    assert dial_host("::") == "127.0.0.1"
    assert dial_host("10.0.0.5") == "10.0.0.5"
    assert dial_host("::1") == "[::1]"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "fl.example.org"])
def test_plain_transport_off_loopback_is_refused(host: str) -> None:
    for tls in (None, False):
        with pytest.raises(InsecureFederationError, match=r"off loopback, without TLS.*tls=True"):
            check_transport(host, tls, node_auth=False)
    check_transport(host, True, node_auth=True)  # TLS: allowed anywhere
    check_transport("127.0.0.1", None, node_auth=False)  # today's default stays


def test_node_auth_needs_tls() -> None:
    with pytest.raises(FederatedError, match="node_auth=True needs TLS"):
        check_transport("127.0.0.1", None, node_auth=True)


def test_an_insecure_run_off_loopback_starts_nothing(tmp_path: Path) -> None:
    train = lp.data.load("digits", split="train")
    parts = partition(train, 2, scheme="iid", seed=0)
    model = build_model("mlp", train, {})
    before = _descendant_groups({os.getpid()})
    with pytest.raises(InsecureFederationError, match=r"0\.0\.0\.0.*off loopback") as caught:
        run(model, parts, test=train, mode="processes", host="0.0.0.0", track=False,
            folder=tmp_path / "job")  # fmt: skip
    assert caught.value.code == "insecure_federation"
    assert not (tmp_path / "job").exists()  # no job folder, so no Flower process either
    assert _descendant_groups({os.getpid()}) == before


def test_transport_options_belong_to_processes_mode(tmp_path: Path) -> None:
    train = lp.data.load("digits", split="train")
    parts = partition(train, 2, scheme="iid", seed=0)
    model = build_model("mlp", train, {})
    with pytest.raises(FederatedError, match="apply to mode='processes'"):
        run(model, parts, test=train, mode="simulation", tls=True, track=False,
            folder=tmp_path / "job")  # fmt: skip


def test_the_config_and_the_recipe_check_tls_and_node_auth(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls and node_auth need mode 'processes'"):
        FederatedConfig.checked(tls=True)
    with pytest.raises(ConfigError, match="node_auth needs tls"):
        FederatedConfig.checked(mode="processes", node_auth=True)
    config = FederatedConfig.checked(mode="processes", tls=True, node_auth=True, data="digits")
    assert (config.tls, config.node_auth) == (True, True)
    plain = FederatedConfig.checked(mode="processes", data="digits")
    with pytest.raises(InsecureFederationError, match="off loopback"):
        run_recipe(plain, host="0.0.0.0")
    files = make_certificates(tmp_path / "tls")
    with pytest.raises(ConfigError, match="tls_files given but tls is off"):
        run_recipe(plain, tls_files=files)


def test_the_cli_refuses_an_insecure_federation_off_loopback() -> None:
    result = CliRunner().invoke(
        app, ["federated", "--mode", "processes", "--host", "0.0.0.0", "--data", "digits"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, InsecureFederationError)
    result = CliRunner().invoke(
        app, ["federated", "--mode", "processes", "--tls", "--tls-ca", "ca.pem"]
    )
    assert isinstance(result.exception, ConfigError)
    assert "--tls-ca, --tls-cert and --tls-key" in str(result.exception)


def _handshake(files: TlsFiles, trust: Path, server_name: str) -> str:
    """A real TLS handshake on 127.0.0.1: a server with ``files``' certificate, a client
    that trusts ``trust`` and checks ``server_name``. Returns the client's error ('' if
    none)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    client_ctx = ssl.create_default_context(cafile=str(trust))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with (
                conn,
                contextlib.suppress(ssl.SSLError, OSError),  # the client may refuse
                server_ctx.wrap_socket(conn, server_side=True) as tls,
            ):
                tls.recv(1)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_name) as tls,
            ):
                tls.sendall(b"x")
            return ""
        except ssl.SSLError as exc:
            return str(exc)
        finally:
            thread.join(timeout=10)


def test_a_throwaway_ca_is_trusted_and_only_it(tmp_path: Path) -> None:
    files = make_certificates(tmp_path / "tls", ["10.0.0.5", "fl.example.org"])
    assert set(certificate_names(files.cert)) == {
        "10.0.0.5", "fl.example.org", "127.0.0.1", "::1", "localhost",
    }  # fmt: skip
    assert _mode(files.key) == 0o600
    assert not list((tmp_path / "tls").glob("ca*.key"))  # the CA's key is not kept
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(files.ca.read_bytes()))
    assert _handshake(files, files.ca, "127.0.0.1") == ""
    assert _handshake(files, files.ca, "localhost") == ""
    other = make_certificates(tmp_path / "other")
    assert "CERTIFICATE_VERIFY_FAILED" in _handshake(files, other.ca, "127.0.0.1")
    assert "CERTIFICATE_VERIFY_FAILED" in _handshake(files, files.ca, "elsewhere.example.org")


def test_tls_true_makes_files_for_the_bind_address(tmp_path: Path) -> None:
    files = resolve_tls(True, "192.0.2.7", tmp_path / "tls")
    assert files is not None
    assert "192.0.2.7" in certificate_names(files.cert)
    wildcard = resolve_tls(True, "0.0.0.0", tmp_path / "any")
    assert wildcard is not None
    assert socket.gethostname().lower() in [n.lower() for n in certificate_names(wildcard.cert)]
    assert "0.0.0.0" not in certificate_names(wildcard.cert)
    assert resolve_tls(None, "127.0.0.1", tmp_path / "none") is None
    assert not (tmp_path / "none").exists()


def test_the_users_own_files_are_checked(tmp_path: Path) -> None:
    mine = make_certificates(tmp_path / "mine", ["192.0.2.7"])
    other = make_certificates(tmp_path / "other")
    as_map = {"ca": str(mine.ca), "cert": str(mine.cert), "key": str(mine.key)}
    assert resolve_tls(as_map, "192.0.2.7", tmp_path / "unused") == mine
    assert resolve_tls(mine, "0.0.0.0", tmp_path / "unused") == mine  # dialled on 127.0.0.1
    assert not (tmp_path / "unused").exists()
    with pytest.raises(
        FederatedError, match=r"names .* but the SuperNodes will dial '198\.51\.100\.3'"
    ):
        resolve_tls(mine, "198.51.100.3", tmp_path / "unused")
    with pytest.raises(FederatedError, match="was not issued by the CA"):
        TlsFiles.of(other.ca, mine.cert, mine.key)
    with pytest.raises(FederatedError, match="does not exist"):
        TlsFiles.of(tmp_path / "nope.pem", mine.cert, mine.key)
    with pytest.raises(FederatedError, match="is not a PEM certificate"):
        TlsFiles.of(mine.key, mine.cert, mine.key)
    with pytest.raises(FederatedError, match="is not an unencrypted PEM private key"):
        TlsFiles.of(mine.ca, mine.cert, mine.cert)
    with pytest.raises(FederatedError, match="takes the keys 'ca', 'cert' and 'key'"):
        resolve_tls({"ca": str(mine.ca)}, "127.0.0.1", tmp_path / "unused")


def test_node_keys_are_what_flower_reads(tmp_path: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key

    keys = make_node_keys(tmp_path / "keys", 2)
    assert len({k.public.read_bytes() for k in keys}) == 2
    for key in keys:
        assert _mode(key.private) == 0o600
        private = load_ssh_private_key(key.private.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp384r1"
        # Flower's own loader (`flwr supernode register`) takes the public key
        assert len(try_load_public_key(key.public)) > 0
