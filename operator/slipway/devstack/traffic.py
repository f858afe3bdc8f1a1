"""A small load generator for the dev stack: steady predictions through the gateway.

Bounded in time and in count, and loopback only: it exists to give rollouts real traffic to
analyse on one machine, not to load-test anything else.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class LoadGenerator:
    """Sends `rate` v1 predict requests per second (spread over `workers`) until stopped or a bound."""

    def __init__(
        self,
        gateway_url: str,
        host: str,
        model: str,
        instances: Sequence[dict[str, Any]],
        rate: float = 20.0,
        workers: int = 4,
        max_requests: int = 200_000,
        max_seconds: float = 3600.0,
    ) -> None:
        parts = urlsplit(gateway_url)
        if parts.hostname not in LOOPBACK:
            raise ValueError(f"the load generator only sends to loopback addresses, not {parts.hostname}")
        if not instances:
            raise ValueError("instances must not be empty")
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.host, self.path = host, f"/v1/models/{model}:predict"
        self.instances = list(instances)
        self.interval = workers / rate
        self.workers, self.max_requests, self.max_seconds = workers, max_requests, max_seconds
        self.outcomes: Counter[int] = Counter()  # HTTP status -> count (0: no answer)
        self.errors: Counter[str] = Counter()  # why there was no answer
        self.latencies: list[float] = []
        self._sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self._deadline = time.monotonic() + self.max_seconds
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def snapshot(self) -> Counter[int]:
        with self._lock:
            return Counter(self.outcomes)

    def _next(self) -> int | None:
        with self._lock:
            if self._sent >= self.max_requests or time.monotonic() > self._deadline:
                return None
            self._sent += 1
            return self._sent

    def _send(self, connection: http.client.HTTPConnection, body: str) -> tuple[http.client.HTTPConnection, int]:
        """One request; the HTTP status, or 0 when no answer came.

        A kept-alive connection the proxy closed while idle (nginx does on every reload) fails
        before the request reaches anyone: that one is retried once on a new connection, as
        HTTP client pools do.
        """
        for attempt in (1, 2):
            try:
                connection.request("POST", self.path, body, {"Host": self.host, "Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                return connection, response.status
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
                connection.close()
                connection = http.client.HTTPConnection(*self.address, timeout=10)
                if attempt == 2:
                    self._failed(error)
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                connection = http.client.HTTPConnection(*self.address, timeout=10)
                self._failed(error)
                break
        return connection, 0

    def _failed(self, error: Exception) -> None:
        with self._lock:
            self.errors[type(error).__name__] += 1

    def _run(self, worker: int) -> None:
        connection = http.client.HTTPConnection(*self.address, timeout=10)
        # Workers start staggered so the requests are spread evenly over each interval.
        next_at = time.monotonic() + self.interval * worker / self.workers
        while not self._stop.is_set():
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                break
            next_at += self.interval
            number = self._next()
            if number is None:
                break
            body = json.dumps({"instances": [self.instances[number % len(self.instances)]]})
            started = time.monotonic()
            connection, status = self._send(connection, body)
            with self._lock:
                self.outcomes[status] += 1
                self.latencies.append(time.monotonic() - started)
        connection.close()
