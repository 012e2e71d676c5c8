"""Queue and task names: the external contract, in one place."""

from __future__ import annotations

REQUESTS_QUEUE = "booking.requests"  # portal -> timebok intake (Celery)
SUBMIT_TASK = "timebok.submit_booking"
RELAY_TASK = "timebok.relay_outbox"
TIMEOUTS_TASK = "timebok.check_timeouts"
MAINTENANCE_QUEUE = "timebok.maintenance"  # beat-driven housekeeping tasks
DEAD_LETTER_QUEUE = "timebok.dlq"  # RabbitMQ: tasks over the delivery limit (-> timebok dlq)
XML_CONTENT_TYPE = "application/xml"
BUS_DELIVERY_LIMIT = 10  # bus queues: deliveries before RabbitMQ dead-letters a message into `_dl`
