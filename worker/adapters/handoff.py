"""Synchronous answers handed between the processes that read one reply queue, in Redis.

Every process (worker, API, CLI) consumes the same `<own>_syncreply` queue, so the answer
to one process's lookup may be taken by another's consumer. The caller notes in Redis which
inbox waits for its correlation id (`timebok:sync:wait:<id>`, expiring with the call); a
consumer that takes an answer it does not wait for pushes it onto that inbox's list
(`timebok:sync:inbox:<inbox>`, a short TTL), which the waiting process pops. An answer whose
correlation id nobody waits for is late: the consumer drops it. Nothing goes back onto the
queue, so no answer circles between consumers.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import TYPE_CHECKING, Any

from worker.adapters.transports.base import Delivery, HandoffUnavailable

if TYPE_CHECKING:
    import redis

PREFIX = "timebok:sync"
INBOX_TTL = 15.0  # seconds an answer handed over waits in an inbox (the bus's message TTL)
EXPECT_GRACE = 2.0  # seconds a caller's note outlives its timeout (clock and round trips)


class RedisHandoff:
    """The hand-off over one Redis (connections made on first use, per process)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: redis.Redis[bytes] | None = None
        self._blocking: dict[str, redis.Redis[bytes]] = {}  # inbox -> client that waits on it
        self._lock = threading.Lock()

    def expect(self, correlation_id: str, inbox: str, timeout: float) -> None:
        """Note which inbox waits for the answer, for the call's timeout and a little."""
        ms = int((timeout + EXPECT_GRACE) * 1000)
        self._call(lambda r: r.set(_wait_key(correlation_id), inbox, px=ms))

    def forget(self, correlation_id: str) -> None:
        """The call is over: an answer from now on is late wherever it arrives."""
        self._call(lambda r: r.delete(_wait_key(correlation_id)))

    def forward(self, delivery: Delivery) -> str | None:
        """Push the answer onto the waiting inbox; None when nobody waits for it."""
        correlation = delivery.correlation_id
        if not correlation:
            return None
        found = self._call(lambda r: r.get(_wait_key(correlation)))
        if found is None:
            return None
        inbox = bytes(found).decode()
        data = _dump(delivery)

        def push(r: redis.Redis[bytes]) -> Any:
            pipe = r.pipeline()  # MULTI: the list never stays without its TTL
            pipe.rpush(_inbox_key(inbox), data)
            pipe.pexpire(_inbox_key(inbox), int(INBOX_TTL * 1000))
            return pipe.execute()

        self._call(push)
        return inbox

    def receive(self, inbox: str, timeout: float) -> Delivery | None:
        """Block up to `timeout` seconds for the next answer handed to `inbox`."""
        client = self._waiter(inbox, timeout)
        found = self._call(lambda _r: client.blpop([_inbox_key(inbox)], timeout=timeout))
        return None if found is None else _load(found[1])

    def _redis(self) -> redis.Redis[bytes]:
        with self._lock:
            if self._client is None:
                import redis

                self._client = redis.Redis.from_url(self.url, socket_timeout=2)
            return self._client

    def _waiter(self, inbox: str, timeout: float) -> redis.Redis[bytes]:
        """A client of its own for a blocking pop (its socket waits longer than the pop)."""
        with self._lock:
            client = self._blocking.get(inbox)
            if client is None:
                import redis

                client = redis.Redis.from_url(self.url, socket_timeout=timeout + 5)
                self._blocking[inbox] = client
            return client

    def _call(self, fn: Any) -> Any:
        import redis

        try:
            return fn(self._redis())
        except redis.RedisError as exc:
            raise HandoffUnavailable(f"hand-off store unavailable: {exc}") from exc


def _wait_key(correlation_id: str) -> str:
    return f"{PREFIX}:wait:{correlation_id}"


def _inbox_key(inbox: str) -> str:
    return f"{PREFIX}:inbox:{inbox}"


def _dump(delivery: Delivery) -> bytes:
    """The answer as JSON (the body base64): what `Transport.open` needs of it."""
    return json.dumps(
        {
            "queue": delivery.queue,
            "body": base64.b64encode(delivery.body).decode(),
            "headers": delivery.headers,
            "content_type": delivery.content_type,
            "reply_to": delivery.reply_to,
            "correlation_id": delivery.correlation_id,
            "redelivered": delivery.redelivered,
        }
    ).encode()


def _load(raw: bytes) -> Delivery:
    """An answer handed over: already settled by the consumer that took it."""
    data = json.loads(raw)
    return Delivery(
        queue=str(data["queue"]),
        body=base64.b64decode(data["body"]),
        headers={str(k): str(v) for k, v in data["headers"].items()},
        settle=lambda _outcome: None,
        content_type=data.get("content_type"),
        reply_to=data.get("reply_to"),
        correlation_id=data.get("correlation_id"),
        redelivered=bool(data.get("redelivered")),
    )


__all__ = ["RedisHandoff"]
