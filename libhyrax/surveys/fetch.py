"""The HTTP engine of `hyrax download`: a few connections, retries with backoff, answers in request order.

    fetcher = Fetcher(connections=4, retries=3, retry_wait=2.0, timeout=60.0, auth=("user", "password"))
    for answer in fetcher.answers(provider.requests(targets)):
        answer.body or answer.error                 # in the order the requests came

One worker thread per connection sends requests through a shared httpx.Client (a connection pool),
taking them in order from a queue, while the calling thread reads and writes the answers: the network
never waits for the disk. At most `window` requests are taken but not yet handed back, so memory stays
bounded whatever the number of objects, and a slow request holds up only the window behind it.

Retried: 5xx, 429, timeouts and dropped connections, `retries` times, after retry_wait x 2^k x a
random factor in [0.5, 1.5) (jitter, so parallel clients don't retry in step), or the Retry-After the
service asks for (at most MAX_RETRY_AFTER). Never another 4xx: 404 is an answer (no such cutout), other
4xx are errors of the request, and 401/403 raise CredentialsRefused at once (nothing more is sent).
`timeout` bounds each attempt whole, however slowly the bytes trickle in; `stall` bounds each wait for
the connection and for the next bytes (the answer's first ones included), so a hung service costs an
attempt `stall` seconds, not `timeout`. A circuit breaker stops the run when `give_up_after` attempts in a
row (default: 2 per connection) got no answer at all: a service that is down or hung fails the run at once
(ServiceDown: the run is kept and `--resume` continues it) instead of costing every object its retries.
Credentials go in headers, never in URLs; every URL or error that is logged or recorded goes through
libhyrax.redact.

Ctrl-C or SIGTERM reach the calling thread, which stops handing out requests; the workers are daemon
threads that end after the attempt they are in (bounded by `timeout`).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from libhyrax import redact
from libhyrax.errors import RunError, UsageError
from libhyrax.surveys.base import Request

log = logging.getLogger("hyrax.download")

MAX_RETRY_AFTER = 300.0  # seconds
WINDOW_BYTES = 128 << 20  # answers taken but not handed back: at most about this much memory


class CredentialsRefused(UsageError):
    """The service answered 401 or 403: the account or token is wrong, so nothing more is sent."""


class ServiceDown(RunError):
    """Attempt after attempt got no answer (the circuit breaker): the service is down or hung."""


@dataclass
class Answer:
    request: Request
    number: int  # the request's number in this run (recorded with each cutout)
    status: int  # the last HTTP status, 0 when no answer came
    body: bytes | None  # a 200 answer's body
    error: str | None  # why there is no body
    attempts: int
    finished: float  # Unix time

    @property
    def retryable(self) -> bool:
        """Whether the error may go away (5xx, 429, a timeout, a dropped connection)."""
        return self.body is None and (self.status == 0 or self.status == 429 or self.status >= 500)


class Fetcher:
    """Sends requests through `connections` connections; see the module docstring."""

    def __init__(
        self,
        *,
        connections: int = 4,
        retries: int = 3,
        retry_wait: float = 2.0,
        timeout: float = 60.0,
        auth: tuple[str, str] | None = None,
        headers: dict | None = None,
        cell_bytes: int = 1 << 16,
        first_number: int = 0,
        refused_hint: str = "check the credentials",
        stall: float | None = None,
        give_up_after: int | None = None,
    ):
        bad_stall = stall is not None and stall <= 0
        if connections < 1 or retries < 0 or retry_wait < 0 or timeout <= 0 or bad_stall:
            raise UsageError(
                "download: connections must be at least 1, retries and retry_wait not negative, "
                "timeout and stall_timeout positive"
            )
        self.connections, self.retries, self.retry_wait, self.timeout = (
            connections,
            retries,
            retry_wait,
            timeout,
        )
        self.stall = min(timeout, stall or timeout)
        self.give_up_after = give_up_after or 2 * connections
        self._silent = 0  # attempts in a row, over all connections, that got no answer
        self.auth, self.headers, self.cell_bytes = auth, dict(headers or {}), cell_bytes
        self.number, self.refused_hint = first_number, refused_hint
        self.retried = 0  # attempts beyond the first, over the run
        self._lock = threading.Lock()

    @classmethod
    def for_provider(cls, provider, download: dict, first_number: int = 0) -> Fetcher:
        """The engine as a `[download]` table and its provider set it up (the download stage, and data sets
        that download what they read): its connections and retries, the provider's timeouts and
        credentials, and room for one cutout of `download.size` a request."""
        return cls(
            connections=int(download["connections"]),
            retries=int(download["retries"]),
            retry_wait=float(download["retry_wait"]),
            timeout=provider.timeout,
            stall=provider.stall,
            auth=provider.auth(),
            headers=provider.headers(),
            cell_bytes=4 * (int(download["size"]) + 8) ** 2,
            refused_hint=provider.credentials_hint(),
            first_number=first_number,
        )

    def answers(self, requests: Iterable[Request]) -> Iterator[Answer]:
        """Answers to `requests` (taken lazily), in their order."""
        import httpx

        requests, first = iter(requests), self.number
        todo: queue.Queue = queue.Queue()
        done: dict[int, Answer | BaseException] = {}
        ready, stop = threading.Condition(), threading.Event()
        client = httpx.Client(
            limits=httpx.Limits(max_connections=self.connections, max_keepalive_connections=self.connections),
            timeout=httpx.Timeout(self.stall, connect=min(self.stall, 30.0), pool=None),
            auth=self.auth,
            headers=self.headers,
            follow_redirects=True,
        )
        for _ in range(self.connections):
            threading.Thread(target=self._work, args=(client, todo, done, ready, stop), daemon=True).start()
        window, head = None, first
        try:
            while True:
                while window is None or self.number - head < window:
                    request = next(requests, None)
                    if request is None:
                        break
                    window = window or self._window(request)
                    todo.put((self.number, request))
                    self.number += 1
                if head == self.number:
                    return
                with ready:  # waiting here is interrupted by Ctrl-C and SIGTERM
                    while head not in done and not any(isinstance(v, BaseException) for v in done.values()):
                        ready.wait()
                    failure = next((v for v in done.values() if isinstance(v, BaseException)), None)
                    if failure is not None:  # a refusal (or a bug) in any request stops everything at once
                        raise failure
                    answer = done.pop(head)
                head += 1
                yield answer
        finally:
            stop.set()
            for _ in range(self.connections):
                todo.put(None)
            client.close()

    def _window(self, request: Request) -> int:
        """How many requests may be taken but not handed back: 4 per connection, fewer when answers are
        big."""
        fits = WINDOW_BYTES // max(1, len(request.cells) * self.cell_bytes)
        return max(self.connections + 1, min(4 * self.connections, fits))

    def _work(
        self, client, todo: queue.Queue, done: dict, ready: threading.Condition, stop: threading.Event
    ) -> None:
        while True:
            item = todo.get()
            if item is None or stop.is_set():
                return
            number, request = item
            try:
                result: Answer | BaseException = self._fetch(client, request, number, stop)
            except BaseException as e:  # CredentialsRefused, or a bug: the calling thread raises it
                stop.set()
                result = e
            with ready:
                done[number] = result
                ready.notify()

    def _fetch(self, client, request: Request, number: int, stop: threading.Event) -> Answer:
        if request.settled is not None:  # the provider knows the outcome already: nothing to send
            return Answer(request, number, 0, None, None, 0, time.time())
        attempt = 0
        while True:
            attempt += 1
            status, body, error, retry_after = self._attempt(client, request)
            self._breaker(status, error, request)
            if status in (401, 403):
                raise CredentialsRefused(
                    f"the service refused the credentials ({error}) at "
                    f"{redact.text(request.url)}; {self.refused_hint}"
                )
            answer = Answer(request, number, status, body, error, attempt, time.time())
            if not answer.retryable or attempt > self.retries or stop.is_set():
                if answer.error:
                    log.debug("request %d: %s after %d attempt(s)", number, answer.error, attempt)
                return answer
            wait = self.retry_wait * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            wait = max(wait, min(retry_after or 0.0, MAX_RETRY_AFTER))
            log.debug("request %d: %s; retrying in %.1f s", number, error, wait)
            with self._lock:
                self.retried += 1
            stop.wait(wait)

    def _breaker(self, status: int, error: str | None, request: Request) -> None:
        """Count attempts in a row with no answer; enough of them means the service is down or hung."""
        with self._lock:
            self._silent = self._silent + 1 if status == 0 else 0
            if self._silent < self.give_up_after:
                return
        host = redact.text(request.url.split("/")[2] if "//" in request.url else request.url)
        raise ServiceDown(
            f"{host} gave no answer to {self.give_up_after} attempts in a row (the last: "
            f"{error}); the service looks down or hung, so the run stops here: resume it when "
            "the service is back"
        )

    def _attempt(self, client, request: Request) -> tuple[int, bytes | None, str | None, float | None]:
        """(HTTP status or 0, the body of a 200 answer, why there is none, Retry-After in seconds)."""
        import httpx

        limit = (1 << 20) + 8 * len(request.cells) * self.cell_bytes
        deadline = time.monotonic() + self.timeout  # the whole attempt, however slowly bytes arrive
        late = f"no whole answer within the timeout ({self.timeout:g} s)"
        stalled = late if self.stall == self.timeout else f"no answer for {self.stall:g} s (stall_timeout)"
        try:
            with client.stream(request.method, request.url, params=request.params, files=request.files) as r:
                if r.status_code != 200:
                    return r.status_code, None, f"{r.status_code} {r.reason_phrase}", _retry_after(r)
                chunks, size = [], 0
                for chunk in r.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        return 200, None, f"the answer is larger than {limit >> 20} MiB; refused", None
                    if time.monotonic() > deadline:
                        return 0, None, late, None
                return 200, b"".join(chunks), None, None  # one copy of the body, made once
        except httpx.TimeoutException:
            return 0, None, stalled, None
        except httpx.TransportError as e:
            return 0, None, redact.text(f"connection failed ({type(e).__name__}: {e})"[:300]), None


def _retry_after(response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
