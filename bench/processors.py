"""``make bench-processors``: the worker's events/s against two baselines, its peak RSS,
and crossing-event-to-notice latency.

Throughput over a backlog of ``EPT_BENCH_EVENTS`` (default 100,000) events on 2 topics
x 6 partitions, published before each consumer starts and timed from its first event
counted to the last, of:

* a Faust agent that only counts the events (Faust's own per-event cost);
* quixstreams, the engine a user would pick instead: a tumbling 60 s count per key
  (RocksDB state). It runs from ``EPT_BENCH_PEER_PYTHON`` (``make bench-processors``
  builds ``build/peers-venv``): quixstreams pins confluent-kafka below the version ept
  uses, so it cannot share ept's environment;
* ``ept worker`` with the default rules, one process (profiled in the first round).

Then ``ept worker`` with one process and with two (``--processes 2``) over a backlog of
``EPT_BENCH_BIG_EVENTS`` (default 1,000,000), timed from when every process reads (the
second joins seconds after the first), with the worker's peak RSS (``VmHWM``): on a load
whose partitions the two processes can share evenly, then once on the load above, whose
one hot endpoint puts 58% of the events on one process (see :func:`events_for_load`).

Each phase runs ``EPT_BENCH_ROUNDS`` times (default 3), its parts back to back; a ratio
is taken within a round, and the median of the rounds' is printed.

Latency: under steady traffic, from publishing the event whose count crosses a rule's
threshold to its firing notice on the alert topic, for count rules (``api_degradation``,
and ``template_failures`` with its rate condition; many endpoints or templates at once)
and a ratio rule (``high_error_rate``, a fresh worker per sample: it stays firing).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer

from bench.common import kafka_bootstrap, median, percentile, print_table
from ept.core.kafka import ensure_topics
from ept.core.settings import Settings, load_settings
from tests.conftest import free_port
from tests.events import EventPublisher, record

EVENTS = int(os.environ.get("EPT_BENCH_EVENTS", "100000"))
BIG_EVENTS = int(os.environ.get("EPT_BENCH_BIG_EVENTS", "1000000"))
ROUNDS = int(os.environ.get("EPT_BENCH_ROUNDS", "3"))
PEER_PYTHON = os.environ.get("EPT_BENCH_PEER_PYTHON", sys.executable)
TOPICS = ("render_completed", "api_request_completed")
PARTITIONS = 6
COUNT_SAMPLES, RATE_SAMPLES = 12, 2
# py-spy's path (make bench-processors installs it beside the peer): the one-process
# worker's run is profiled and where its time goes is printed.
PY_SPY = os.environ.get("EPT_BENCH_PY_SPY")
# Inclusive shares of the profile printed for these frames (function name, file part).
PROFILED = [("_collect", "collect_stage"), ("consume", "event_reader"),
            ("decode_record", "codec"), ("collect", "collector"), ("_deliver", "collect_stage"),
            ("handle", "evaluate_stage"), ("steps", "partition_judge"), ("from_json", "records"),
            ("_publish", "evaluate_stage"), ("report_progress", "collect_stage")]
REPO = Path(__file__).resolve().parents[1]

COUNTER_APP = '''
import os, faust
app = faust.App(os.environ["APP_ID"], broker="kafka://" + os.environ["BOOTSTRAP"],
                store="memory://", web_port=int(os.environ["PORT"]), web_bind="127.0.0.1",
                datadir=os.environ["DATADIR"])
topics = app.topic(*os.environ["TOPICS"].split(","), value_serializer="raw")
seen = {"n": 0}

@app.agent(topics)
async def count(stream):
    async for _ in stream:
        seen["n"] += 1

@app.page("/count")
async def page(web, request):
    return web.json(seen)
'''

PEER_APP = '''
import json, os, threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from quixstreams import Application

app = Application(broker_address=os.environ["BOOTSTRAP"], consumer_group=os.environ["APP_ID"],
                  auto_offset_reset="earliest", state_dir=os.environ["DATADIR"],
                  loglevel="WARNING")
seen = {"n": 0}

def bump(value):
    seen["n"] += 1

class Count(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(json.dumps(seen).encode())

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Count)
threading.Thread(target=server.serve_forever, daemon=True).start()
for name in os.environ["TOPICS"].split(","):
    events = app.dataframe(app.topic(name, key_deserializer="bytes", value_deserializer="bytes"))
    events.update(bump).tumbling_window(timedelta(seconds=60)).count().final()
app.run()
'''


def events_for_load(count: int, now_ms: int, hot_endpoint: bool
                    ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Half renders over 186 templates, half API calls, keyed by template and endpoint
    as the SDK publishes them. With ``hot_endpoint`` (the load #27's targets were set
    on), half the API calls are to one endpoint: its partition holds 27% of all events,
    and partitions 0-2 of each topic (one process's of two) 58%. Without, those calls
    spread over 7 endpoints: 47% and 53%."""
    for index in range(count):
        kind = index % 4
        at = now_ms + index  # event time moves forward: every minute is a new bucket
        if kind == 0:  # durations spread over ~130 sketch buckets
            yield ("render_completed", record(
                "render_completed", at, template_id=f"tpl{index % 97}",
                duration_ms=float(100 + index * 7919 % 20_000)))
        elif kind == 1:
            yield ("api_request_completed", record("api_request_completed", at,
                                                   endpoint=f"/api/{index % 13}"))
        elif kind == 2:
            yield ("render_completed", record("render_completed", at,
                                              template_id=f"tpl{index % 89}"))
        else:
            endpoint = "/api/render" if hot_endpoint else f"/api/{index % 7}"
            yield ("api_request_completed", record("api_request_completed", at,
                                                   endpoint=endpoint))


