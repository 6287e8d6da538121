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

ISSUE = ("issue", "list")  # the labels of an issue's gauges


class Metrics:
    """Labels are queues, lists, issue ids, outcomes, classes and kinds: a handful of fixed
    values each, never an address. Gauges marked "sampled" are measured every few seconds
    by mailer/sampling.py. What operators alert on: deploy/prometheus/alerts.yml."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._add_jobs()
        self._add_process()
        self._add_queues()
        self._add_health()
        self._add_issues()
        self._add_subscriptions()
        self._add_bounces()
        self._add_events()
        self._add_webhooks()

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry)

    def _add_jobs(self) -> None:
        self.deliveries = self._counter(
            "mailer_deliveries_total",
            "Deliveries that reached an outcome (sent, retrying, failed, suppressed).",
            "kind",
            "outcome",
        )
        self.parked = self._counter(
            "mailer_jobs_parked_total",
            "Jobs this process parked (in the parked_jobs table, or mailer.dead while the"
            " database was away), by the queue they came from.",
            "queue",
        )
        self.duplicates = self._counter(
            "mailer_jobs_duplicate_total",
            "Jobs received again after they had reached their outcome; not sent again.",
            "kind",
        )
        self.smtp_seconds = Histogram(
            "mailer_smtp_transaction_seconds",
            "Time of one SMTP transaction (MAIL, RCPT, DATA) on a pooled connection.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.inflight = self._gauge(
            "mailer_jobs_in_flight", "Jobs being handled right now, by queue.", "queue"
        )

    def _add_process(self) -> None:
        registry = self.registry
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory, fds
        PlatformCollector(registry=registry)
        registry.register(GC_COLLECTOR)
        Info("mailer_build", "The version of mailer running.", registry=registry).info(
            {"version": VERSION, "python": PYTHON}
        )

    def _add_queues(self) -> None:
        self.queue_messages = self._gauge(
            "mailer_queue_messages", "Messages ready in a mailer.* queue (sampled).", "queue"
        )
        self.queue_unacked = self._gauge(
            "mailer_queue_messages_unacked",
            "Messages of a mailer.* queue delivered and not yet acknowledged, held by live"
            " worker processes as they report it (sampled).",
            "queue",
        )
        self.queue_consumers = self._gauge(
            "mailer_queue_consumers",
            "Consumers on a mailer.* queue, from every process (sampled).",
            "queue",
        )
        self.parked_jobs = self._gauge(
            "mailer_parked_jobs",
            "Jobs parked for an operator (the parked_jobs table), by the queue they came from"
            " (unknown: a message that did not say); those still in mailer.dead are not"
            " counted (sampled).",
            "origin",
        )

    def _add_health(self) -> None:
        self.broker_up = self._gauge(
            "mailer_broker_up", "1 when this process is connected to RabbitMQ."
        )
        self.database_up = self._gauge(
            "mailer_database_up", "1 when PostgreSQL answered this process's last check (sampled)."
        )
        self.relay_up = self._gauge(
            "mailer_relay_up",
            "1 unless the relay refused this process's last sessions (as /readyz says).",
        )
        self.relay_failures = self._counter(
            "mailer_relay_failures_total",
            "Sessions the relay refused, by class (connection, timeout, tls, auth, sender, other).",
            "class",
        )
        self.workers = self._gauge(
            "mailer_workers",
            "Worker processes by presence (alive, gone, stopped), from the workers table"
            " (sampled).",
            "presence",
        )
        self.heartbeat = self._gauge(
            "mailer_worker_heartbeat_timestamp_seconds",
            "When this process last heartbeat (renewed its leases and its workers row).",
        )

    def _add_issues(self) -> None:
        self.issue_deliveries = self._gauge(
            "mailer_issue_deliveries",
            "Deliveries of an issue sending or paused, by status (sampled; active issues only).",
            *ISSUE,
            "status",
        )
        self.issue_rate = self._gauge(
            "mailer_issue_send_rate",
            "Messages per second an active issue sent over the last minute (sampled).",
            *ISSUE,
        )
        self.issue_stalled = self._gauge(
            "mailer_issue_stalled",
            "1 when an issue sending has had nothing sent for a minute, or no worker is alive.",
            *ISSUE,
        )
        self.issue_last_send = self._gauge(
            "mailer_issue_last_send_age_seconds",
            "Seconds since an active issue last had a message sent, or since it started.",
            *ISSUE,
        )

    def _add_subscriptions(self) -> None:
        self.unsubscribes = self._counter(
            "mailer_unsubscribes_total",
            "Subscriptions ended, by source (portal, page, one-click, ...).",
            "source",
        )
        self.confirmations = self._counter(
            "mailer_confirmations_total", "Double opt-in subscriptions confirmed by their link."
        )
        self.sampled = self._gauge(
            "mailer_metrics_sampled_timestamp_seconds",
            "When the sampled gauges were last measured, by part (database, queues, parked,"
            " workers, events, issues).",
            "part",
        )

    def _add_bounces(self) -> None:
        """Bounces and complaints (mailer/worker/bounces.py)."""
        self.bounce_reports = self._counter(
            "mailer_bounce_reports_total",
            "Bounce reports classified, by kind (hard, soft, policy, complaint, ignored,"
            " unparseable; mismatched: about another delivery or recipient).",
            "kind",
        )
        self.complaints = self._counter(
            "mailer_complaints_total",
            "Spam or fraud complaints applied (the person unsubscribed from every list).",
        )
        self.bounce_refused = self._counter(
            "mailer_bounce_reports_refused_total",
            "Reports refused by the bounce receiver, by reason (malformed, forged, expired,"
            " relay, rate; unmatched: a feedback report returning no message of ours).",
            "reason",
        )
        self.bounce_alerts = self._counter(
            "mailer_bounce_alerts_total",
            "Alerts raised: policy bounces, an issue's complaint rate over the limit.",
            "alert",
        )

    def _add_webhooks(self) -> None:
        """Webhook endpoints (mailer/worker/webhooks.py; the gauge sampled)."""
        self.webhook_batches = self._counter(
            "mailer_webhook_batches_total",
            "Webhook batches this process sent, by result (delivered: a 2xx; gone: a 410,"
            " which disables the endpoint; failed: anything else, tried again later).",
            "result",
        )
        self.webhook_events = self._counter(
            "mailer_webhook_events_delivered_total",
            "Events delivered to webhook endpoints by this process (a 2xx took them).",
        )
        self.webhook_seconds = Histogram(
            "mailer_webhook_request_seconds",
            "Time of one webhook request, connecting included, whatever its answer.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
            registry=self.registry,
        )
        self.webhook_endpoints = self._gauge(
            "mailer_webhook_endpoints",
            "Webhook endpoints by state (sampled): active, failing (retrying after a"
            " failure), disabled_gone (answered 410), disabled_failing (failed for"
            " [webhooks] disable_after), disabled_operator.",
            "state",
        )

    def _add_events(self) -> None:
        """Events back to the portal (mailer/parts/events.py, docs/events.md)."""
        self.events_published = self._counter(
            "mailer_events_published_total",
            "Events this process published on mailer.events and the broker confirmed (a"
            " repeat after a takeover counts again).",
        )
        self.events_delay = Histogram(
            "mailer_events_publish_delay_seconds",
            "From an event's change (its commit) to the broker's confirm of it.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=self.registry,
        )
        self.events_leader = self._gauge(
            "mailer_events_relay_leader", "1 in the worker process that relays the outbox now."
        )
        self.events_backlog = self._gauge(
            "mailer_events_backlog", "Events written and not yet published (sampled)."
        )
        self.events_oldest = self._gauge(
            "mailer_events_oldest_unpublished_age_seconds",
            "Seconds since the oldest event not yet published happened; 0 with none (sampled).",
        )
