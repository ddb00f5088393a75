"""`lelp serve` bounds what it reads, on a real server on 127.0.0.1: a body over ``--max_body_bytes`` is a 413
before it is read (by its Content-Length) or once the cap is passed (chunked), JSON nested too deep a 400, a
Content-Type other than application/json a 415, each with one sentence; the server keeps answering, and its
memory stays put. A port it cannot listen on is one sentence, exit status 2."""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from helpers import LELP, run_main

from .exports import free_port, serving

CAP = 1_000_000
MB = 2**20


@pytest.fixture(scope="module")
def server(small_bag, tmp_path_factory):
    """`lelp serve` on the small bag export with a 1 MB body cap, its stderr in a file; stopped at the end."""
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    with serving(small_bag.folder, log, "--max_texts", "8", "--max_chars", "1000",
                 "--max_body_bytes", str(CAP)) as (proc, port):
        yield proc, port, log


def exchange(port: int, head: dict[str, str], chunks: Iterable[bytes] = (), timeout: float = 20) -> tuple[int, dict]:
    """POST /predict with the headers ``head``, then the ``chunks`` one after another until the server answers (or
    stops reading); the answer's status and JSON body. Bounded: every send and the reading stop after ``timeout``."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{lines}\r\n".encode())
        sock.settimeout(2)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # answered
            try:
                sock.sendall(chunk)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break  # no longer read
        sock.settimeout(timeout)
        data = b""
        while True:
            try:
                more = sock.recv(65536)
            except ConnectionResetError:
                break
            if not more:
                break
            data += more
            head_end = data.find(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", data[:head_end]) if head_end >= 0 else None
            if length and len(data) >= head_end + 4 + int(length[1]):
                break
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    status, body = int(data[9:12]), data[data.find(b"\r\n\r\n") + 4:]
    return status, json.loads(body)


def post(port: int, body: bytes, content_type: str | None = "application/json") -> tuple[int, dict]:
    head = {"Content-Length": str(len(body))} | ({"Content-Type": content_type} if content_type else {})
    return exchange(port, head, [body])


def chunked(body: Iterable[bytes]) -> Iterable[bytes]:
    for piece in body:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def texts_body(size: int) -> bytes:
    """A well-formed request of about ``size`` bytes (many short texts: only its size is wrong)."""
    return json.dumps({"texts": ["what a day"] * (size // 14)}).encode()


def one_sentence(status: int, answer: dict, expected: int, words: str) -> None:
    detail = answer.get("detail", "")
    assert (status, words in detail, detail.endswith("."), detail.count(". ")) == (expected, True, True, 0), answer


def server_rss_bytes(pgid: int) -> int:
    """The resident memory of every process of the server's process group (the HTTP server, the worker, ...)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:
                status = (stat.parent / "status").read_text()
                total += int(re.search(r"VmRSS:\s*(\d+) kB", status)[1]) * 1024
        except (OSError, TypeError, IndexError):
            continue  # gone meanwhile, or a kernel thread
    return total


def test_a_body_over_the_cap_is_a_413_before_it_is_read(server):
    proc, port, _ = server
    body = texts_body(2 * CAP)
    one_sentence(*post(port, body), 413, f"at most {CAP} bytes")
    status, answer = exchange(port, {"Content-Type": "application/json", "Content-Length": str(100 * MB)},
                              [body[:MB]] * 100)  # claims 100 MB: refused on its headers
    one_sentence(status, answer, 413, f"the request body is {100 * MB} bytes; at most {CAP} bytes")
    status, answer = exchange(port, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                              chunked([body[:MB]] * 100))
    one_sentence(status, answer, 413, f"the request body is over {CAP} bytes")
    assert post(port, json.dumps({"texts": ["still up"]}).encode())[0] == 200 and proc.poll() is None


