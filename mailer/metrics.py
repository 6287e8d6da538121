"""Prometheus metrics, one registry per running service (so tests can run several)."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from mailer.build import PYTHON, VERSION


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
            "Jobs this process parked (in the parked_jobs table, or mailer.dead while the"
            " database was away), by the queue they came from.",
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
        self._add_operations()
        self._add_bounces()

    def _add_operations(self) -> None:
        """What operators watch and alert on (deploy/prometheus/alerts.yml). Gauges marked
        "sampled" are measured every few seconds by mailer/sampling.py; labels are queues,
        lists, issue ids, outcomes and failure classes, never an address."""
        registry = self.registry
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory, fds
        PlatformCollector(registry=registry)
        registry.register(GC_COLLECTOR)
        Info("mailer_build", "The version of mailer running.", registry=registry).info(
            {"version": VERSION, "python": PYTHON}
        )
        self.queue_messages = Gauge(
            "mailer_queue_messages",
            "Messages ready in a mailer.* queue (sampled).",
            ["queue"],
            registry=registry,
        )
        self.queue_unacked = Gauge(
            "mailer_queue_messages_unacked",
            "Messages of a mailer.* queue delivered and not yet acknowledged, held by live"
            " worker processes as they report it (sampled).",
            ["queue"],
            registry=registry,
        )
        self.queue_consumers = Gauge(
            "mailer_queue_consumers",
            "Consumers on a mailer.* queue, from every process (sampled).",
            ["queue"],
            registry=registry,
        )
        self.parked_jobs = Gauge(
            "mailer_parked_jobs",
            "Jobs parked for an operator (the parked_jobs table), by the queue they came from"
            " (unknown: a message that did not say); those still in mailer.dead are not"
            " counted (sampled).",
            ["origin"],
            registry=registry,
        )
        self.broker_up = Gauge(
            "mailer_broker_up", "1 when this process is connected to RabbitMQ.", registry=registry
        )
        self.database_up = Gauge(
            "mailer_database_up",
            "1 when PostgreSQL answered this process's last check (sampled).",
            registry=registry,
        )
        self.relay_up = Gauge(
            "mailer_relay_up",
            "1 unless the relay refused this process's last sessions (as /readyz says).",
            registry=registry,
        )
        self.relay_failures = Counter(
            "mailer_relay_failures_total",
            "Sessions the relay refused, by class (connection, timeout, tls, auth, sender, other).",
            ["class"],
            registry=registry,
        )
        self.workers = Gauge(
            "mailer_workers",
            "Worker processes by presence (alive, gone, stopped), from the workers table"
            " (sampled).",
            ["presence"],
            registry=registry,
        )
        self.heartbeat = Gauge(
            "mailer_worker_heartbeat_timestamp_seconds",
            "When this process last heartbeat (renewed its leases and its workers row).",
            registry=registry,
        )
        self.issue_deliveries = Gauge(
            "mailer_issue_deliveries",
            "Deliveries of an issue sending or paused, by status (sampled; active issues only).",
            ["issue", "list", "status"],
            registry=registry,
        )
        self.issue_rate = Gauge(
            "mailer_issue_send_rate",
            "Messages per second an active issue sent over the last minute (sampled).",
            ["issue", "list"],
            registry=registry,
        )
        self.issue_stalled = Gauge(
            "mailer_issue_stalled",
            "1 when an issue sending has had nothing sent for a minute, or no worker is alive.",
            ["issue", "list"],
            registry=registry,
        )
        self.issue_last_send = Gauge(
            "mailer_issue_last_send_age_seconds",
            "Seconds since an active issue last had a message sent, or since it started.",
            ["issue", "list"],
            registry=registry,
        )
        self.unsubscribes = Counter(
            "mailer_unsubscribes_total",
            "Subscriptions ended, by source (portal, page, one-click, ...).",
            ["source"],
            registry=registry,
        )
        self.confirmations = Counter(
            "mailer_confirmations_total",
            "Double opt-in subscriptions confirmed by their link.",
            registry=registry,
        )
        self.sampled = Gauge(
            "mailer_metrics_sampled_timestamp_seconds",
            "When the sampled gauges were last measured, by part (database, queues, parked,"
            " workers, issues).",
            ["part"],
            registry=registry,
        )

    def _add_bounces(self) -> None:
        """Bounces and complaints (mailer/worker/bounces.py); labels are a handful of fixed
        values each."""
        registry = self.registry
        self.bounce_reports = Counter(
            "mailer_bounce_reports_total",
            "Bounce reports classified, by kind (hard, soft, policy, complaint, ignored,"
            " unparseable; mismatched: about another delivery or recipient).",
            ["kind"],
            registry=registry,
        )
        self.complaints = Counter(
            "mailer_complaints_total",
            "Spam or fraud complaints applied (the person unsubscribed from every list).",
            registry=registry,
        )
        self.bounce_refused = Counter(
            "mailer_bounce_reports_refused_total",
            "Reports refused by the bounce receiver, by reason (malformed, forged, expired,"
            " relay, rate; unmatched: a feedback report returning no message of ours).",
            ["reason"],
            registry=registry,
        )
        self.bounce_alerts = Counter(
            "mailer_bounce_alerts_total",
            "Alerts raised: policy bounces, an issue's complaint rate over the limit.",
            ["alert"],
            registry=registry,
        )
