# distributed ships no type hints for these calls
# mypy: disable-error-code="no-untyped-call"
"""Reaching a Dask scheduler: the address and TLS files checked before
anything is written, and a connection that fails at once with one clear
line (not after Dask's retries).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from simstudy.errors import UsageError

__all__ = ["TLS_OPTIONS", "check_address", "check_tls", "connect"]


CONNECT_TIMEOUT = 10  # seconds to reach a scheduler that accepts connections


def connect(address: str, tls: dict[str, str] | None, cluster: Any) -> Any:
    """A Client at ``address``; a refused connection or TLS handshake fails at
    once with one clear line, not after Dask's retries."""
    import socket
    from urllib.parse import urlparse

    from distributed import Client

    url = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = url.hostname or "127.0.0.1", url.port or 8786
    try:  # a plain TCP probe: Dask would retry a refused connection for 10 s
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise UsageError(
            f"cannot connect to the Dask scheduler at {address}: {exc}.",
            hint="start it with `dask scheduler` (see docs/cluster.md) and check "
            "the address",
        ) from None
    security = None
    if url.scheme == "tls":
        security = _security(tls)
        _tls_probe(address, host, port, security)
    try:
        if cluster is not None:
            return Client(cluster, timeout=f"{CONNECT_TIMEOUT}s")
        return Client(address, timeout=f"{CONNECT_TIMEOUT}s", security=security)
    except OSError as exc:
        raise UsageError(
            f"cannot connect to the Dask scheduler at {address}: {exc}",
            hint="check the address, and that the scheduler is up and reachable",
        ) from None


def _security(tls: dict[str, str] | None) -> Any:
    """A distributed Security from our TLS files, else from Dask's config."""
    from distributed.security import Security

    if tls is None:
        return Security()  # distributed.comm.tls.* settings
    return Security(
        tls_ca_file=tls["ca_file"],
        tls_client_cert=tls["cert"],
        tls_client_key=tls["key"],
        require_encryption=True,
    )


def _tls_probe(address: str, host: str, port: int, security: Any) -> None:
    """Do one TLS handshake with the client's context: a certificate the
    scheduler does not trust (or one we do not) is refused here, clearly."""
    import socket
    import ssl

    ctx = security.get_connection_args("client").get("ssl_context")
    if ctx is None:
        return
    try:
        with (
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as raw,
            ctx.wrap_socket(raw) as conn,
        ):
            conn.settimeout(2)
            with contextlib.suppress(TimeoutError, socket.timeout):
                # TLS 1.3: the server checks our certificate after the
                # handshake and reports a refusal on the first read
                conn.recv(1)
    except (ssl.SSLError, ConnectionResetError) as exc:
        raise UsageError(
            f"the TLS handshake with the Dask scheduler at {address} failed: {exc}.",
            hint="use a certificate and CA file from the cluster's certificate "
            "authority (--tls-ca-file, --tls-cert, --tls-key)",
        ) from None


def check_address(address: str, insecure: bool) -> None:
    """Refuse a bad scheme, or plain tcp off loopback without ``insecure``."""
    from urllib.parse import urlparse

    url = urlparse(address if "://" in address else f"tcp://{address}")
    if url.scheme not in ("tcp", "tls"):
        raise UsageError(
            f"--address {address!r} has scheme {url.scheme!r}; expected tcp:// or "
            "tls://.",
            hint="write --address tcp://127.0.0.1:8786",
        )
    loopback = url.hostname in ("127.0.0.1", "localhost", "::1")
    if url.scheme == "tcp" and not loopback and not insecure:
        raise UsageError(
            f"--address {address!r} is plain tcp to a non-loopback host; traffic "
            "would be unencrypted and unauthenticated.",
            hint="use tls:// with certificates, or add --insecure on a trusted network",
        )


TLS_OPTIONS = {"ca_file": "--tls-ca-file", "cert": "--tls-cert", "key": "--tls-key"}


def check_tls(
    address: str | None,
    ca_file: str | None,
    cert: str | None,
    key: str | None,
) -> dict[str, str] | None:
    """Check the client's TLS files before anything is written.

    Returns them for the executor, or None to use Dask's own
    ``distributed.comm.tls`` settings.
    """
    given = {"ca_file": ca_file, "cert": cert, "key": key}
    named = [TLS_OPTIONS[k] for k, v in given.items() if v is not None]
    scheme = None
    if address is not None:
        scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if named and scheme != "tls":
        raise UsageError(
            f"{named[0]} is for a tls:// scheduler, but --address is {address!r}.",
            hint="write --address tls://HOST:PORT, or drop the --tls-* options",
        )
    if scheme != "tls":
        return None
    if not named:
        import dask  # here: a run without tls:// need not import dask (~0.2 s)

        config = dask.config.get("distributed.comm.tls", {}) or {}
        client = config.get("client", {}) or {}
        if config.get("ca-file") and client.get("cert"):
            return None
        raise UsageError(
            f"--address {address!r} is tls:// but no certificates were given.",
            hint="add --tls-ca-file CA.pem --tls-cert CERT.pem --tls-key KEY.pem, "
            "or set distributed.comm.tls.ca-file and .client.cert in Dask's config",
        )
    missing = [TLS_OPTIONS[k] for k, v in given.items() if v is None]
    if missing:
        raise UsageError(
            f"tls:// needs --tls-ca-file, --tls-cert and --tls-key together; "
            f"{', '.join(missing)} missing.",
            hint="pass all three (the key may be inside the certificate file: "
            "then give that file twice)",
        )
    for k, v in given.items():
        if v is not None and not os.path.isfile(v):
            raise UsageError(
                f"{TLS_OPTIONS[k]} {v}: no such file.",
                hint="check the path of the certificate file",
            )
    return {k: str(Path(v).resolve()) for k, v in given.items() if v is not None}
