"""What the tests share: the library on the path, a fake musterd that
speaks the heartbeat protocol over TCP (or TLS) in this process, and
certificates for TLS made with ``openssl``."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import muster  # noqa: E402

Frame = Dict[str, Any]


def dead_address() -> str:
    """A loopback address nobody listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


class Conn:
    """One connection a worker made to the fake daemon.

    Over TLS one thread reads while tests send: an SSL connection must not
    be read and written at once, so reads poll and both take ``lock``."""

    def __init__(self, daemon: "FakeDaemon", sock: socket.socket, index: int) -> None:
        self.daemon = daemon
        self.sock = sock
        self.index = index
        self.hello: Optional[Frame] = None
        self.closed = False
        self.raw_sizes: List[int] = []
        self.lock = threading.Lock()
        self.tls = False
        #: The subject CN of the client certificate (TLS), or None.
        self.peer_cn: Optional[str] = None

    def send(self, frame: Frame) -> None:
        self.send_raw(json.dumps(frame).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        try:
            if self.tls:
                with self.lock:
                    self.sock.settimeout(10)
                    try:
                        self.sock.sendall(data)
                    finally:
                        self.sock.settimeout(0.02)
            else:
                self.sock.sendall(data)
        except OSError:
            pass

    def recv(self) -> bytes:
        if not self.tls:
            return self.sock.recv(65536)
        while True:
            with self.lock:
                if self.closed:
                    return b""
                try:
                    return self.sock.recv(65536)
                except socket.timeout:
                    pass
            time.sleep(0.001)  # let a sender have the lock

    def close(self) -> None:
        with self.lock if self.tls else _NO_LOCK:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


class _NoLock:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: Any) -> None:
        pass


_NO_LOCK = _NoLock()


