"""A minimal Faust app for the smoke test: upper-cases messages from one topic to another."""

import os

import faust

app = faust.App(
    os.environ["ECHO_APP_ID"],
    broker=f"kafka://{os.environ['ECHO_BOOTSTRAP']}",
    store="memory://",
    web_enabled=False,
    topic_partitions=1,
)
source = app.topic(os.environ["ECHO_SOURCE"], value_serializer="raw")
target = app.topic(os.environ["ECHO_TARGET"], value_serializer="raw")


@app.agent(source)
async def echo(stream):  # type: ignore[no-untyped-def]
    async for value in stream:
        await target.send(value=value.upper())
