"""The ClickHouse sink: Kafka event topics -> ``events`` table, exactly once.

:mod:`.consumer` holds the run loop (``Sink``): it consumes, splits what it read into
runs of one partition's messages (:mod:`.runs`) and passes each run through the steps,
one file each, in the order a message meets them:

1. :mod:`.stored` — skip what a partition's previous owner stored but did not commit.
2. :mod:`.deleted` — drop events of deleted accounts and users; apply deletions recorded
   while running to the stored rows.
3. :mod:`.validate` — scan, or decode and check; forward the body to the batch or the
   message to
4. :mod:`.dlq` — the dead-letter topic, with why and where from.
5. :mod:`.batching` — fill the batch (:mod:`.rows` frames it for ClickHouse); say when it
   is due.
6. :mod:`.insert` — insert it, one batch in flight in a background thread; pause the
   partitions and retry while ClickHouse is down (:mod:`.pause`, :mod:`.backoff`).
7. :mod:`.commit` — commit its offsets once ClickHouse acknowledged it and Kafka its
   dead letters.

:mod:`.service` is the ``ept sink`` process around it; :mod:`.replay` re-feeds dead
letters.
"""
