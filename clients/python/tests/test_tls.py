"""TLS: the Worker's heartbeat connection against a fake TLS musterd, and
the Client over https://, with certificates ``openssl`` makes."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, List
from unittest import mock

from _support import PKI, FakeDaemon, fast, is_update, task_frame

import muster


def setUpModule() -> None:
    global PKI_DIR, pki
    if shutil.which("openssl") is None:
        raise unittest.SkipTest("openssl is not installed")
    PKI_DIR = tempfile.mkdtemp(prefix="muster-tls-")
    pki = PKI(PKI_DIR, client_cn="w-tls")


def tearDownModule() -> None:
    shutil.rmtree(PKI_DIR, ignore_errors=True)


PKI_DIR = ""
pki: PKI


class Base(unittest.TestCase):
    def setUp(self) -> None:
        self.daemons: List[FakeDaemon] = []
        self.workers: List[muster.Worker] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
        patcher = mock.patch.dict(os.environ, env, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def tearDown(self) -> None:
        for w in self.workers:
            w.close(timeout=0.5)
        for d in self.daemons:
            d.close()

    def daemon(self, require_client_cert: bool = True, elsewhere: bool = False, **kw: Any) -> FakeDaemon:
        d = FakeDaemon(tls=pki.server_context(require_client_cert, elsewhere), **kw)
        self.daemons.append(d)
        return d

    def worker(self, *args: Any, **kw: Any) -> muster.Worker:
        w = fast(muster.Worker(*args, **kw))
        self.workers.append(w)
        return w

    def tls_worker(self, addr: str, worker_id: str = "w-tls", **kw: Any) -> muster.Worker:
        opts = dict(tls=True, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
        opts.update(kw)
        return self.worker(worker_id, addr, **opts)


class Joining(Base):
    def test_hello_over_tls_with_a_client_certificate(self) -> None:
        d = self.daemon(interval_ms=50)
        w = self.tls_worker(d.addr)
        self.assertTrue(w.tls)
        w.start()
        c = d.wait_conn(0)
        self.assertTrue(c.tls)
        self.assertEqual(c.peer_cn, "w-tls")
        assert c.hello is not None
        self.assertEqual(c.hello["worker_id"], "w-tls")
        self.assertIn(c.sock.version(), ("TLSv1.2", "TLSv1.3"))
        d.wait_for(lambda f: f.get("type") == "heartbeat" and f.get("seq") == 3)
        self.assertTrue(w.wait_connected(2))
        self.assertIsNone(w.last_error)
        w.close()
        self.assertEqual(d.frames()[-1], {"type": "bye"})
        d.wait_closed(c)

    def test_tasks_round_trip_over_tls_in_bursts(self) -> None:
        d = self.daemon(interval_ms=200)
        w = self.tls_worker(d.addr, capacity=8)

        @w.task("echo")
        def echo(task: muster.Task) -> Any:
            task.log(*[f"line {i} " + "x" * 200 for i in range(200)])
            return {"n": len(task.payload)}

        w.start()
        c = d.wait_conn(0)
        # One send of many frames, one of them over a TLS record (16 KiB):
        # several records arrive at once and a frame spans records.
        frames = [task_frame(f"t{i}", "echo", "y" * (40000 if i == 0 else 10)) for i in range(40)]
        c.send_raw(b"".join(json.dumps(f).encode() + b"\n" for f in frames))
        for i in range(40):
            d.wait_for(is_update(f"t{i}", "succeeded"), timeout=10)
        self.assertEqual(d.wait_for(is_update("t0", "succeeded"))["result"], {"n": 40000})
        lines = [ln for f in d.frames("task_log") if f["task_id"] == "t7" for ln in f["lines"]]
        self.assertEqual(lines, [f"line {i} " + "x" * 200 for i in range(200)])

    def test_from_the_environment(self) -> None:
        d = self.daemon()
        os.environ.update(
            MUSTER_TLS="true",
            MUSTER_TLS_CA_FILE=pki.ca,
            MUSTER_TLS_CERT_FILE=pki.client_cert,
            MUSTER_TLS_KEY_FILE=pki.client_key,
        )
        w = self.worker("w-tls", d.addr).start()
        self.assertTrue(w.tls)
        self.assertEqual(d.wait_conn(0).peer_cn, "w-tls")

    def test_a_ready_ssl_context(self) -> None:
        d = self.daemon()
        ctx = ssl.create_default_context(cafile=pki.ca)
        ctx.load_cert_chain(pki.client_cert, pki.client_key)
        w = self.worker("w-tls", d.addr, ssl_context=ctx).start()
        self.assertTrue(w.tls)
        self.assertEqual(d.wait_conn(0).peer_cn, "w-tls")

    def test_localhost_is_checked_against_the_dns_san(self) -> None:
        d = self.daemon()
        w = self.tls_worker(f"localhost:{d.port}").start()
        self.assertTrue(w.wait_connected(5), w.last_error)


class Failing(Base):
    def assert_not_joining(self, d: FakeDaemon, w: muster.Worker, attempts: int = 2) -> None:
        deadline = time.monotonic() + 5
        while d.accepts < attempts and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertGreaterEqual(d.accepts, attempts, "the worker tries again, as for a refused connect")
        self.assertFalse(w.connected)
        self.assertIsNone(w.error, "a handshake that fails is not fatal")
        self.assertEqual(d.frames("hello"), [])

    def test_a_wrong_ca_fails_the_handshake_and_says_why(self) -> None:
        d = self.daemon()
        with self.assertLogs("muster", "WARNING") as logs:
            w = self.tls_worker(d.addr, ca_file=pki.other_ca).start()
            self.assert_not_joining(d, w)
        assert isinstance(w.last_error, ssl.SSLCertVerificationError)
        said = "\n".join(logs.output)
        self.assertIn("did not verify", said)
        self.assertIn(w.last_error.verify_message, said)
        self.assertEqual(sum("cannot reach" in line for line in logs.output), 1, "said once, not at each try")

    def test_a_certificate_for_another_host_fails(self) -> None:
        d = self.daemon(elsewhere=True)
        with self.assertLogs("muster", "WARNING") as logs:
            w = self.tls_worker(d.addr).start()
            self.assert_not_joining(d, w)
        assert isinstance(w.last_error, ssl.SSLCertVerificationError)
        self.assertIn("mismatch", w.last_error.verify_message)
        self.assertIn("mismatch", "\n".join(logs.output))

    def test_no_client_certificate_is_refused_by_the_daemon(self) -> None:
        d = self.daemon()
        with self.assertLogs("muster", "WARNING") as logs:
            w = self.worker("w-tls", d.addr, tls=True, ca_file=pki.ca).start()
            self.assert_not_joining(d, w)
        self.assertIsInstance(w.last_error, ssl.SSLError)
        self.assertIn("certificate", "\n".join(logs.output))

    def test_a_plain_daemon_is_not_spoken_to_in_the_clear(self) -> None:
        d = FakeDaemon()
        self.daemons.append(d)
        with self.assertLogs("muster", "WARNING") as logs:
            w = self.tls_worker(d.addr, connect_timeout=1.0).start()
            self.assert_not_joining(d, w)
        self.assertIsInstance(w.last_error, ssl.SSLError)
        self.assertIn("TLS", logs.output[0])

    def test_worker_mismatch_is_fatal(self) -> None:
        d = self.daemon(identity=True)
        w = self.tls_worker(d.addr, worker_id="w-other")
        with self.assertRaises(muster.WorkerMismatch) as cm:
            w.run()
        self.assertEqual(cm.exception.code, "worker_mismatch")
        self.assertIn("certificate", str(cm.exception))
        self.assertIs(w.error, cm.exception)
        self.assertEqual(d.accepts, 1, "not retried")

    def test_worker_mismatch_after_the_welcome_is_fatal_too(self) -> None:
        d = self.daemon()
        w = self.tls_worker(d.addr).start()
        c = d.wait_conn(0)
        c.send({"type": "error", "code": "worker_mismatch", "message": "the connection is w-tls's"})
        self.assertTrue(w._done.wait(5))
        self.assertIsInstance(w.error, muster.WorkerMismatch)

    def test_the_certificates_id_is_welcomed(self) -> None:
        d = self.daemon(identity=True)
        w = self.tls_worker(d.addr).start()
        self.assertTrue(w.wait_connected(5), w.last_error)


class Configuring(Base):
    def test_tls_with_udp_is_refused(self) -> None:
        with self.assertRaisesRegex(ValueError, "UDP"):
            muster.Worker("w", "127.0.0.1:9", transport="udp", tls=True)
        os.environ["MUSTER_TLS"] = "1"
        with self.assertRaisesRegex(ValueError, "MUSTER_TLS.*UDP"):
            muster.Worker("w", "127.0.0.1:9", transport="udp")

    def test_bad_settings_raise_at_once(self) -> None:
        with self.assertRaisesRegex(ValueError, "CA file"):
            muster.Worker("w", tls=True, ca_file=os.path.join(PKI_DIR, "missing.pem"))
        with self.assertRaisesRegex(ValueError, "client certificate"):
            muster.Worker("w", tls=True, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.server_key)
        with self.assertRaisesRegex(ValueError, "key_file needs cert_file"):
            muster.Worker("w", tls=True, key_file=pki.client_key)
        with self.assertRaisesRegex(ValueError, "not both"):
            muster.Worker("w", ssl_context=ssl.create_default_context(), ca_file=pki.ca)
        with self.assertRaisesRegex(ValueError, "tls=False"):
            muster.Worker("w", tls=False, ssl_context=ssl.create_default_context())
        os.environ["MUSTER_TLS"] = "maybe"
        with self.assertRaisesRegex(ValueError, "MUSTER_TLS"):
            muster.Worker("w")

    def test_files_alone_turn_nothing_on(self) -> None:
        os.environ["MUSTER_TLS_CA_FILE"] = pki.ca
        self.assertFalse(muster.Worker("w").tls)
        with self.assertLogs("muster", "WARNING") as logs:
            self.assertFalse(muster.Worker("w", ca_file=pki.ca).tls)
        self.assertIn("TLS is off", logs.output[0])
        os.environ["MUSTER_TLS"] = "0"
        self.assertFalse(muster.Worker("w").tls)

    def test_a_renewed_certificate_is_taken_at_the_next_connect(self) -> None:
        d = self.daemon(identity=True)
        cert = os.path.join(PKI_DIR, "renewed.pem")
        key = os.path.join(PKI_DIR, "renewed.key")
        shutil.copy(pki.client_cert, cert)
        shutil.copy(pki.client_key, key)
        w = self.tls_worker(d.addr, worker_id="w-renewed", cert_file=cert, key_file=key)
        assert w._tls is not None
        first = w._tls.get()
        self.assertIs(w._tls.get(), first, "unchanged files are not read again")
        # The certificate of w-renewed replaces the one of w-tls.
        new_cert, new_key = pki.client("renewed-src", "w-renewed")
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        w.start()
        self.assertTrue(w.wait_connected(5), w.last_error)
        self.assertEqual(d.wait_conn(0).peer_cn, "w-renewed")
        self.assertIsNot(w._tls.get(), first)


class FakeHTTPS(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Hello)
        ctx = pki.server_context(require_client_cert=False)
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        data = json.dumps({"id": self.path.rsplit("/", 1)[-1], "state": "succeeded"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n))
        data = json.dumps(dict(body, id="t1", state="queued")).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ClientHTTPS(Base):
    def setUp(self) -> None:
        super().setUp()
        self.api = FakeHTTPS()
        self.addCleanup(self.api.server_close)
        self.addCleanup(self.api.shutdown)

    def test_https_verified_with_ca_file(self) -> None:
        with muster.Client(self.api.url, ca_file=pki.ca) as c:
            self.assertEqual(c.submit("resize", {"f": 1})["state"], "queued")
            self.assertEqual(c.show("t1")["state"], "succeeded")
            self.assertEqual(c.wait("t1", timeout=5)["id"], "t1")

    def test_https_ca_file_from_the_environment(self) -> None:
        os.environ["MUSTER_TLS_CA_FILE"] = pki.ca
        with muster.Client(self.api.url) as c:
            self.assertEqual(c.show("t2")["id"], "t2")

    def test_an_unknown_ca_is_refused(self) -> None:
        with muster.Client(self.api.url, ca_file=pki.other_ca) as c:
            with self.assertRaises(ssl.SSLCertVerificationError):
                c.show("t1")
        with muster.Client(self.api.url.replace("127.0.0.1", "localhost"), ca_file=pki.ca) as c:
            self.assertEqual(c.show("t3")["id"], "t3")

    def test_the_ca_file_is_not_read_for_http(self) -> None:
        os.environ["MUSTER_TLS_CA_FILE"] = os.path.join(PKI_DIR, "missing.pem")
        muster.Client("http://127.0.0.1:9").close()
        with self.assertRaisesRegex(ValueError, "CA file"):
            muster.Client("https://127.0.0.1:9")


if __name__ == "__main__":
    unittest.main()
