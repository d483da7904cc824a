"""The agent's end of the push channel: hear "policy version N is out", then check in at once.

Why: a kill switch should reach an online agent in seconds, not at its next check-in. The
backend's `GET /v1/push` is a server-sent-events stream; each `policy` event carries only a
version number. The notice is a hint and nothing more: the agent does not read policy from
it, it only wakes its check-in, which fetches and verifies everything through TUF as always.
A forged or replayed notice can at most cause one extra (verified) check-in.

- `parse_events` (pure) turns SSE lines into announced versions; `push_request` builds the
  request (URL and the endpoint's bearer token). The load test's simulated agents use both.
- `bounded_lines` (pure) cuts the stream into lines of at most `MAX_LINE_CHARS`: a notice is
  about 40 bytes, and a server (or anyone on the path) that sends one endless line would
  otherwise grow the agent's memory without bound (an outside probe measured 150 MB/s) until
  the kernel kills it, protection included. An over-long line ends the channel; an event
  whose data outgrows the same bound is dropped.
- `PushListener` is an `agent.daemon.EventSource`: it holds the channel in its own thread,
  calls `on_version(N)` when N is newer than `known_version()`, and reconnects after the
  agent's one backoff (`agent.update.backoff.jittered_backoff_s`, capped, doubling, jittered from a
  seeded `random.Random`), honouring a 503's `Retry-After`. While the channel is down the
  daemon's ordinary (conditional) check-ins go on: polling is the fallback, never switched off.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.update.backoff import jittered_backoff_s

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MAX_LINE_CHARS",
    "PushConfig",
    "PushListener",
    "backoff_s",
    "bounded_lines",
    "parse_events",
    "push_request",
]

PUSH_PATH = "/v1/push"
MAX_LINE_CHARS = 4096  # per line, and per event's data: a notice is `{"policy_version": N}`


@dataclass(frozen=True, slots=True)
class PushConfig:
    """Reconnection and liveness bounds of the push channel.

    Attributes:
        min_backoff_s: first reconnect delay cap (1 s); doubles per failure.
        max_backoff_s: reconnect delay cap (60 s); the wait is drawn in [cap/2, cap].
        read_timeout_s: silence after which the channel is deemed dead (90 s: the backend
            writes a keep-alive every 25 s).
        max_retry_after_s: the most a 503's `Retry-After` is obeyed (300 s).
    """

    min_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    read_timeout_s: float = 90.0
    max_retry_after_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.min_backoff_s <= self.max_backoff_s <= 3600:
            raise ValueError("need 0 < min_backoff_s <= max_backoff_s <= 3600")
        if not 1 <= self.read_timeout_s <= 3600 or not 0 <= self.max_retry_after_s <= 3600:
            raise ValueError("read_timeout_s must be 1..3600 and max_retry_after_s 0..3600")


def push_request(backend_url: str, token: str) -> tuple[str, dict[str, str]]:
    """The URL and headers of the push channel for an endpoint's credentials."""
    return backend_url.rstrip("/") + PUSH_PATH, {
        "authorization": f"Bearer {token}",
        "accept": "text/event-stream",
    }


def bounded_lines(chunks: Iterable[str], max_chars: int = MAX_LINE_CHARS) -> Iterator[str]:
    """The SSE lines (ended by CR, LF or CRLF) of a stream of text chunks, without their ends.

    Raises:
        ValueError: a line grew past `max_chars` before it ended.
    """
    buf = ""
    for chunk in chunks:
        buf += chunk
        while True:
            cut = min((i for i in (buf.find("\r"), buf.find("\n")) if i >= 0), default=-1)
            if cut < 0 or (buf[cut] == "\r" and cut == len(buf) - 1):
                break  # no end yet, or a CR whose LF may be in the next chunk
            line, rest = buf[:cut], buf[cut + 1 :]
            if buf[cut] == "\r" and rest.startswith("\n"):
                rest = rest[1:]
            buf = rest
            yield line
        if len(buf) > max_chars:
            raise ValueError(f"push channel line over {max_chars} characters")
    if buf:
        yield buf.rstrip("\r")


