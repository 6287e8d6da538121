# mailer: the worker and the HTTP service. Configuration comes from the environment
# (MAILER_*) or a mounted file (MAILER_CONFIG); secrets from *_FILE settings or variables.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY mailer ./mailer
RUN python -m venv /opt/mailer \
 && /opt/mailer/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt .

FROM python:3.11-slim
# The tag follows 3.11's latest patch release; say so if it is one with CVE-2024-6923 (fixed
# in 3.11.10), whose email folding mailer does not use: it writes every header itself.
RUN python -c 'import sys; sys.exit(sys.version_info[:3] >= (3, 11, 10))' \
 && echo "python $(python -V) has known header-injection bugs in its email package (CVE-2024-6923); mailer encodes headers itself and is not affected" \
 || true
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin mailer
COPY --from=build /opt/mailer /opt/mailer
WORKDIR /app
COPY --chown=root:root templates ./templates
COPY --chown=root:root config ./config
ENV PATH=/opt/mailer/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MAILER_HTTP_HOST=0.0.0.0
USER mailer
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)" || exit 1
# MAILER_SMTP_URL is required: with no relay, `mailer run` refuses to start (the embedded
# capture server is for development and must be asked for with MAILER_SMTP_CAPTURE=true).
# SIGTERM drains: jobs in hand finish or go back to their queue.
STOPSIGNAL SIGTERM
CMD ["mailer", "run"]
