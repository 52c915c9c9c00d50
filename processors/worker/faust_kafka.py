"""Faust's Kafka transport with one fix: an offset is committed only once an agent had it.

When a rebalance begins Faust stops the flow, and a stream that takes a message from its
buffer while the flow is stopped (or that was fetched in an earlier consumer generation)
skips it without handing it to the agent — and acks it (``faust/streams.py``, 0.15). The
ack counts towards the next commit, Faust commits on every revocation, and after the
rebalance the partition is read from the committed offset: the skipped message is never
processed. The worker lost alert signals this way when group members came and went.

A stream marks each message it hands to an agent as ``tracked`` first, so a skipped
message is the one acked untracked. :class:`Consumer` takes that ack without counting
it: the message is read again after the rebalance. Reading a message twice is harmless
to the worker, which applies each source offset once.
"""

from __future__ import annotations

from faust.transport.drivers import aiokafka
from faust.types import AppT, Message


class Consumer(aiokafka.Consumer):
    def ack(self, message: Message) -> bool:
        """Count ``message`` towards the committable offset if an agent was handed it."""
        if message.tracked:
            return bool(super().ack(message))
        message.acked = True  # skipped: settled, but not committable
        return False


class Transport(aiokafka.Transport):
    Consumer = Consumer


def use_transport(app: AppT) -> None:
    """Make ``app`` consume through :class:`Transport`.

    Call before anything touches ``app.transport`` (declaring a topic does).
    """
    app.transport = Transport(app.conf.broker_consumer, app)
