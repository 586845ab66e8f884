# The fraud-detection worker (and the fraudctl CLI) on Python 3.11.
#   docker build -t fraud-stream .
#   docker run --rm -e KAFKA_BROKER_URL=kafka://broker:9092 \
#       -e REDIS_URL=redis://redis:6379/0 fraud-stream
# docker-compose.yml builds and runs it as the `worker` and `replay` services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The exact versions of requirements.lock (hashes checked), then the project itself (and
# so the `fraudctl` script) without resolving anything again.
WORKDIR /tmp/build
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-deps . && rm -rf /tmp/build

# Run as an unprivileged user; its home holds the model registry and the worker's data.
RUN useradd --create-home --home-dir /srv/fraud --uid 10001 --shell /usr/sbin/nologin fraud
WORKDIR /srv/fraud
COPY --chown=fraud:fraud models ./models
RUN install -d -o fraud -g fraud /srv/fraud/.run /srv/fraud/data
ENV MODELS_DIR=/srv/fraud/models \
    DATA_DIR=/srv/fraud/.run/worker \
    RUN_DIR=/srv/fraud/.run \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=6066
USER fraud

# GET /metrics (Prometheus) on the worker's web port.
EXPOSE 6066
CMD ["python", "-m", "app", "worker", "-l", "info"]
