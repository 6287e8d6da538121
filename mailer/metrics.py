"""Prometheus metrics, one registry per running service (so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "mailer_deliveries_total",
            "Deliveries that reached an outcome (sent, retrying, failed, suppressed).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.parked = Counter(
            "mailer_jobs_parked_total",
            "Jobs parked in mailer.dead, by the queue they came from.",
            ["queue"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "mailer_jobs_duplicate_total",
            "Jobs received again after they had reached their outcome; not sent again.",
            ["kind"],
            registry=self.registry,
        )
        self.smtp_seconds = Histogram(
            "mailer_smtp_transaction_seconds",
            "Time of one SMTP transaction (MAIL, RCPT, DATA) on a pooled connection.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.inflight = Gauge(
            "mailer_jobs_in_flight",
            "Jobs being handled right now, by queue.",
            ["queue"],
            registry=self.registry,
        )
        # Bounces and complaints (labels: a handful of fixed values each).
        self.bounce_reports = Counter(
            "mailer_bounce_reports_total",
            "Bounce reports classified, by kind (hard, soft, policy, complaint, ignored,"
            " unparseable; mismatched: about another delivery or recipient).",
            ["kind"],
            registry=self.registry,
        )
        self.complaints = Counter(
            "mailer_complaints_total",
            "Spam or fraud complaints applied (the person unsubscribed from every list).",
            registry=self.registry,
        )
        self.bounce_refused = Counter(
            "mailer_bounce_reports_refused_total",
            "Reports refused by the bounce receiver before their data, by reason (malformed,"
            " forged, expired, relay, rate).",
            ["reason"],
            registry=self.registry,
        )
        self.bounce_alerts = Counter(
            "mailer_bounce_alerts_total",
            "Alerts raised: policy bounces, an issue's complaint rate over the limit.",
            ["alert"],
            registry=self.registry,
        )