def publish_load(settings: Settings, count: int, hot_endpoint: bool) -> None:
    publisher = EventPublisher(settings)
    chunk: list[tuple[str, dict[str, Any]]] = []
    for event in events_for_load(count, int(time.time() * 1000) - 3_600_000,
                                 hot_endpoint):
        chunk.append(event)
        if len(chunk) == 50_000:  # within the producer's queue
            publisher.publish(chunk)
            chunk = []
    publisher.publish(chunk)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env={**os.environ, **env}, cwd=REPO,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def count_at(urls: list[str], count: Callable[[Any], int]) -> int:
    total = 0
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                total += count(json.loads(reply.read()))
        except OSError:
            pass
    return total


def rate_until(expected: int, counted: Callable[[], int], timeout: float = 1200.0) -> float:
    """Events/s from the first event counted to the last (start-up and the consumer group
    join are not the processing rate)."""
    began = time.perf_counter()
    first: tuple[float, int] | None = None
    while time.perf_counter() - began < timeout:
        seen = counted()
        now = time.perf_counter()
        if seen and first is None:
            first = (now, seen)
        if seen >= expected and first is not None:
            return (seen - first[1]) / (now - first[0])
        time.sleep(0.05)
    raise TimeoutError(f"{counted()} of {expected} counted")


def peak_rss_mb(process: subprocess.Popen[bytes], processes: int) -> list[float]:
    """The peak resident set (VmHWM) of each worker process (the children of a
    ``--processes`` parent), in MB."""
    parent = psutil.Process(process.pid)
    workers = parent.children() if processes > 1 else [parent]
    peaks = []
    for worker in workers:
        status = Path(f"/proc/{worker.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines()
                  if line.startswith("VmHWM:"))
        peaks.append(kb / 1024)
    return peaks


def worker_environment(settings: Settings, port: int) -> dict[str, str]:
    return {"EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "EPT_TOPIC_PREFIX": settings.topic_prefix, "EPT_WORKER_PORT": str(port),
            "EPT_STATE_DIR": str(settings.state_dir),
            "EPT_TOPIC_PARTITIONS": str(settings.topic_partitions)}


def start_worker(settings: Settings, log: Path, processes: int = 1
                 ) -> tuple[subprocess.Popen[bytes], list[str]]:
    port = free_port()
    process = spawn([sys.executable, "-m", "ept.deploy.cli", "worker", "-l", "info",
                     "--processes", str(processes)], worker_environment(settings, port), log)
    return process, [f"http://127.0.0.1:{port + i}/stats?rates=0" for i in range(processes)]


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(90)


@dataclass
class Throughput:
    events_per_s: float
    rss_mb: list[float]


def _mb(run: Throughput) -> str:
    return " + ".join(f"{mb:.0f}" for mb in run.rss_mb)


def run_baseline(settings: Settings, log: Path, peer: bool) -> float:
    """The Faust counting agent or the quixstreams peer through the backlog."""
    publish_load(settings, EVENTS, hot_endpoint=True)
    port = free_port()
    app = log.parent / f"{'peer' if peer else 'counter'}_{uuid.uuid4().hex[:6]}.py"
    app.write_text(PEER_APP if peer else COUNTER_APP)
    environment = {"APP_ID": f"{settings.topic_prefix}{app.stem}", "PORT": str(port),
                   "BOOTSTRAP": settings.kafka_bootstrap, "PYTHONPATH": str(app.parent),
                   "TOPICS": ",".join(settings.topics.event(name) for name in TOPICS),
                   "DATADIR": str(log.parent / f"{app.stem}-data")}
    command = ([PEER_PYTHON, str(app)] if peer
               else [sys.executable, "-m", "faust", "-A", app.stem, "worker", "-l", "warn"])
    process = spawn(command, environment, log)
    try:
        url = f"http://127.0.0.1:{port}/count"
        return rate_until(EVENTS, lambda: count_at([url], lambda data: data["n"]))
    finally:
        stop(process)


