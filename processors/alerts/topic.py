"""The alert topic's one reader, which every consumer of it uses.

Writers (the worker) publish :class:`~ept.processors.alerts.notice.AlertNotice` records;
readers (``ept alerts``, the dashboard, the supervisor, the notifier, the worker's own
reconciliation) go through :func:`read_alerts`, so the topic is decoded in one place. The
record's names are re-exported here for those readers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ept.core.compacted import decoding, read_topic
from ept.core.settings import Settings
from ept.processors.alerts.notice import (
    FIRING,
    RESOLVED,
    AlertNotice,
    BadAlertRecord,
    told_first,
)

__all__ = ["FIRING", "RESOLVED", "AlertNotice", "BadAlertRecord", "OnAlert", "read_alerts",
           "told_first"]

OnAlert = Callable[[AlertNotice], None]


def read_alerts(settings: Settings, on_alert: OnAlert, stop: threading.Event | None = None,
                *, from_beginning: bool = True, until_end: bool = False,
                timeout_s: float = 30.0) -> None:
    """Call ``on_alert`` with each notice of the alert topic, in each partition's order.

    Reads from each partition's log start (``from_beginning``; never offset 0, which
    retention may have deleted) or from its end. With ``until_end`` it returns once the
    end offsets seen at the start are reached (raises TimeoutError after ``timeout_s``);
    otherwise it follows the topic until ``stop`` is set. Blocks on the broker. Messages
    that are not alert notices are logged and skipped. A topic that does not exist yet is
    empty (see :func:`~ept.core.compacted.read_topic`).
    """
    read_topic(settings, settings.topics.alerts, decoding(AlertNotice, on_alert), stop,
               from_beginning=from_beginning, until_end=until_end, timeout_s=timeout_s)
