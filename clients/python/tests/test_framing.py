"""Framing: encoding, line splitting, the size limit, log packing."""

from __future__ import annotations

import json
import unittest

import _support  # noqa: F401  (puts the library on the path)
from muster import FrameTooLarge
from muster import _proto as proto


class Encoding(unittest.TestCase):
    def test_compact_utf8_one_line(self) -> None:
        data = proto.encode({"type": "heartbeat", "text": "a\nb\r\u00e9\u2028"})
        self.assertNotIn(b"\n", data)
        self.assertNotIn(b" ", data)
        self.assertEqual(json.loads(data.decode("utf-8"))["text"], "a\nb\r\u00e9\u2028")
        self.assertIn("\u00e9".encode("utf-8"), data, "UTF-8 as is, not escaped")

    def test_line_ends_with_one_newline(self) -> None:
        line = proto.encode_line({"type": "bye"})
        self.assertEqual(line, b'{"type":"bye"}\n')

    def test_not_json_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            proto.encode({"type": "heartbeat", "cpu_usage": float("nan")})
        with self.assertRaises(TypeError):
            proto.encode({"type": "heartbeat", "x": object()})
        with self.assertRaises(ValueError):
            proto.encode({"type": "heartbeat", "x": "\ud800"})

    def test_size_limit_is_on_the_frame_without_its_newline(self) -> None:
        base = len(proto.encode({"type": "x", "p": ""}))
        exact = {"type": "x", "p": "a" * (proto.MAX_FRAME_BYTES - base)}
        self.assertEqual(len(proto.encode_line(exact)), proto.MAX_FRAME_BYTES + 1)
        over = {"type": "x", "p": "a" * (proto.MAX_FRAME_BYTES - base + 1)}
        with self.assertRaises(FrameTooLarge) as cm:
            proto.encode_line(over)
        self.assertEqual(cm.exception.size, proto.MAX_FRAME_BYTES + 1)
        self.assertEqual(cm.exception.limit, proto.MAX_FRAME_BYTES)
        self.assertIsInstance(cm.exception, ValueError)

    def test_size_counts_utf8_bytes(self) -> None:
        # 3 bytes a character in UTF-8.
        frame = {"type": "x", "p": "\u20ac" * 22000}
        with self.assertRaises(FrameTooLarge):
            proto.encode_line(frame)

    def test_decode(self) -> None:
        self.assertEqual(proto.decode(b'{"type":"welcome","version":1}'), {"type": "welcome", "version": 1})
        self.assertIsNone(proto.decode(b"[1]"))
        self.assertIsNone(proto.decode(b'{"no":"type"}'))
        self.assertIsNone(proto.decode(b"\xff"))
        self.assertIsNone(proto.decode(b"nope"))


class Lines(unittest.TestCase):
    def test_split_across_reads(self) -> None:
        r = proto.LineReader()
        self.assertEqual(r.feed(b'{"a":'), [])
        self.assertEqual(r.feed(b'1}\n{"b"'), [b'{"a":1}'])
        self.assertEqual(r.feed(b":2}\n\n"), [b'{"b":2}', b""])
        self.assertEqual(r.buffered, 0)

    def test_crlf(self) -> None:
        r = proto.LineReader()
        self.assertEqual(r.feed(b"one\r\ntwo\r"), [b"one"])
        self.assertEqual(r.feed(b"\n"), [b"two"])

    def test_many_in_one_read(self) -> None:
        r = proto.LineReader()
        self.assertEqual(r.feed(b"a\nb\nc\nd"), [b"a", b"b", b"c"])
        self.assertEqual(r.feed(b"\n"), [b"d"])

    def test_a_line_too_long_is_an_error_without_buffering_it_all(self) -> None:
        r = proto.LineReader(max_line=10)
        self.assertEqual(r.feed(b"0123456789\n"), [b"0123456789"])
        with self.assertRaises(proto.ProtocolError):
            r.feed(b"0123456789ab")
        r = proto.LineReader(max_line=10)
        with self.assertRaises(proto.ProtocolError):
            r.feed(b"0123456789abc\n")


