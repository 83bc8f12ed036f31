"""A test CA made per test with trustme, and the files servers and clients take it in: a server
certificate for 127.0.0.1 and localhost, a cert dir for skopeo and podman, SSL contexts for httpx.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    ca: trustme.CA
    ca_file: Path  # the CA certificate, PEM: curl --cacert, nginx, tls_client_ca
    certificate: Path  # the server's certificate chain, PEM: tls_certificate, ssl_certificate
    key: Path  # its unencrypted private key, PEM, mode 0600
    cert_dir: Path  # holds ca.crt: skopeo and podman --cert-dir

    def ssl_context(self, client_certificate: Path | None = None) -> ssl.SSLContext:
        """Trusts this CA only; presents `client_certificate` (from issue_client) if given."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client_certificate is not None:
            context.load_cert_chain(client_certificate)
        return context

    def issue_client(self, folder: Path) -> tuple[Path, Path]:
        """A client certificate: as one PEM file with its key (curl --cert, load_cert_chain), and
        as a cert dir holding ca.crt, client.cert and client.key (skopeo and podman --cert-dir)."""
        issued = self.ca.issue_cert("e2e-client@e2e.test")
        pem, cert_dir = folder / "client.pem", folder / "client-certs.d"
        issued.private_key_and_cert_chain_pem.write_to_path(pem)
        cert_dir.mkdir()
        self.ca.cert_pem.write_to_path(cert_dir / "ca.crt")
        issued.cert_chain_pems[0].write_to_path(cert_dir / "client.cert")
        issued.private_key_pem.write_to_path(cert_dir / "client.key")
        return pem, cert_dir


def make_tls_files(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="Portside e2e")
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, certificate, key = folder / "ca.pem", folder / "server.crt", folder / "server.key"
    ca.cert_pem.write_to_path(ca_file)
    for position, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(certificate, append=position > 0)
    key.touch(mode=0o600)
    issued.private_key_pem.write_to_path(key)
    cert_dir = folder / "certs.d"
    cert_dir.mkdir()
    ca.cert_pem.write_to_path(cert_dir / "ca.crt")
    return TlsFiles(ca, ca_file, certificate, key, cert_dir)
