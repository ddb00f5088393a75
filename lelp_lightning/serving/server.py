"""``lelp serve <export folder>``: the exported student behind an HTTP JSON endpoint on LitServe, without torch.

``POST /predict`` with ``{"texts": ["...", ...]}`` (an image student: ``{"images": [[[0-255, ...], ...], ...]}``)
answers ``{"predictions": [{"label": ..., "probabilities": {label: p, ...}}, ...]}`` in the order of the inputs.
LitServe gathers concurrent requests into one batch (up to ``max_batch_size`` requests, waiting at most
``batch_timeout`` s). Every request is checked in the HTTP process before it is queued, because LitServe fails a
whole batch when one of its requests fails: a Content-Type other than ``application/json`` is a 415, a body
over ``max_body_bytes`` a 413 (by its Content-Length before a byte of it is read, else once the cap is passed),
bad JSON (or JSON nested too deep to parse) a 400, a wrong shape a 422, too many or too long inputs a 413, each
with ``{"detail": "<one sentence>"}``. ``GET /health`` answers ``ok`` once the model is loaded; Ctrl-C (SIGINT) or
SIGTERM stops the server and its worker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from pathlib import Path

import litserve as ls
import numpy as np

from lelp_lightning.errors import LelpError
from lelp_lightning.serving.predictor import Predictor, export_spec

LITSERVE_HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServer.run listens on
LITSERVE_PORTS = (1024, 65535)


class RequestError(Exception):
    """A request that cannot be served: its HTTP status and one sentence saying what was expected."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def body_cap(max_items: int, max_chars: int, max_body_bytes: int | None) -> int:
    """The most bytes one request body may hold: ``max_body_bytes``, by default room for ``max_items`` texts of
    ``max_chars`` two-byte characters each and the JSON around them (about 10 MB for 256 × 20000)."""
    return max_body_bytes or 2 * max_items * max_chars + 65536


def check_content_type(value: bytes | None) -> None:
    """:class:`RequestError` (415) unless the Content-Type header ``value`` is ``application/json`` (any case,
    parameters such as ``charset`` allowed)."""
    if value is None:
        raise RequestError(415, "the request has no Content-Type; send the body as JSON with Content-Type: "
                                "application/json.")
    text = value.decode("latin-1")
    if text.partition(";")[0].strip().lower() != "application/json":
        raise RequestError(415, f"the Content-Type is {text[:80]!r}; send the body as JSON with Content-Type: "
                                "application/json.")


async def read_body(receive, content_length: bytes | None, cap: int) -> bytes | None:
    """The request body, read from the ASGI ``receive`` only while it stays within ``cap`` bytes: one whose
    Content-Length is over it is refused before a byte is read, one without is refused once it passes it
    (:class:`RequestError`, 413). None: the client went away."""
    declared = int(content_length) if content_length is not None and content_length.strip().isdigit() else None
    if declared is not None and declared > cap:
        raise RequestError(413, f"the request body is {declared} bytes; at most {cap} bytes are read (lelp serve "
                                "--max_body_bytes).")
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise RequestError(413, f"the request body is over {cap} bytes; at most {cap} bytes are read (lelp serve "
                                    "--max_body_bytes).")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def check_request(body: bytes, field: str, max_items: int, max_chars: int, image_shape: list[int] | None) -> list:
    """The inputs of a request body, or :class:`RequestError` naming what was wrong."""
    try:
        return _check_request(body, field, max_items, max_chars, image_shape)
    except RecursionError:  # JSON nested deeper than Python's parser goes (a request needs two or four levels)
        raise RequestError(400, f"the request body nests arrays or objects too deeply to parse; send "
                                f"{{\"{field}\": [...]}}.") from None


def _check_request(body: bytes, field: str, max_items: int, max_chars: int, image_shape: list[int] | None) -> list:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f"the request body is not valid JSON ({err}); send {{\"{field}\": [...]}}.") from None
    if not isinstance(payload, dict) or set(payload) != {field}:
        got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise RequestError(422, f"expected a JSON object with the one field \"{field}\", got {got}.")
    items = payload[field]
    if not isinstance(items, list) or not items:
        raise RequestError(422, f"\"{field}\" must be a non-empty list, got {json.dumps(items)[:80]}.")
    if len(items) > max_items:
        raise RequestError(413, f"{len(items)} {field} in one request; send at most {max_items} per request.")
    if image_shape is None:
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise RequestError(422, f"texts[{i}] is {type(text).__name__}, expected a string.")
            if not text.strip():
                raise RequestError(422, f"texts[{i}] is empty; every text needs at least one non-space character.")
            if len(text) > max_chars:
                raise RequestError(413, f"texts[{i}] has {len(text)} characters; at most {max_chars} are served.")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise RequestError(422, f"texts[{i}] holds a lone surrogate; send valid Unicode text.") from None
        return items
    try:
        images = np.asarray(items)
    except ValueError:
        images = None
    if images is None or images.shape[1:] != tuple(image_shape) or images.dtype.kind not in "iu" \
            or images.min() < 0 or images.max() > 255:
        raise RequestError(422, f"\"images\" must be a list of {image_shape[0]}×{image_shape[1]} arrays of integers "
                                "0-255.")
    return images.astype(np.uint8).tolist()