def test_json_nested_too_deep_is_a_400(server):
    proc, port, log = server
    one_sentence(*post(port, b"[" * 100_000 + b"]" * 100_000), 400, "nests arrays or objects too deeply")
    one_sentence(*post(port, b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 400, "too deeply")
    one_sentence(*post(port, b'{"texts": ' + b"[" * 500 + b"]" * 500 + b"}"), 422, "texts[0] is list")
    assert post(port, json.dumps({"texts": ["still up"]}).encode())[0] == 200 and proc.poll() is None
    assert "RecursionError" not in log.read_text()


@pytest.mark.parametrize(("content_type", "words"), [
    ("text/plain", "the Content-Type is 'text/plain'; send the body as JSON with Content-Type: application/json"),
    ("application/x-www-form-urlencoded", "the Content-Type is 'application/x-www-form-urlencoded'"),
    (None, "the request has no Content-Type; send the body as JSON with Content-Type: application/json"),
])
def test_a_body_that_is_not_declared_json_is_a_415(server, content_type, words):
    proc, port, _ = server
    one_sentence(*post(port, json.dumps({"texts": ["hello"]}).encode(), content_type), 415, words)
    assert post(port, json.dumps({"texts": ["still up"]}).encode())[0] == 200 and proc.poll() is None


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_with_parameters_or_any_case_is_served(server, content_type):
    _, port, _ = server
    status, answer = post(port, json.dumps({"texts": ["hello"]}).encode(), content_type)
    assert status == 200 and len(answer["predictions"]) == 1


def test_ten_100_mb_attempts_leave_the_server_s_memory_where_it_was(server):
    proc, port, log = server
    assert post(port, json.dumps({"texts": ["warm up"]}).encode())[0] == 200
    before = server_rss_bytes(proc.pid)
    piece = b"x" * MB
    for attempt in range(10):
        started = time.monotonic()
        if attempt % 2:
            head = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
            status, _ = exchange(port, head, chunked([piece] * 100))
        else:
            head = {"Content-Type": "application/json", "Content-Length": str(100 * MB)}
            status, _ = exchange(port, head, [piece] * 100)
        assert status == 413 and time.monotonic() - started < 20
    grown = server_rss_bytes(proc.pid) - before
    assert grown < 50 * MB, f"the server grew by {grown / MB:.0f} MB"
    assert post(port, json.dumps({"texts": ["still up"]}).encode())[0] == 200 and proc.poll() is None
    assert "Traceback" not in log.read_text()


# -- options and ports --------------------------------------------------------------------------------------------

def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("lelp: error:")]
    assert len(lines) == 1 and lines[0].endswith(".") and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def test_max_body_bytes_is_checked_and_defaults_to_a_few_mb():
    from lelp_lightning.commands import ServeOptions
    from lelp_lightning.serving.server import body_cap

    ran = run_main("serve", "student", "--max_body_bytes", "0")
    assert ran.returncode == 2
    assert error_line(ran.stderr) == "lelp: error: lelp serve --max_body_bytes must be an integer >= 1, got 0."
    options = ServeOptions(Path("student"))
    assert options.max_body_bytes is None
    assert 2 * MB < body_cap(options.max_texts, options.max_chars, None) < 16 * MB
    assert body_cap(256, 20000, 1234) == 1234


def test_a_port_in_use_is_one_sentence(small_bag):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = subprocess.run([LELP, "serve", str(small_bag.folder), "--port", str(port)], capture_output=True,
                             text=True, timeout=120)
    assert ran.returncode == 2
    line = error_line(ran.stderr)
    assert line.startswith(f"lelp: error: cannot listen on 127.0.0.1:{port} (")
    assert "in use" in line and line.endswith("; choose a free port with --port.")


@pytest.mark.parametrize("port", ["22", "0", "1023"])
def test_a_port_below_1024_is_one_sentence(small_bag, port):
    ran = subprocess.run([LELP, "serve", str(small_bag.folder), "--port", port], capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 2
    assert error_line(ran.stderr) == (f"lelp: error: cannot listen on 127.0.0.1:{port} (LitServe serves only ports "
                                      "1024-65535); choose a free port in 1024-65535 with --port.")


def test_a_host_litserve_does_not_serve_is_one_sentence(small_bag):
    ran = subprocess.run([LELP, "serve", str(small_bag.folder), "--host", "localhost", "--port", str(free_port())],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 2
    assert error_line(ran.stderr) == ("lelp: error: cannot listen on localhost (LitServe listens only on 127.0.0.1, "
                                      "0.0.0.0 or ::); choose one of them with --host.")