def worker_progress(settings: Settings, urls: list[str]) -> tuple[int, int, int]:
    """(events collected, processes reading event partitions, signals sent and not yet
    evaluated) over the worker processes at ``urls``."""
    events = set(settings.topics.events.values())
    counted = reading = unevaluated = 0
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                stats = json.loads(reply.read())
        except OSError:
            return 0, 0, 1
        counted += sum(stats["events"].values())
        reading += any(topic in events for topic, _ in stats["assignment"])
        unevaluated += stats["signals"]["sent"] - stats["signals"]["evaluated"]
    return counted, reading, unevaluated


def run_worker_load(settings: Settings, log: Path, processes: int, events: int,
                    hot_endpoint: bool, profile: Path | None = None) -> Throughput:
    """Time ``ept worker --processes N`` through a backlog of ``events``: from the moment
    every process reads event partitions (the events collected before, through the
    group's first rebalances, are left out) until every event is collected and every
    signal evaluated. With ``profile``, py-spy records the worker meanwhile;
    ``hot_endpoint``: see :func:`events_for_load`.

    The backlog is published before the worker starts: published while it reads, the
    publisher (in this process, on the same cores) set the pace of two processes."""
    publish_load(settings, events, hot_endpoint)
    process, urls = start_worker(settings, log, processes)
    spy = None
    try:
        deadline = time.monotonic() + 300
        while (progress := worker_progress(settings, urls))[1] < processes:
            assert time.monotonic() < deadline, f"not every process reads: {progress}"
            time.sleep(0.05)
        while (progress := worker_progress(settings, urls))[0] == 0:
            assert time.monotonic() < deadline, "nothing collected"
            time.sleep(0.01)
        began, counted_then = time.perf_counter(), progress[0]
        if profile is not None and PY_SPY:
            spy = subprocess.Popen([PY_SPY, "record", "--format", "raw", "--rate", "200",
                                    "--nonblocking", "-o", str(profile), "--pid",
                                    str(process.pid)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        while (progress := worker_progress(settings, urls))[0] < events or progress[2] > 0:
            assert time.monotonic() < deadline + 900, f"not through: {progress}"
            time.sleep(0.05)
        rate = (events - counted_then) / (time.perf_counter() - began)
        return Throughput(rate, peak_rss_mb(process, processes))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        stop(process)


def print_profile(samples: str) -> None:
    """Where the worker's busy samples went: the listed frames' inclusive shares, and the
    functions the samples were in (self time), from py-spy's collapsed stacks."""
    stacks: list[tuple[list[str], int]] = []
    for line in samples.splitlines():
        frames, _, count = line.rpartition(" ")
        stacks.append((frames.split(";"), int(count)))
    total = sum(count for _, count in stacks) or 1
    rows = []
    for name, file in PROFILED:
        hits = sum(count for frames, count in stacks if any(
            frame.split(" (")[0].rpartition(".")[2] == name and file in frame
            for frame in frames))
        rows.append([f"{name} ({file})", f"{100 * hits / total:.1f}%"])
    print_table(f"Where the one-process worker's time goes ({total:,} busy samples, "
                "inclusive)", ["frame", "share"], rows)
    own: dict[str, int] = {}
    for frames, count in stacks:
        leaf = frames[-1].split(" (")[0] + " (" + frames[-1].split(" (")[-1].split(":")[0]
        own[leaf] = own.get(leaf, 0) + count
    top = sorted(own.items(), key=lambda item: -item[1])[:15]
    print_table("Self time, top 15", ["function (file)", "share"],
                [[leaf[-90:] + ")", f"{100 * count / total:.1f}%"] for leaf, count in top])


class AlertWatch:
    """The firing notices on the alert topic, with the wall time each was read."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                                   "group.id": f"bench-{uuid.uuid4()}",
                                   "auto.offset.reset": "earliest"})
        self._consumer.subscribe([settings.topics.alerts])
        self.firing: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.05)
            if message is None or message.error():
                continue
            alert = json.loads(message.value())
            if alert["status"] == "firing" and not alert.get("renotify"):
                self.firing.append((time.time(), alert))

    def first(self, rule: str, labels: dict[str, str]) -> tuple[float, dict[str, Any]] | None:
        return next(((at, alert) for at, alert in list(self.firing)
                     if alert["rule"] == rule and alert["labels"] == labels), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


class SteadyTraffic:
    """Completed renders and API calls on every partition, ``per_s`` a second each, stamped
    now, until closed: event time moves on everywhere as in production."""

    def __init__(self, settings: Settings, per_s: int) -> None:
        self._settings, self._per_s = settings, per_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        publisher = EventPublisher(self._settings)
        while not self._stop.wait(0.1):
            at = int(time.time() * 1000)
            events = []
            for partition in range(self._settings.topic_partitions):
                for i in range(max(1, self._per_s // 10)):
                    events.append(("render_completed", partition, at, record(
                        "render_completed", at, template_id=f"steady{partition}-{i}")))
                    events.append(("api_request_completed", partition, at, record(
                        "api_request_completed", at, endpoint="/api/steady")))
            publisher.publish_to_partitions(events)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def wait_reading(urls: list[str]) -> None:
    """Until the worker counts the steady traffic, and 2 s more: latency is measured
    under traffic, not from the worker's start-up (its consumer groups joining)."""
    deadline = time.time() + 90
    while count_at(urls, lambda data: sum(data["events"].values())) == 0:
        assert time.time() < deadline, "the worker read nothing"
        time.sleep(0.2)
    time.sleep(2)


def crossing_latency(sent: dict[int, float], notice: tuple[float, dict[str, Any]]) -> float:
    """Seconds from publishing the crossing event (the last one published by the second
    the notice was decided at: one a second) to reading its notice."""
    read_at, alert = notice
    decided = (alert["decided_at_ms"] - 1) // 1000
    return read_at - sent[max(second for second in sent if second <= decided)]


@dataclass(frozen=True)
class CountRule:
    """A count rule measured by :func:`count_latencies`: the label of its scope and the
    event that counts towards it, published for one value of that label."""

    rule: str
    label: str
    event: str

    def failure(self, value: str, at_ms: int) -> tuple[str, dict[str, Any]]:
        return self.event, record(self.event, at_ms, **{self.label: value})


COUNT_RULES = (CountRule("api_degradation", "endpoint", "api_error"),
               CountRule("template_failures", "template_id", "render_failed"))


def count_latencies(settings: Settings, log: Path, count: CountRule) -> list[float]:
    """Failing scopes (endpoints or templates) started 2 s apart, one failure a second
    each, under steady traffic (the overall error rate stays below high_error_rate's)."""
    process, urls = start_worker(settings, log)
    watch = AlertWatch(settings)
    traffic = SteadyTraffic(settings, per_s=20)
    publisher = EventPublisher(settings)
    sent: dict[str, dict[int, float]] = {}

    def told(value: str) -> tuple[float, dict[str, Any]] | None:
        return watch.first(count.rule, {count.label: value})

    try:
        wait_reading(urls)
        started = time.time()
        while time.time() - started < 120 and len(
                [v for v in sent if told(v)]) < COUNT_SAMPLES:
            now = time.time()
            if len(sent) < COUNT_SAMPLES and now - started >= 2 * len(sent):
                sent[f"failing{len(sent)}"] = {}
            for value, times in sent.items():
                second = int(now)
                if second not in times and not told(value):
                    publisher.publish([count.failure(value, int(now * 1000))])
                    times[second] = time.time()
            time.sleep(0.05)
        time.sleep(1)
        return [crossing_latency(times, notice) for value, times in sent.items()
                if (notice := told(value))]
    finally:
        traffic.close()
        watch.close()
        stop(process)


def rate_latency(settings: Settings, log: Path) -> float | None:
    """A fresh worker under steady traffic; then 30 failed renders a second (in one go)
    until the overall error rate pages."""
    process, urls = start_worker(settings, log)
    watch = AlertWatch(settings)
    traffic = SteadyTraffic(settings, per_s=20)
    publisher = EventPublisher(settings)
    sent: dict[int, float] = {}
    try:
        wait_reading(urls)
        deadline = time.time() + 90
        while time.time() < deadline and not watch.first("high_error_rate", {}):
            now = time.time()
            if int(now) not in sent:
                at = int(now * 1000)
                publisher.publish([("render_failed", record(
                    "render_failed", at, template_id=f"broken{i}")) for i in range(30)])
                sent[int(now)] = time.time()
            time.sleep(0.05)
        notice = watch.first("high_error_rate", {})
        return crossing_latency(sent, notice) if notice else None
    finally:
        traffic.close()
        watch.close()
        stop(process)


def main() -> None:
    with kafka_bootstrap() as bootstrap, tempfile.TemporaryDirectory() as state:
        def fresh(name: str) -> Settings:
            settings = load_settings(kafka_bootstrap=bootstrap, state_dir=Path(state),
                                     topic_prefix=f"bench{uuid.uuid4().hex[:6]}{name}.",
                                     topic_partitions=PARTITIONS)
            ensure_topics(settings)
            return settings

        logs = Path(state)
        profile = logs / "worker1.profile"
        # Each phase in rounds, its parts back to back, the ratios taken within a round:
        # this machine's speed drifts by up to a fifth within minutes (one process
        # measured 31,000 and 42,000 events/s on the same backlog three minutes apart).
        small = [(run_baseline(fresh(f"b{r}"), logs / "baseline.log", peer=False),
                  run_baseline(fresh(f"q{r}"), logs / "peer.log", peer=True),
                  run_worker_load(fresh(f"w{r}"), logs / "worker1.log", 1, EVENTS,
                                  hot_endpoint=True, profile=profile if r == 0 else None))
                 for r in range(ROUNDS)]
        # The large backlog (the second process joins seconds after the first, when one
        # may be through most of a small one) without the hot endpoint, whose process
        # would set the pace of two; then once with it.
        large = [tuple(run_worker_load(fresh(f"big{r}p{processes}"), logs / "big.log",
                                       processes, BIG_EVENTS, hot_endpoint=False)
                       for processes in (1, 2)) for r in range(ROUNDS)]
        hot = tuple(run_worker_load(fresh(f"hot{processes}"), logs / "big.log", processes,
                                    BIG_EVENTS, hot_endpoint=True) for processes in (1, 2))
        samples = profile.read_text() if profile.exists() else ""
        counts = {count.rule: count_latencies(fresh(count.rule[:3]), logs / f"{count.rule}.log",
                                              count) for count in COUNT_RULES}
        rates = [found for sample in range(RATE_SAMPLES)
                 if (found := rate_latency(fresh(f"r{sample}"), logs / "rate.log")) is not None]
    print_table(f"Throughput over a backlog of {EVENTS:,} events (2 topics x {PARTITIONS} "
                "partitions): Faust's counting agent, quixstreams' tumbling 60 s count per "
                "key, ept worker (default rules, 1 process)",
                ["round", "Faust ev/s", "quixstreams ev/s", "worker ev/s", "worker / Faust",
                 "worker / quixstreams", "worker peak RSS MB"],
                [[r + 1, f"{faust:,.0f}", f"{peer:,.0f}", f"{one.events_per_s:,.0f}",
                  f"{one.events_per_s / faust:.2f}", f"{one.events_per_s / peer:.2f}",
                  _mb(one)] for r, (faust, peer, one) in enumerate(small)])
    over_faust = median([one.events_per_s / faust for faust, _, one in small])
    over_peer = median([one.events_per_s / peer for _, peer, one in small])
    print(f"median: worker / Faust {over_faust:.2f}, worker / quixstreams {over_peer:.2f}")
    print_table(f"ept worker over a backlog of {BIG_EVENTS:,} events",
                ["load, round", "1 process ev/s", "peak RSS MB", "2 processes ev/s",
                 "peak RSS MB", "2 / 1"],
                [[what, f"{one.events_per_s:,.0f}", _mb(one), f"{two.events_per_s:,.0f}",
                  _mb(two), f"{two.events_per_s / one.events_per_s:.2f}"]
                 for what, (one, two) in [
                     *((f"spread, {r + 1}", pair) for r, pair in enumerate(large)),
                     ("hot endpoint", hot)]])
    print(f"median of the spread rounds: 2 processes / 1 "
          f"{median([two.events_per_s / one.events_per_s for one, two in large]):.2f}")
    if samples:
        print_profile(samples)
    print_table("Crossing event -> firing notice on the alert topic, steady traffic",
                ["rule", "samples", "p50 s", "p99 s"],
                [[what, len(found), f"{percentile(found, 0.5):.1f}" if found else "-",
                  f"{percentile(found, 0.99):.1f}" if found else "-"]
                 for what, found in (("api_degradation (count)", counts["api_degradation"]),
                                     ("template_failures (count and rate)",
                                      counts["template_failures"]),
                                     ("high_error_rate (ratio)", rates))])


if __name__ == "__main__":
    main()