class CheckRequests:
    """ASGI middleware: checks a ``POST``'s Content-Type, reads its body once (at most ``max_body_bytes``), answers
    a bad one itself, and hands a good one on."""

    def __init__(self, app, path: str, field: str, max_items: int, max_chars: int, image_shape: list[int] | None,
                 max_body_bytes: int):
        self.app, self.path, self.field = app, path, field
        self.max_items, self.max_chars, self.image_shape = max_items, max_chars, image_shape
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # ASGI header names are lower case
        try:
            check_content_type(headers.get(b"content-type"))
            body = await read_body(receive, headers.get(b"content-length"), self.max_body_bytes)
            if body is None:
                return
            check_request(body, self.field, self.max_items, self.max_chars, self.image_shape)
        except RequestError as err:
            answer = json.dumps({"detail": err.detail}).encode()
            await send({"type": "http.response.start", "status": err.status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(answer)).encode())]})
            await send({"type": "http.response.body", "body": answer})
            return
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                        + [(b"content-type", b"application/json")]}, replay, send)


class StudentAPI(ls.LitAPI):
    """One worker's predictor: a batch is the concatenated inputs of the requests LitServe gathered."""

    def __init__(self, folder: str, field: str, max_batch_size: int, batch_timeout: float):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.folder, self.field = folder, field

    def setup(self, device) -> None:
        # Ctrl-C reaches every process of the group: the server stops this worker itself, without a traceback here
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.predictor = Predictor.load(self.folder)
        self.kind = self.predictor.kind

    def decode_request(self, request: dict) -> list:
        return request[self.field]

    def batch(self, inputs: list[list]) -> tuple[list, list[int]]:
        return [x for items in inputs for x in items], [len(items) for items in inputs]

    def predict(self, batch) -> tuple[np.ndarray, list[int]]:
        rows, counts = batch if isinstance(batch, tuple) else (batch, [len(batch)])  # batch of one: not batched
        rows = np.asarray(rows, np.uint8) if self.kind == "pixels" else rows
        return self.predictor.predict_proba(rows), counts

    def unbatch(self, output) -> list[np.ndarray]:
        probabilities, counts = output
        return np.split(probabilities, np.cumsum(counts)[:-1])

    def encode_response(self, output) -> dict:
        if isinstance(output, tuple):  # not batched: predict's own output
            output = output[0]
        labels = self.predictor.labels
        return {"predictions": [{"label": labels[int(p.argmax())],
                                 "probabilities": {name: float(v) for name, v in zip(labels, p, strict=True)}}
                                for p in output]}


def build_server(folder: str | Path, max_batch_size: int = 64, batch_timeout: float = 0.005,
                 max_items: int = 256, max_chars: int = 20000, max_body_bytes: int | None = None) -> ls.LitServer:
    """A LitServer for the export in ``folder`` (checked here, so a wrong folder fails before any worker starts)."""
    folder = Path(folder)
    spec = export_spec(folder)
    image_shape = spec["image_shape"] if spec["kind"] == "pixels" else None
    field = "images" if image_shape else "texts"
    api = StudentAPI(str(folder.resolve()), field, max_batch_size, batch_timeout)
    check = (CheckRequests, {"path": "/predict", "field": field, "max_items": max_items, "max_chars": max_chars,
                             "image_shape": image_shape,
                             "max_body_bytes": body_cap(max_items, max_chars, max_body_bytes)})
    return ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, middlewares=[check],
                        model_metadata={"export": str(folder.resolve())})


def _stop_handler(main_pid: int):
    """SIGINT / SIGTERM in the server's own process: LitServe's shutdown (it stops the HTTP server and the worker).
    A forked HTTP process inherits the handler; there the signal keeps its default action, silently."""
    def stop(signum, frame):
        if os.getpid() == main_pid:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    return stop


def check_listen(host: str, port: int) -> str:
    """``host:port`` as a URL shows it, once it is known that LitServe can listen there: a host or port it refuses,
    or a port that cannot be bound (in use, privileged), is one sentence (:class:`LelpError`)."""
    if host not in LITSERVE_HOSTS:
        raise LelpError(f"cannot listen on {host} (LitServe listens only on {', '.join(LITSERVE_HOSTS[:2])} or "
                        f"{LITSERVE_HOSTS[2]}); choose one of them with --host.")
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    low, high = LITSERVE_PORTS
    if not low <= port <= high:
        raise LelpError(f"cannot listen on {where} (LitServe serves only ports {low}-{high}); choose a free port in "
                        f"{low}-{high} with --port.")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            sock.bind((host, port))
        except OSError as err:
            raise LelpError(f"cannot listen on {where} ({err.strerror or err}); choose a free port with "
                            "--port.") from None
    return where


def serve(folder: Path, host: str, port: int, max_batch_size: int, batch_timeout: float, max_texts: int,
          max_chars: int, max_body_bytes: int | None = None) -> None:
    """Run the server until SIGINT / SIGTERM (the options of ``lelp serve``,
    :class:`lelp_lightning.commands.ServeOptions`)."""
    where = check_listen(host, port)
    server = build_server(folder, max_batch_size, batch_timeout, max_texts, max_chars, max_body_bytes)
    stop = _stop_handler(os.getpid())
    signal.signal(signal.SIGINT, stop)  # also where the shell started it with SIGINT ignored (`lelp serve ... &`)
    signal.signal(signal.SIGTERM, stop)
    logging.getLogger("litserve").setLevel(logging.WARNING)
    print(f"lelp: serving {folder} on http://{where}/predict", flush=True)
    try:
        server.run(host=host, port=port, generate_client_file=False, log_level="warning")
    except SystemExit as stopped:
        if stopped.code != 3:  # uvicorn's STARTUP_FAILURE: the port was taken after check_listen bound it
            raise
        raise LelpError(f"cannot listen on {where} (it was taken as the server started); choose a free port with "
                        "--port.") from None
