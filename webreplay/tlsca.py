"""A local certificate authority for the replayed HTTPS origins (EC P-256, ``cryptography``).

``make_ca(folder)`` creates (or reuses, when still valid) a self-signed CA in ``folder``;
``issue_server_cert(ca, hostnames, folder)`` signs one leaf certificate whose DNS SANs are every
recorded host name (a page can have ~200), plus optional IP SANs, for the replay server's TLS
listener. Clients trust the CA file (``curl --cacert``, ``wget --ca-certificate``). Private keys
are written with mode 0600 through an exclusively created temporary file (no symlink followed),
fsynced, then renamed into place; the CA's folder is created 0700.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_KEY_NAME = "ca.key"
CA_CERT_NAME = "ca.pem"
CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 365
#: Backdating of notBefore, so clocks a little behind (other namespaces share the clock) accept it.
BACKDATE = datetime.timedelta(hours=1)
#: A CA with less time left than this is replaced rather than reused.
CA_MIN_REMAINING = datetime.timedelta(days=30)
CA_COMMON_NAME = "robe-lab replay CA"

# A DNS name: labels of letters, digits, '-' and '_' (seen in real host names); '*' only as the
# whole first label (wildcard). Checked case-insensitively; stored lower case.
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class CertificateError(ValueError):
    """A bad host name or address for a certificate, or an unusable CA."""


@dataclass(frozen=True)
class CaPaths:
    """Where the CA's private key and self-signed certificate (PEM) live."""

    key: Path
    cert: Path


@dataclass(frozen=True)
class ServerCertPaths:
    """Where a leaf certificate (PEM) and its private key live, and the names it covers."""

    key: Path
    cert: Path
    hostnames: tuple[str, ...]
    ip_addresses: tuple[str, ...]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def check_hostname(name: str) -> str:
    """Return ``name`` lower-cased if it is a valid DNS name for a SAN, else raise CertificateError."""
    if not isinstance(name, str) or not name:
        raise CertificateError(f"hostname={name!r}: must be a non-empty string")
    lowered = name.lower().rstrip(".")
    if len(lowered) > 253:
        raise CertificateError(f"hostname={name!r}: longer than 253 characters")
    labels = lowered.split(".")
    for i, label in enumerate(labels):
        if label == "*" and i == 0 and len(labels) > 2:
            continue
        if not _LABEL.match(label):
            raise CertificateError(f"hostname={name!r}: label {label!r} is not a valid DNS label")
    try:
        ipaddress.ip_address(lowered)
    except ValueError:
        return lowered
    raise CertificateError(f"hostname={name!r}: an IP address; pass it in ip_addresses")


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the start, replacing it atomically.

    The temporary file has an unpredictable name and is created exclusively without following
    symlinks (``mkstemp``: O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600), so nobody can make us write a key
    through a link planted in a shared folder such as /tmp; it is fsynced before the rename.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_private(path: Path, data: bytes) -> None:
    """A private key: mode 0600 from creation on, written atomically."""
    _write_atomically(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    """A certificate: mode 0644, written atomically."""
    _write_atomically(path, data, 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_ca(paths: CaPaths) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Load the CA key and certificate, raising CertificateError when they do not make a usable CA."""
    try:
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    except (OSError, ValueError, TypeError) as err:
        raise CertificateError(f"CA in {paths.cert.parent}: cannot load ({err})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"CA key {paths.key}: not an EC key")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise CertificateError(f"CA key {paths.key} does not match {paths.cert}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertificateError(f"CA certificate {paths.cert}: no basicConstraints") from None
    if not constraints.ca:
        raise CertificateError(f"CA certificate {paths.cert}: basicConstraints CA is false")
    now = _now()
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if not start <= now <= end - CA_MIN_REMAINING:
        window = f"{start:%Y-%m-%d}..{end:%Y-%m-%d}"
        raise CertificateError(f"CA certificate {paths.cert}: valid {window}, now {now:%Y-%m-%d} (needs 30 days left)")
    return key, cert


def make_ca(folder: Path | str, *, common_name: str = CA_COMMON_NAME) -> CaPaths:
    """Create a CA (key 0600 + self-signed certificate, 10 years) in ``folder``, or reuse a valid one.

    An existing pair is reused when it loads, the key matches, basicConstraints says CA and it has
    at least 30 days left; otherwise it is replaced (and the replacement logged).
    """
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = CaPaths(key=folder / CA_KEY_NAME, cert=folder / CA_CERT_NAME)
    if paths.key.exists() or paths.cert.exists():
        try:
            _load_ca(paths)
        except CertificateError as err:
            log.warning("replacing the CA: %s", err)
        else:
            return paths
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "robe-lab"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(paths.key, _key_pem(key))
    _write_public(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
    return paths


def issue_server_cert(
    ca: CaPaths,
    hostnames: Sequence[str],
    folder: Path | str,
    *,
    ip_addresses: Sequence[str] = (),
    name: str = "server",
) -> ServerCertPaths:
    """Sign one leaf certificate for every host name (DNS SANs) and address (IP SANs).

    Writes ``<name>.key`` (0600) and ``<name>.pem`` in ``folder``; serverAuth EKU, 1 year (never
    beyond the CA). Host names are validated, lower-cased and de-duplicated (order kept).
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise CertificateError(f"name={name!r}: use letters, digits, '_', '.', '-'")
    names = list(dict.fromkeys(check_hostname(h) for h in hostnames))
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for address in ip_addresses:
        try:
            addresses.append(ipaddress.ip_address(address))
        except ValueError:
            raise CertificateError(f"ip_addresses: {address!r} is not an IP address") from None
    addresses = list(dict.fromkeys(addresses))
    if not names and not addresses:
        raise CertificateError("hostnames: empty (and no ip_addresses): the certificate would cover nothing")
    ca_key, ca_cert = _load_ca(ca)

    key = ec.generate_private_key(ec.SECP256R1())
    common = names[0] if names and len(names[0]) <= 64 else "robe-lab replay origin"
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(a) for a in addresses]
    now = _now()
    not_after = min(now + datetime.timedelta(days=LEAF_VALID_DAYS), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = ServerCertPaths(
        key=folder / f"{name}.key",
        cert=folder / f"{name}.pem",
        hostnames=tuple(names),
        ip_addresses=tuple(str(a) for a in addresses),
    )
    _write_private(paths.key, _key_pem(key))
    _write_public(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
    return paths