class LogPacking(unittest.TestCase):
    def test_frames_stay_within_the_limit_and_keep_order(self) -> None:
        lines = [f"line {i} " + "x" * (i % 300) for i in range(5000)]
        frames = proto.pack_log_lines("t1", lines, 8192)
        got = [line for f in frames for line in f["lines"]]
        self.assertEqual(got, lines)
        for f in frames:
            self.assertEqual(f["type"], "task_log")
            self.assertEqual(f["task_id"], "t1")
            self.assertLessEqual(len(proto.encode(f)), 8192)
            self.assertLessEqual(len(f["lines"]), proto.MAX_LOG_LINES)

    def test_at_most_1024_lines_a_frame(self) -> None:
        frames = proto.pack_log_lines("t1", ["x"] * 3000)
        self.assertEqual([len(f["lines"]) for f in frames], [1024, 1024, 952])

    def test_a_line_too_long_for_a_frame_is_split(self) -> None:
        line = "\u00e9\x01" * 40000  # escapes make it longer still as JSON
        frames = proto.pack_log_lines("t1", [line])
        self.assertGreater(len(frames), 1)
        self.assertEqual("".join(x for f in frames for x in f["lines"]), line)
        for f in frames:
            self.assertLessEqual(len(proto.encode(f)), proto.MAX_FRAME_BYTES)

    def test_split_lines(self) -> None:
        self.assertEqual(proto.split_lines(["a", "b\nc", "d\r\n", 5]), ["a", "b", "c", "d", "5"])
        self.assertEqual(proto.split_lines([""]), [""])


class Parsing(unittest.TestCase):
    def test_addresses(self) -> None:
        self.assertEqual(proto.parse_addr("h:8090"), ("h", 8090))
        self.assertEqual(proto.parse_addr("[::1]:8090"), ("::1", 8090))
        self.assertEqual(
            proto.parse_addrs("a:1, b:2,,a:1"), [("a", 1), ("b", 2)], "comma-separated, duplicates dropped"
        )
        self.assertEqual(proto.parse_addrs([("a", 1), "b:2"]), [("a", 1), ("b", 2)])
        for bad in ("h", "h:", ":1", "h:0", "h:70000", "::1:8090", "[::1]"):
            with self.assertRaises(ValueError, msg=bad):
                proto.parse_addr(bad)
        with self.assertRaises(ValueError):
            proto.parse_addrs("")
        self.assertEqual(proto.format_addr(("::1", 5)), "[::1]:5")

    def test_labels(self) -> None:
        self.assertEqual(proto.parse_labels("team=ml, zone=eu-1"), {"team": "ml", "zone": "eu-1"})
        self.assertEqual(proto.parse_labels("k=a=b"), {"k": "a=b"})
        with self.assertRaises(ValueError):
            proto.parse_labels("novalue")
        with self.assertRaises(ValueError):
            proto.check_labels({f"k{i}": "v" for i in range(65)})
        with self.assertRaises(ValueError):
            proto.check_labels({"k": "v" * 1025})
        with self.assertRaises(ValueError):
            proto.check_labels({"k": 1})

    def test_worker_ids(self) -> None:
        self.assertEqual(proto.check_worker_id("w-1.a_b:c@d"), "w-1.a_b:c@d")
        for bad in ("", "a b", "x" * 129, "registry", "snapshot", "é"):
            with self.assertRaises(ValueError, msg=bad):
                proto.check_worker_id(bad)
        proto.check_worker_id(proto.default_worker_id("my host.example", 42))

    def test_utf8_cut(self) -> None:
        self.assertEqual(proto.utf8_cut("abc", 10), "abc")
        self.assertEqual(proto.utf8_cut("\u00e9\u00e9", 3), "\u00e9")

    def test_state_checks(self) -> None:
        ok = {
            "status": "working",
            "cpu_usage": 250.5,
            "memory_usage": 12,
            "queue_depth": 0,
            "current_job": {"id": 17, "type": "scan", "files": 3, "started_at": 1},
            "resource_usage": {"rss_mb": 1.5, "threads": 4},
            "running_tasks": [{"task_id": "t"}],
            "labels": {"a": "b"},
        }
        for k, v in ok.items():
            proto.check_state_field(k, v)
        bad = {
            "status": "busy",
            "cpu_usage": -1,
            "memory_usage": 101,
            "gpu_usage": True,
            "queue_depth": 1.5,
            "current_job": {"id": "x" * 257},
            "resource_usage": {"threads": -1},
            "running_tasks": [1],
        }
        for k, v in bad.items():
            with self.assertRaises(ValueError, msg=k):
                proto.check_state_field(k, v)

    def test_progress_checks(self) -> None:
        self.assertEqual(proto.check_progress(0.5, None), (0.5, None))
        self.assertEqual(proto.check_progress(None, "m" * 2000)[1], "m" * 1024)
        for f, m in ((None, None), (1.5, None), (-0.1, "x")):
            with self.assertRaises(ValueError):
                proto.check_progress(f, m)


if __name__ == "__main__":
    unittest.main()
