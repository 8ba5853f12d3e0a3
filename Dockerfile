# The worker image: scribe-worker (default), scribe-submit, scribe-dlq and scribe-sandbox.
# Dependencies come from the hash-pinned runtime lock (requirements.lock: the worker and the
# offline `local` providers, no test or lint tools; `make lock` writes it beside the dev lock);
# the project itself is installed without them. Compose v2 (`docker compose`) runs the stack.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY pyproject.toml README.md ./
COPY worker ./worker
COPY schemas ./schemas
COPY ops ./ops
RUN pip install --no-deps . \
    && groupadd --gid 10001 scribe \
    && useradd --no-log-init --create-home --uid 10001 --gid 10001 scribe

# Numeric, so that a runtime (Kubernetes runAsNonRoot) can tell it is not root without the
# image's /etc/passwd.
USER 10001:10001
ENV SCRIBE_HTTP_PORT=8080
ENV SCRIBE_HTTP_HOST=0.0.0.0
EXPOSE 8080

# Liveness of the worker's HTTP endpoint (slim images have no curl).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SCRIBE_HTTP_PORT', '8080'), timeout=3)"]

# SIGTERM: stop consuming, finish in-flight work within SCRIBE_SHUTDOWN_GRACE_S, requeue the rest.
STOPSIGNAL SIGTERM
CMD ["scribe-worker"]
