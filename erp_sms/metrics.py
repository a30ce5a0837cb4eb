"""``GET /metrics`` of ``erp-sms serve``: the Prometheus text format (the maintained
``prometheus-client``), read from the database at each scrape — no sign-in and no
personal data: counts, ages and sums only. Each read is bounded by an index: the last
24 hours of texts (``created_at``), the queued ones due (``status, next_attempt_at``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from . import health
from .db import Database, utcnow
from .models import Message, Status

WINDOW = dt.timedelta(hours=24)
CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0]


class _FromTheLog(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Any]:
        now = utcnow()
        by = GaugeMetricFamily(
            "erp_sms_texts_last_24h",
            "Texts created in the last 24 hours, by status and channel",
            labels=["status", "channel"],
        )
        with self.db.read_session() as s:
            rows = s.execute(
                select(Message.status, Message.channel, func.count())
                .where(Message.created_at >= now - WINDOW)
                .group_by(Message.status, Message.channel)
            ).all()
            pulse = health.pulse(s, now)
            held = s.scalar(select(func.count()).where(Message.status == Status.HELD))
        for status, channel, n in rows:
            by.add_metric([status, channel or "none"], n)
        yield by
        age = GaugeMetricFamily(
            "erp_sms_oldest_due_text_age_seconds",
            "How long the oldest text that is due has waited (0: none waits)",
        )
        age.add_metric([], pulse.due_age)
        yield age
        beat = GaugeMetricFamily(
            "erp_sms_worker_heartbeat_age_seconds",
            "Seconds since a dispatch worker last said it was alive (absent: never)",
        )
        if pulse.worker_age is not None:
            beat.add_metric([], pulse.worker_age)
        yield beat
        yield GaugeMetricFamily(
            "erp_sms_workers_alive",
            f"Workers seen in the last {health.GONE_AFTER.total_seconds():.0f} s",
            value=pulse.workers_alive,
        )
        yield GaugeMetricFamily("erp_sms_held_texts", "Texts held for staff", value=held or 0)


def scrape(db: Database) -> bytes:
    """The metrics as Prometheus reads them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FromTheLog(db))
    return generate_latest(registry)