class FakeDaemon:
    """Accepts workers on a loopback port, answers ``hello`` with
    ``welcome`` (or ``unauthorized`` for a wrong token) and records every
    frame. ``on_hello(conn, hello)`` may answer instead (return True when
    it did).

    With ``tls`` (a server ``ssl.SSLContext``) each connection is TLS: a
    handshake that fails is recorded in ``tls_errors``. With ``identity``
    too, a hello naming another id than the client certificate's CN is
    refused ``worker_mismatch``, as musterd does."""

    def __init__(
        self,
        interval_ms: int = 100,
        token: Optional[str] = None,
        nodes: Optional[List[str]] = None,
        on_hello: Optional[Callable[[Conn, Frame], bool]] = None,
        welcome: bool = True,
        tls: Optional[ssl.SSLContext] = None,
        identity: bool = False,
    ) -> None:
        self.tls = tls
        self.identity = identity
        self.tls_errors: List[BaseException] = []
        self.interval_ms = interval_ms
        self.token = token
        self.nodes = nodes
        self.on_hello = on_hello
        self.welcome = welcome
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.conns: List[Conn] = []
        self.log: List[Tuple[int, Frame]] = []
        self.cond = threading.Condition()
        self.accepts = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            with self.cond:
                self.accepts += 1
                c = Conn(self, s, len(self.conns))
                self.conns.append(c)
                self.cond.notify_all()
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _handshake(self, c: Conn) -> bool:
        assert self.tls is not None
        try:
            c.sock.settimeout(5)
            c.sock = self.tls.wrap_socket(c.sock, server_side=True)
            c.sock.settimeout(0.02)
        except (OSError, ValueError) as e:
            with self.cond:
                self.tls_errors.append(e)
                c.closed = True
                self.cond.notify_all()
            c.sock.close()
            return False
        c.tls = True
        cert = c.sock.getpeercert()
        if cert:
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        c.peer_cn = v
        return True

    def _serve(self, c: Conn) -> None:
        if self.tls is not None and not self._handshake(c):
            return
        buf = b""
        while True:
            try:
                data = c.recv()
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                c.raw_sizes.append(len(line))
                try:
                    frame = json.loads(line)
                except ValueError:
                    # Say so in the clear, as musterd does (to a TLS
                    # client hello too), and hang up.
                    c.send({"type": "error", "code": "not_json", "message": "not a JSON frame"})
                    c.close()
                    break
                with self.cond:
                    self.log.append((c.index, frame))
                    self.cond.notify_all()
                if frame.get("type") == "hello" and c.hello is None:
                    self._hello(c, frame)
                    with self.cond:
                        c.hello = frame
                        self.cond.notify_all()
        with self.cond:
            c.closed = True
            self.cond.notify_all()
        try:
            c.sock.close()
        except OSError:
            pass

    def _hello(self, c: Conn, hello: Frame) -> None:
        if self.identity and hello.get("worker_id") != c.peer_cn:
            c.send({"type": "error", "code": "worker_mismatch", "message": f"the client certificate names {c.peer_cn}"})
            c.close()
            return
        if self.token is not None and hello.get("token") != self.token:
            c.send({"type": "error", "code": "unauthorized", "message": "hello needs the heartbeat token"})
            c.close()
            return
        if self.on_hello is not None and self.on_hello(c, hello):
            return
        if self.welcome:
            c.send(self.welcome_frame(hello["worker_id"]))

    def welcome_frame(self, worker_id: str) -> Frame:
        w: Frame = {
            "type": "welcome",
            "version": 1,
            "worker_id": worker_id,
            "heartbeat_interval_ms": self.interval_ms,
            "inactivity_timeout_ms": self.interval_ms * 6,
        }
        if self.nodes:
            w["nodes"] = self.nodes
        return w

    # -- what the tests look at ----------------------------------------------

    def frames(self, kind: Optional[str] = None, conn: Optional[int] = None) -> List[Frame]:
        with self.cond:
            return [
                f
                for i, f in self.log
                if (kind is None or f.get("type") == kind) and (conn is None or i == conn)
            ]

    def wait_for(self, pred: Callable[[Frame], bool], timeout: float = 5.0, conn: Optional[int] = None) -> Frame:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, f in self.log:
                    if (conn is None or i == conn) and pred(f):
                        return f
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such frame within {timeout} s; got {[f for _, f in self.log][-20:]}")
                self.cond.wait(left)

    def wait_conn(self, n: int, timeout: float = 5.0) -> Conn:
        """The ``n``-th connection (0 first), once it said hello."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.conns) <= n or self.conns[n].hello is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no connection {n} within {timeout} s")
                self.cond.wait(left)
            return self.conns[n]

    def wait_closed(self, c: Conn, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not c.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("connection still open")
                self.cond.wait(left)

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        for c in list(self.conns):
            if not c.closed:
                c.close()


def is_update(task_id: str, state: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == "task_update" and f.get("task_id") == task_id and f.get("state") == state


def task_frame(task_id: str, task_type: str, payload: Any = None, attempt: int = 1, **extra: Any) -> Frame:
    f: Frame = {"type": "task", "task_id": task_id, "task_type": task_type, "payload": payload, "attempt": attempt}
    f.update(extra)
    return f


def fast(worker: "muster.Worker") -> "muster.Worker":
    """Shorter waits, for tests."""
    worker._limbo = 0.2
    worker._release_grace = 0.5
    worker._min_session = 0.0
    worker._backoff.first = 0.05
    worker._backoff.maximum = 0.2
    worker._backoff.reset()
    return worker


class PKI:
    """A CA, a server certificate (``localhost``, 127.0.0.1 and ::1), a
    client certificate whose CN is ``client_cn``, and a second CA that
    signed nothing of theirs, as PEM files in ``dir`` (made by
    ``openssl``)."""

    def __init__(self, dir: str, client_cn: str = "w-tls") -> None:
        self.dir = dir
        self.client_cn = client_cn
        self.ca = self._ca("ca", "muster test CA")
        self.other_ca = self._ca("other-ca", "another CA")
        self.server_cert, self.server_key = self._leaf(
            "server", "localhost", "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost", "serverAuth"
        )
        self.elsewhere_cert, self.elsewhere_key = self._leaf(
            "elsewhere", "elsewhere.example", "subjectAltName=DNS:elsewhere.example", "serverAuth"
        )
        self.client_cert, self.client_key = self._leaf("client", client_cn, None, "clientAuth")

    def client(self, name: str, cn: str) -> Tuple[str, str]:
        """Another client certificate of the CA, and its key."""
        return self._leaf(name, cn, None, "clientAuth")

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    def _key(self, name: str) -> str:
        key = self.path(name + ".key")
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", key)
        return key

    def _ca(self, name: str, cn: str) -> str:
        key = self._key(name)
        cert = self.path(name + ".pem")
        self._openssl(
            "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "2", "-subj", f"/CN={cn}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )
        return cert

    def _leaf(self, name: str, cn: str, san: Optional[str], usage: str) -> Tuple[str, str]:
        key = self._key(name)
        csr = self.path(name + ".csr")
        cert = self.path(name + ".pem")
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")
            f.write(f"extendedKeyUsage={usage}\n")
            if san:
                f.write(san + "\n")
        self._openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={cn}")
        self._openssl(
            "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.path("ca.key"), "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext,
        )
        return cert, key

    def server_context(self, require_client_cert: bool = True, elsewhere: bool = False) -> ssl.SSLContext:
        """What a TLS musterd would use: its certificate, and the CA that
        client certificates must be signed by."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if elsewhere:
            ctx.load_cert_chain(self.elsewhere_cert, self.elsewhere_key)
        else:
            ctx.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            ctx.load_verify_locations(self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx
