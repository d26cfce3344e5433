"""The wire format of muster-protocol(7), version 1: frames as bytes and
back, the bounds the daemon enforces, and the parsing of addresses and
labels. Nothing here touches a socket."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import FrameTooLarge

VERSION = 1

#: The daemon's default ``max_frame_bytes``: the longest frame, without its
#: newline.
MAX_FRAME_BYTES = 65536
#: A UDP datagram over IPv4 carries at most this much.
MAX_DATAGRAM_BYTES = 65507
MAX_WORKER_ID = 128
RESERVED_IDS = frozenset({"registry", "scale", "snapshot"})
MAX_LABELS = 64
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1024
MAX_TEXT = 256
MAX_RUNNING_TASKS = 256
MAX_CPU_PERCENT = 409600.0
MAX_RUN_MS = 30 * 24 * 3600 * 1000.0
MAX_LOG_LINES = 1024
MAX_PROGRESS_MESSAGE = 1024
MAX_ERROR = 4096
MAX_TASK_TYPE = 128
MAX_TASK_TYPES = 64
MAX_RUNNING = 1024
MAX_TASK_ID = 64
#: Longest reply line read from the daemon (a task frame carries its
#: payload, which a daemon may allow up to 1 MiB).
MAX_REPLY_BYTES = 8 * 1024 * 1024

STATUSES = ("idle", "working", "error")
ENDED_STATES = frozenset({"succeeded", "failed", "cancelled", "timed_out", "dead"})

_WORKER_ID = re.compile(r"\A[A-Za-z0-9._:@-]{1,128}\Z")
_TASK_ID = re.compile(r"\A[A-Za-z0-9._:-]{1,64}\Z")


class ProtocolError(Exception):
    """The daemon sent something this library cannot read as a line."""


# -- encoding -----------------------------------------------------------


def encode(frame: Mapping[str, Any]) -> bytes:
    """One frame as compact JSON in UTF-8, without a newline. JSON escapes
    every control character, so the bytes never hold a newline. Raises
    ``ValueError`` for what JSON cannot carry (NaN, infinities, strings
    that are not valid Unicode) and ``TypeError`` for what is not JSON."""
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"frame is not valid Unicode: {e}") from None


def encode_line(frame: Mapping[str, Any], limit: int = MAX_FRAME_BYTES) -> bytes:
    """A frame as a TCP line (with its ``\\n``); ``FrameTooLarge`` when the
    frame itself is over ``limit`` bytes."""
    body = encode(frame)
    if len(body) > limit:
        raise FrameTooLarge(len(body), limit, f"{frame.get('type', 'frame')} frame")
    return body + b"\n"


def decode(line: bytes) -> Optional[Dict[str, Any]]:
    """A line from the daemon as a JSON object with a string ``type``, or
    ``None`` when it is not one."""
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return None
    return value


class LineReader:
    """Newline framing of a byte stream: ``feed`` takes what ``recv``
    returned and gives back the complete lines, each without its ``\\n``
    (and a ``\\r`` before it). A line longer than ``max_line`` raises
    ``ProtocolError`` without buffering more than that."""

    def __init__(self, max_line: int = MAX_REPLY_BYTES) -> None:
        self.max_line = max_line
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[bytes]:
        lines: List[bytes] = []
        start = 0
        buf = self._buf
        scan_from = len(buf)
        buf += data
        while True:
            nl = buf.find(b"\n", scan_from)
            if nl < 0:
                break
            end = nl
            if end > start and buf[end - 1] == 0x0D:
                end -= 1
            if end - start > self.max_line:
                raise ProtocolError(f"a line of {end - start} bytes is over {self.max_line}")
            lines.append(bytes(buf[start:end]))
            start = nl + 1
            scan_from = start
        del buf[:start]
        if len(buf) > self.max_line + 1:
            raise ProtocolError(f"a line of over {self.max_line} bytes")
        return lines

    @property
    def buffered(self) -> int:
        return len(self._buf)


# -- text ---------------------------------------------------------------


def utf8_cut(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, on a character
    boundary."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", "ignore")


def _json_len(s: str) -> int:
    return len(json.dumps(s, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def split_lines(items: Iterable[Any]) -> List[str]:
    """What ``Task.log(*lines)`` was given, as log lines: each item as
    text, split at its newlines (a ``\\r`` before one is dropped)."""
    out: List[str] = []
    for item in items:
        text = item if isinstance(item, str) else str(item)
        parts = text.split("\n")
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()
        for p in parts:
            out.append(p[:-1] if p.endswith("\r") else p)
    return out


def pack_log_lines(task_id: str, lines: Sequence[str], limit: int = MAX_FRAME_BYTES) -> List[Dict[str, Any]]:
    """``task_log`` frames carrying ``lines`` in order, each frame at most
    ``limit`` bytes and ``MAX_LOG_LINES`` lines; a line too long for one
    frame is split over several lines."""
    empty = len(encode({"type": "task_log", "task_id": task_id, "lines": []}))
    room = limit - empty
    if room < 64:
        raise ValueError("frame limit too small for a log line")
    frames: List[Dict[str, Any]] = []
    cur: List[str] = []
    used = 0

    def flush() -> None:
        nonlocal cur, used
        if cur:
            frames.append({"type": "task_log", "task_id": task_id, "lines": cur})
        cur, used = [], 0

    for line in lines:
        for piece in _fit(line, room):
            cost = _json_len(piece) + (1 if cur else 0)
            if cur and (used + cost > room or len(cur) >= MAX_LOG_LINES):
                flush()
                cost = _json_len(piece)
            cur.append(piece)
            used += cost
    flush()
    return frames


def _fit(line: str, room: int) -> List[str]:
    """``line`` in pieces whose JSON form is at most ``room`` bytes."""
    if _json_len(line) <= room:
        return [line]
    pieces: List[str] = []
    rest = line
    while rest:
        # Each character takes at most 6 bytes in JSON (\\u00XX); most far fewer.
        lo, hi = 1, len(rest)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _json_len(rest[:mid]) <= room:
                lo = mid
            else:
                hi = mid - 1
        pieces.append(rest[:lo])
        rest = rest[lo:]
    return pieces


# -- checks -------------------------------------------------------------


def check_worker_id(worker_id: str) -> str:
    if not isinstance(worker_id, str) or not _WORKER_ID.match(worker_id):
        raise ValueError(
            f"worker id {worker_id!r} is not 1 to {MAX_WORKER_ID} bytes of A-Za-z0-9._:@-"
        )
    if worker_id in RESERVED_IDS:
        raise ValueError(f"worker id {worker_id!r} is reserved")
    return worker_id


def valid_task_id(task_id: Any) -> bool:
    return isinstance(task_id, str) and bool(_TASK_ID.match(task_id))


def default_worker_id(hostname: str, pid: int) -> str:
    host = re.sub(r"[^A-Za-z0-9._:@-]", "-", hostname) or "worker"
    return f"{host[: MAX_WORKER_ID - 12]}-{pid}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _text(name: str, v: Any, max_bytes: int = MAX_TEXT) -> None:
    if not isinstance(v, str):
        raise ValueError(f"{name} must be a string")
    if len(v.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ValueError(f"{name} is over {max_bytes} bytes")


def check_labels(labels: Any) -> Dict[str, str]:
    if not isinstance(labels, Mapping):
        raise ValueError("labels must be a mapping of strings to strings")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"more than {MAX_LABELS} labels")
    out: Dict[str, str] = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not k:
            raise ValueError("label keys must be non-empty strings")
        _text(f"label key {k!r}", k, MAX_LABEL_KEY)
        _text(f"label {k!r}", v, MAX_LABEL_VALUE)
        out[k] = v
    return out


def check_number(name: str, v: Any, hi: float) -> None:
    if not _is_number(v) or not (0 <= v <= hi):
        raise ValueError(f"{name} must be a number from 0 to {hi:g}")


_RESOURCE_MB = ("rss_mb", "heap_used_mb", "heap_total_mb", "external_mb", "peak_rss_mb")
_RESOURCE_COUNTS = ("threads", "fds", "io_read_bytes", "io_write_bytes")


def check_state_field(name: str, v: Any) -> None:
    """Raise ``ValueError`` when heartbeat field ``name`` holds what the
    daemon would refuse as ``bad_field``. ``None`` is checked by the
    caller."""
    if name == "status":
        if v not in STATUSES:
            raise ValueError("status must be idle, working or error")
    elif name == "cpu_usage":
        check_number(name, v, MAX_CPU_PERCENT)
    elif name in ("memory_usage", "gpu_usage"):
        check_number(name, v, 100.0)
    elif name == "queue_depth":
        if not _is_whole(v):
            raise ValueError("queue_depth must be a whole number, 0 or more")
    elif name == "current_job":
        if not isinstance(v, Mapping):
            raise ValueError("current_job must be a mapping (id, type, files, started_at) or None")
        job_id = v.get("id")
        if job_id is not None and not (isinstance(job_id, str) or _is_whole(job_id)):
            raise ValueError("current_job.id must be a string or a whole number")
        if isinstance(job_id, str):
            _text("current_job.id", job_id)
        if v.get("type") is not None:
            _text("current_job.type", v.get("type"))
        for k in ("files", "started_at"):
            if v.get(k) is not None and not _is_whole(v.get(k)):
                raise ValueError(f"current_job.{k} must be a whole number")
    elif name == "resource_usage":
        if not isinstance(v, Mapping):
            raise ValueError("resource_usage must be a mapping")
        for k in _RESOURCE_MB:
            if v.get(k) is not None and (not _is_number(v[k]) or v[k] < 0):
                raise ValueError(f"resource_usage.{k} must be a number, 0 or more")
        for k in _RESOURCE_COUNTS:
            if v.get(k) is not None and not _is_whole(v[k]):
                raise ValueError(f"resource_usage.{k} must be a whole number")
    elif name == "running_tasks":
        if not isinstance(v, (list, tuple)) or not all(isinstance(t, Mapping) for t in v):
            raise ValueError("running_tasks must be a list of mappings")
        if len(v) > MAX_RUNNING_TASKS:
            raise ValueError(f"running_tasks has more than {MAX_RUNNING_TASKS} entries")
    elif name == "labels":
        check_labels(v)


def check_progress(fraction: Any, message: Any) -> Tuple[Optional[float], Optional[str]]:
    if fraction is None and message is None:
        raise ValueError("progress needs a fraction, a message, or both")
    if fraction is not None:
        check_number("fraction", fraction, 1.0)
        fraction = float(fraction)
    if message is not None:
        if not isinstance(message, str):
            message = str(message)
        message = utf8_cut(message, MAX_PROGRESS_MESSAGE)
    return fraction, message


# -- addresses and environment ------------------------------------------


Address = Tuple[str, int]


def parse_addr(text: str) -> Address:
    """``host:port`` (``[v6]:port`` for an IPv6 address) as a pair."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"address {text!r} is not [host]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"address {text!r} is not host:port")
        if ":" in host:
            raise ValueError(f"address {text!r}: write an IPv6 address as [addr]:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"address {text!r} has no valid port")
    return host, int(port_text)


def format_addr(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addrs(value: Union[str, Sequence[Union[str, Address]]]) -> List[Address]:
    """A comma-separated ``host:port`` list, or a sequence of ``host:port``
    strings or ``(host, port)`` pairs; duplicates are dropped."""
    items: List[Union[str, Address]]
    if isinstance(value, str):
        items = [p for p in value.split(",") if p.strip()]
    else:
        items = list(value)
    out: List[Address] = []
    for item in items:
        if isinstance(item, str):
            addr = parse_addr(item)
        else:
            host, port = item
            addr = (str(host), int(port))
        if addr not in out:
            out.append(addr)
    if not out:
        raise ValueError("no heartbeat address")
    return out


def parse_labels(text: str) -> Dict[str, str]:
    """``k=v,k=v`` as a mapping (as ``MUSTER_LABELS`` spells it)."""
    out: Dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        k, sep, v = part.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"label {part!r} is not key=value")
        out[k.strip()] = v.strip()
    return check_labels(out)


def read_token_file(path: str) -> str:
    """A token file as musterd reads it: its first line, trimmed."""
    with open(path, "rb") as f:
        data = f.read(4097)
    text = data.decode("utf-8")
    lines = text.splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(f"{path} holds no token")
    return token
