"""TLS and SuperNode authentication for a processes-mode federation, as Flower 1.41 does
them.

* **TLS**: the SuperLink serves its one HTTP port (Fleet, Control and Runtime APIs) with
  ``--ssl-ca-certfile``, ``--ssl-certfile`` and ``--ssl-keyfile``; each SuperNode checks
  the SuperLink's certificate against ``--root-certificates`` (the CA), and ``flwr``
  against ``root-certificates`` in its connection. :func:`make_certificates` makes a
  throwaway CA and a server certificate for the bind address (plus 127.0.0.1, ::1 and
  localhost) with the ``cryptography`` library; :meth:`TlsFiles.of` takes the user's own.
* **SuperNode authentication**: the SuperLink runs with ``--enable-supernode-auth``, each
  SuperNode's EC public key (OpenSSH format, a NIST curve) is registered with ``flwr
  supernode register`` before the node starts, and the node signs its requests with
  ``--auth-supernode-private-key``; the SuperLink refuses a node whose key was not
  registered. :func:`make_node_keys` makes one P-384 key pair per node.

Private keys are written owner-only (0600). :func:`check_transport` is the rule: plain
gRPC/HTTP only on loopback, TLS everywhere else, and node authentication only over TLS.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lepton.errors import FederatedError, InsecureFederationError

__all__ = [
    "NodeKey",
    "TlsFiles",
    "certificate_names",
    "check_transport",
    "dial_host",
    "is_loopback",
    "make_certificates",
    "make_node_keys",
    "resolve_tls",
]

_WILDCARDS = {"0.0.0.0", "::", ""}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) is this machine only: 127.0.0.0/8, ::1 or
    ``localhost``. The wildcards ``0.0.0.0`` and ``::`` are not: they listen on every
    interface."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def dial_host(host: str) -> str:
    """The address a local process dials to reach a server bound to ``host`` (a wildcard
    bind is reached on 127.0.0.1)."""
    bare = host.strip("[]")
    if bare in _WILDCARDS:
        return "127.0.0.1"
    return f"[{bare}]" if ":" in bare else bare


@dataclass(frozen=True)
class TlsFiles:
    """A SuperLink's TLS files (PEM): the CA certificate the SuperNodes trust, the
    server certificate it signed (its SANs must name the address the nodes dial) and the
    server's private key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def of(cls, ca: str | Path, cert: str | Path, key: str | Path) -> TlsFiles:
        """The user's own files, checked: they exist and parse as a certificate, a
        certificate and a private key, and the CA issued the server certificate.

        Raises:
            FederatedError: A file is missing or is not what it should be.
        """
        paths = {"ca": Path(ca).expanduser(), "cert": Path(cert).expanduser(),
                 "key": Path(key).expanduser()}  # fmt: skip
        for name, path in paths.items():
            if not path.is_file():
                raise FederatedError(
                    f"TLS {name} file {str(path)!r} does not exist; give the CA certificate, "
                    "the server certificate and its private key as PEM files, or tls=True "
                    "for a throwaway CA"
                )
        certs = {}
        for name in ("ca", "cert"):
            try:
                certs[name] = x509.load_pem_x509_certificate(paths[name].read_bytes())
            except ValueError:
                raise FederatedError(
                    f"TLS {name} file {str(paths[name])!r} is not a PEM certificate"
                ) from None
        try:
            certs["cert"].verify_directly_issued_by(certs["ca"])
        except (ValueError, TypeError, InvalidSignature):
            raise FederatedError(
                f"the server certificate {str(paths['cert'])!r} was not issued by the CA "
                f"{str(paths['ca'])!r}: the SuperNodes would refuse it. Give the CA that "
                "signed it (an intermediate CA's chain is not supported here)"
            ) from None
        try:
            serialization.load_pem_private_key(paths["key"].read_bytes(), password=None)
        except (ValueError, TypeError):
            raise FederatedError(
                f"TLS key file {str(paths['key'])!r} is not an unencrypted PEM private key"
            ) from None
        return cls(ca=paths["ca"].resolve(), cert=paths["cert"].resolve(),
                   key=paths["key"].resolve())  # fmt: skip


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair (EC P-384, OpenSSH format): the private
    key stays with the node, the public key is registered with the SuperLink."""

    private: Path
    public: Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the file was there with other bits
        os.write(fd, data)
    finally:
        os.close(fd)


def _sans(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in [*hosts, "127.0.0.1", "::1", "localhost"]:
        bare = host.strip("[]")
        if bare in seen or bare in _WILDCARDS:
            continue
        seen.add(bare)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(bare)))
        except ValueError:
            names.append(x509.DNSName(bare))
    return names


def make_certificates(folder: str | Path, hosts: Iterable[str] = (), days: int = 7) -> TlsFiles:
    """A throwaway CA and a server certificate it signs, for one federation.

    Args:
        folder: Where to write ``ca.pem``, ``server.pem`` and ``server.key`` (0600; the
            CA's private key is not kept).
        hosts: Names and addresses the server certificate is for (its SANs), besides
            127.0.0.1, ::1 and localhost.
        days: Validity.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lepton federation CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA384())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP384R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lepton SuperLink")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )  # fmt: skip
    files = TlsFiles(ca=out / "ca.pem", cert=out / "server.pem", key=out / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_private(
        files.key,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    )  # fmt: skip
    return files


def make_node_keys(folder: str | Path, n: int, prefix: str = "supernode") -> list[NodeKey]:
    """``n`` SuperNode key pairs, ``<prefix>-<i>.key`` (0600) and ``<prefix>-<i>.pub``:
    EC P-384 in OpenSSH format, what ``flower-supernode --auth-supernode-private-key``
    and ``flwr supernode register`` read."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP384R1())
        pair = NodeKey(private=out / f"{prefix}-{i}.key", public=out / f"{prefix}-{i}.pub")
        _write_private(
            pair.private,
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                              serialization.NoEncryption()),
        )  # fmt: skip
        pair.public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                          serialization.PublicFormat.OpenSSH) + b"\n"
        )  # fmt: skip
        keys.append(pair)
    return keys


TlsOption = bool | TlsFiles | Mapping[str, str | Path] | None


def check_transport(host: str, tls: TlsOption, node_auth: bool) -> None:
    """Refuse a federation that would carry weights in clear text off this machine, or
    node authentication without TLS (before any process starts).

    Raises:
        InsecureFederationError: ``host`` is not loopback and ``tls`` is off.
        FederatedError: ``node_auth`` without TLS.
    """
    on = tls is not None and tls is not False
    if not on and not is_loopback(host):
        raise InsecureFederationError(
            f"the SuperLink would listen on {host!r}, off loopback, without TLS: model "
            "weights would cross the network in clear text. Pass tls=True (a throwaway CA "
            "for this run; `lepton federated --tls`) or your own files "
            "(tls={'ca': ..., 'cert': ..., 'key': ...}; `--tls-ca/--tls-cert/--tls-key`), "
            "ideally with node_auth=True, or bind to 127.0.0.1. Off loopback also keep the "
            "port reachable only from your SuperNodes (docs/federated.md)"
        )
    if node_auth and not on:
        raise FederatedError(
            "node_auth=True needs TLS (Flower 1.41 signs SuperNode requests only over "
            "TLS): pass tls=True or your own certificate files too (`--tls --node-auth`)"
        )


def resolve_tls(tls: TlsOption, host: str, folder: str | Path) -> TlsFiles | None:
    """The TLS files of one federation: None (plain, loopback only), a throwaway CA made
    in ``folder`` (``tls=True``), or the user's checked files (a :class:`TlsFiles` or a
    mapping with ``ca``, ``cert`` and ``key``), whose server certificate must name the
    address the SuperNodes dial (:func:`dial_host` of ``host``)."""
    if tls is None or tls is False:
        return None
    if tls is True:  # a wildcard bind is also reached by this machine's name
        names = [host, socket.gethostname()] if host.strip("[]") in _WILDCARDS else [host]
        return make_certificates(folder, names)
    if isinstance(tls, TlsFiles):
        files = TlsFiles.of(tls.ca, tls.cert, tls.key)
    else:
        if set(tls) != {"ca", "cert", "key"}:
            raise FederatedError(
                f"tls= takes the keys 'ca', 'cert' and 'key' (PEM paths); got {sorted(tls)}"
            )
        files = TlsFiles.of(tls["ca"], tls["cert"], tls["key"])
    names = certificate_names(files.cert)
    dialed = dial_host(host).strip("[]")
    if not _names_match(names, dialed):
        raise FederatedError(
            f"the server certificate {str(files.cert)!r} names {', '.join(names) or 'nothing'} "
            f"(its subject alternative names) but the SuperNodes will dial {dialed!r}: "
            "they would refuse it. Issue it for that address, or bind to an address it names"
        )
    return files


def certificate_names(cert: str | Path) -> list[str]:
    """The DNS names and IP addresses a PEM certificate is for (its SANs)."""
    loaded = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    try:
        sans = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return [*sans.get_values_for_type(x509.DNSName), *ips]


def _names_match(names: list[str], dialed: str) -> bool:
    """Whether a certificate for ``names`` is valid for ``dialed`` (an IP is matched as
    an address, a name exactly or by a ``*.`` wildcard of one label)."""
    want = dialed.lower()
    with contextlib.suppress(ValueError):
        want = str(ipaddress.ip_address(dialed))
    for name in (n.lower() for n in names):
        if name == want:
            return True
        if name.startswith("*.") and want.partition(".")[2] == name[2:]:
            return True
    return False
