"""TLS for the heartbeat connection and the HTTP client: the options, their
environment defaults, and the ``ssl.SSLContext`` made from them."""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
from typing import List, Mapping, Optional, Tuple

log = logging.getLogger("muster")

_SSL_C = re.compile(r"\s*\(_ssl\.c:\d+\)")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """A yes/no variable: ``1``/``true``/``yes``/``on`` or
    ``0``/``false``/``no``/``off``/empty (any case)."""
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={env.get(name)!r} is neither 1/true nor 0/false")


def client_context(
    ca_file: Optional[str] = None,
    cert_file: Optional[str] = None,
    key_file: Optional[str] = None,
) -> ssl.SSLContext:
    """A client context that verifies the server (against ``ca_file``, a
    PEM bundle, else the system's roots) and its host name, speaks TLS 1.2
    or later, and presents ``cert_file`` (``key_file``: its key, when the
    certificate file does not hold it) when the server asks for one.

    Raises ``ValueError`` naming the file that cannot be read or used."""
    if key_file and not cert_file:
        raise ValueError("key_file needs cert_file (the client certificate it is the key of)")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the CA file {ca_file}: {describe(e)}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file or None)
        except (OSError, ValueError) as e:
            what = f"{cert_file} and {key_file}" if key_file else cert_file
            raise ValueError(f"cannot load the client certificate {what}: {describe(e)}") from None
    return ctx


class Contexts:
    """The context a worker connects with, made again from its files when
    what one of them holds changed (a renewed certificate is taken at the
    next connect, without a restart; one that cannot be used, half
    written say, leaves the last good context). A ready context
    (``ssl_context=``) is used as it is."""

    def __init__(
        self,
        ca_file: Optional[str],
        cert_file: Optional[str],
        key_file: Optional[str],
        ready: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.files = (ca_file or None, cert_file or None, key_file or None)
        self._ready = ready
        self._stamp: Optional[Tuple[Optional[bytes], ...]] = None
        self._ctx: Optional[ssl.SSLContext] = ready
        if ready is None:
            self._stamp = self._stamps()
            self._ctx = client_context(*self.files)

    def _stamps(self) -> Optional[Tuple[Optional[bytes], ...]]:
        """A digest of what each file holds; ``None`` when one cannot be
        read (in the middle of a rotation, say)."""
        out: List[Optional[bytes]] = []
        for path in self.files:
            if not path:
                out.append(None)
                continue
            try:
                with open(path, "rb") as f:
                    out.append(hashlib.sha256(f.read()).digest())
            except OSError:
                return None
        return tuple(out)

    def get(self) -> ssl.SSLContext:
        if self._ready is None:
            stamp = self._stamps()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._ctx = client_context(*self.files)
                    log.info("muster: TLS files changed; the next connections use them")
                except ValueError as e:
                    log.warning("muster: TLS files changed but cannot be used (%s); keeping the ones loaded", e)
        assert self._ctx is not None
        return self._ctx


def describe(e: BaseException) -> str:
    """What went wrong in a TLS handshake, in words: the verification
    failure (``certificate has expired``, ``Hostname mismatch...``), the
    alert the server sent (``tlsv13 alert certificate required``: it wants
    a client certificate), or the error itself."""
    if isinstance(e, ssl.SSLCertVerificationError):
        why = getattr(e, "verify_message", None) or e.reason or str(e)
        return f"the certificate of musterd did not verify: {why}"
    if isinstance(e, ssl.SSLEOFError):
        return "TLS: the connection closed unexpectedly (EOF in violation of the protocol)"
    if isinstance(e, ssl.SSLError):
        reason = (e.reason or "").lower().replace("_", " ")
        if "alert" in reason and ("certificate" in reason or "unknown ca" in reason):
            return f"musterd refused the client certificate (or wants one): {reason}"
        if "alert" in reason:
            return f"musterd ended the TLS handshake: {reason}"
        if reason:
            return f"TLS: {reason}"
        text = str(e.args[1]) if len(e.args) > 1 else str(e)
        return "TLS: " + _SSL_C.sub("", text)
    return str(e)
