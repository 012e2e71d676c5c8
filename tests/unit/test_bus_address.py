"""The national bus URL, and the AMQP 0-9-1 URL of the same broker (topology, depths)."""

from __future__ import annotations

import pytest

from worker.adapters.transports.nhn import BusAddress


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://u:p@h/NS", "amqp://u:p@h:5672/%2F"),
        ("amqps://u:p@h/NS?vhost=v1", "amqps://u:p@h:5671/v1"),
        # a node on another port (a private RabbitMQ): 0-9-1 and 1.0 share its listener
        ("amqp://guest:guest@127.0.0.1:39563/NHNChaos", "amqp://guest:guest@127.0.0.1:39563/%2F"),
        ("amqps://u:p@h:15671/NS?vhost=a/b", "amqps://u:p@h:15671/a%2Fb"),
    ],
)
def test_the_0_9_1_url_is_the_same_broker(url: str, expected: str) -> None:
    assert BusAddress.parse(url).amqp091_url() == expected