def parse_events(lines: Iterable[str]) -> Iterator[int]:
    """Yield the version of each complete `policy` event in an SSE line stream.

    Comments (keep-alives), unknown events and malformed data are skipped: the notice is a
    hint, so nothing in it is worth failing over.
    """
    event, data, size = "message", list[str](), 0
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if event == "policy" and data and size <= MAX_LINE_CHARS:
                version = _version("\n".join(data))
                if version is not None:
                    yield version
            event, data, size = "message", [], 0
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data" and size <= MAX_LINE_CHARS:  # past it the event is dropped
            data.append(value)
            size += len(value) + 1


def _version(data: str) -> int | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    version = doc.get("policy_version") if isinstance(doc, dict) else None
    return version if isinstance(version, int) and 0 <= version < 2**63 else None


def backoff_s(failures: int, config: PushConfig, rng: random.Random) -> float:
    """The reconnect wait: `agent.update.backoff.jittered_backoff_s` within `config`'s bounds."""
    return jittered_backoff_s(
        failures, initial_s=config.min_backoff_s, max_s=config.max_backoff_s, rng=rng
    )


class PushListener:
    """Hold the push channel and wake the check-in on a newer version (an `EventSource`).

    Args:
        client: an `httpx.Client` (its own: the listener closes streams from another thread).
        backend_url: the backend's base URL.
        token: the endpoint's bearer token.
        known_version: the policy version the agent runs now (None: none yet).
        on_version: called (from the listener's thread) with a newer announced version; it
            should only schedule a check-in.
        rng: seeded jitter source.
        on_line: one-line reports (refused, reconnecting).
    """

    def __init__(
        self,
        client: httpx.Client,
        backend_url: str,
        token: str,
        *,
        known_version: Callable[[], int | None],
        on_version: Callable[[int], None],
        rng: random.Random,
        config: PushConfig | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.url, self.headers = push_request(backend_url, token)
        self.known_version, self.on_version = known_version, on_version
        self.rng, self.config = rng, config or PushConfig()
        self.on_line = on_line
        self.connects = 0
        self.notices = 0
        self._response: Any = None
        self._lock = threading.Lock()

    def _say(self, line: str) -> None:
        if self.on_line is not None:
            self.on_line(line)

    def run(self, decide_path: Callable[[str], Any], stop: threading.Event) -> None:
        """Listen until `stop` is set (`decide_path` is unused: notices decide no files)."""
        closer = threading.Thread(target=self._close_on, args=(stop,), daemon=True)
        closer.start()
        failures = 0
        while not stop.is_set():
            wait = self._listen_once(stop)
            if stop.is_set():
                break
            if wait is None:  # the channel was up and closed: a fresh start
                failures = 1
                wait = backoff_s(failures, self.config, self.rng)
            elif wait < 0:
                failures += 1
                wait = backoff_s(failures, self.config, self.rng)
            stop.wait(wait)

    def _close_on(self, stop: threading.Event) -> None:
        stop.wait()
        with self._lock:
            if self._response is not None:
                self._response.close()

    def _listen_once(self, stop: threading.Event) -> float | None:
        """One connection: None after a clean run, seconds to wait, or -1 for backoff."""
        import httpx

        timeout = httpx.Timeout(10.0, read=self.config.read_timeout_s)
        try:
            with self.client.stream("GET", self.url, headers=self.headers, timeout=timeout) as r:
                if r.status_code == 503:
                    after = r.headers.get("retry-after", "")
                    bound = (
                        min(float(after), self.config.max_retry_after_s) if after.isdigit() else 0
                    )
                    self._say(f"push channel refused (503); retrying in ~{bound:.0f} s")
                    return self.rng.uniform(bound / 2, bound) if bound else -1
                if r.status_code != 200:
                    self._say(f"push channel refused: HTTP {r.status_code}")
                    return -1
                with self._lock:
                    self._response = r
                    if stop.is_set():
                        return None
                self.connects += 1
                for version in parse_events(bounded_lines(r.iter_text())):
                    self.notices += 1
                    known = self.known_version()
                    if known is None or version > known:
                        self.on_version(version)
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            if not stop.is_set():
                self._say(f"push channel lost: {type(exc).__name__}")
            return -1
        except ValueError as exc:  # bounded_lines: not a notice stream; polling goes on
            self._say(f"push channel refused: {exc}")
            return -1
        finally:
            with self._lock:
                self._response = None
        return None
