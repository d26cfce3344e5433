"""The conformance runner's command protocol, against the fake daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from _support import PKI, ROOT, FakeDaemon

RUNNER = os.path.join(ROOT, "conformance", "runner.py")


class Base(unittest.TestCase):
    def start(self, daemon: FakeDaemon, **env: str) -> "subprocess.Popen[str]":
        e = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
        e.update(PYTHONPATH=ROOT, MUSTER_ADDRS=daemon.addr, MUSTER_WORKER_ID="conf-1", MUSTER_URL="http://127.0.0.1:9")
        e.update(env)
        p = subprocess.Popen(
            [sys.executable, RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=e,
        )
        def stop() -> None:
            p.kill()
            p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()

        self.addCleanup(stop)
        return p

    def ask(self, p: "subprocess.Popen[str]", line: str) -> str:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(line + "\n")
        p.stdin.flush()
        return p.stdout.readline().strip()

    def fatal(self, p: "subprocess.Popen[str]") -> str:
        """The runner's fatal line, its exit code checked (stdin is kept
        open: at its end the runner would close the worker first)."""
        assert p.stdout is not None
        self.assertEqual(p.stdout.readline().strip(), "ready")
        line = p.stdout.readline().strip()
        self.assertTrue(line.startswith("fatal "), line)
        self.assertEqual(p.wait(10), 3)
        return line


class Runner(Base):
    def test_commands(self) -> None:
        d = FakeDaemon(interval_ms=100)
        self.addCleanup(d.close)
        p = self.start(d)
        assert p.stdout is not None
        self.assertEqual(p.stdout.readline().strip(), "ready")
        hello = d.wait_conn(0).hello
        assert hello is not None
        self.assertEqual(hello["labels"], {"client": "python"})
        self.assertEqual(hello["capacity"], 4)
        self.assertEqual(sorted(hello["task_types"]), ["echo", "fail", "flaky", "slow", "wait"])
        self.assertEqual(self.ask(p, 'set {"status":"working","queue_depth":3}'), "ok")
        big = json.dumps({"current_job": {"id": "x" * 70000}})
        self.assertTrue(self.ask(p, "set " + big).startswith("error "))
        self.assertEqual(self.ask(p, 'set {"queue_depth":4}'), "ok")
        self.assertEqual(self.ask(p, "run 1.5 ok"), "ok")
        self.assertTrue(self.ask(p, "show 1").startswith("error "), "no daemon at MUSTER_URL")
        d.wait_for(lambda f: f.get("type") == "heartbeat" and f.get("queue_depth") == 4)
        d.wait_for(lambda f: f.get("type") == "run" and f.get("duration_ms") == 1500)
        assert p.stdin is not None
        p.stdin.write("bye\n")
        p.stdin.flush()
        self.assertEqual(p.wait(10), 0)
        self.assertEqual(d.frames()[-1], {"type": "bye"})
        self.assertEqual(d.accepts, 1)

    def test_a_refused_token_is_fatal(self) -> None:
        d = FakeDaemon(token="right")
        self.addCleanup(d.close)
        tok = os.path.join(ROOT, "runner-token.tmp")
        with open(tok, "w") as f:
            f.write("wrong\n")
        self.addCleanup(os.remove, tok)
        p = self.start(d, MUSTER_HEARTBEAT_TOKEN_FILE=tok)
        self.assertIn("token", self.fatal(p))


@unittest.skipIf(shutil.which("openssl") is None, "openssl is not installed")
class RunnerOverTLS(Base):
    @classmethod
    def setUpClass(cls) -> None:
        cls.dir = tempfile.mkdtemp(prefix="muster-runner-tls-")
        cls.pki = PKI(cls.dir, client_cn="conf-1")

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.dir, ignore_errors=True)

    def tls_env(self, worker_id: str = "conf-1") -> "dict[str, str]":
        return dict(
            MUSTER_TLS="1",
            MUSTER_TLS_CA_FILE=self.pki.ca,
            MUSTER_TLS_CERT_FILE=self.pki.client_cert,
            MUSTER_TLS_KEY_FILE=self.pki.client_key,
            MUSTER_WORKER_ID=worker_id,
        )

    def test_the_runner_over_tls(self) -> None:
        d = FakeDaemon(interval_ms=100, tls=self.pki.server_context(), identity=True)
        self.addCleanup(d.close)
        p = self.start(d, **self.tls_env())
        assert p.stdout is not None and p.stdin is not None
        self.assertEqual(p.stdout.readline().strip(), "ready")
        c = d.wait_conn(0)
        self.assertEqual(c.peer_cn, "conf-1")
        self.assertEqual(self.ask(p, "run 0.5 ok"), "ok")
        d.wait_for(lambda f: f.get("type") == "run" and f.get("duration_ms") == 500)
        p.stdin.write("bye\n")
        p.stdin.flush()
        self.assertEqual(p.wait(10), 0)
        self.assertEqual(d.frames()[-1], {"type": "bye"})

    def test_worker_mismatch_is_fatal(self) -> None:
        d = FakeDaemon(tls=self.pki.server_context(), identity=True)
        self.addCleanup(d.close)
        p = self.start(d, **self.tls_env("conf-2"))
        self.assertIn("conf-2", self.fatal(p))
        self.assertEqual(d.accepts, 1)


if __name__ == "__main__":
    unittest.main()
