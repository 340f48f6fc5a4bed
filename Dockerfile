# The CarePath worker (and the CLI and codec server: same image, another command).
# docker compose builds it; alone: docker build -t carepath-worker:0.1.0 .
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A user of its own: nothing in the container runs as root.
RUN groupadd --system --gid 10001 carepath \
    && useradd --system --uid 10001 --gid carepath --home-dir /app --shell /usr/sbin/nologin carepath \
    && install -d -o carepath -g carepath /var/lib/carepath

WORKDIR /app
COPY pyproject.toml README.md ./
COPY clinical/ clinical/
COPY workflows/ workflows/
COPY activities/ activities/
COPY infra/ infra/
COPY services/ services/
COPY simulation/ simulation/
COPY demo/ demo/
COPY operators/ operators/
COPY programs/ programs/
COPY cli/ cli/
COPY web/ web/
COPY worker.py starter.py ./
# Installed in place (editable), so the programs/ beside the code are the ones read. The
# worker writes the workflow modules' bytecode under its data directory (infra/sandbox.py).
RUN pip install -e '.[otel]'

USER carepath
ENV CAREPATH_DATA_DIR=/var/lib/carepath \
    CAREPATH_LOG_FORMAT=json

# Healthy once the worker has connected and polls (needs CAREPATH_METRICS_ADDRESS).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "infra.healthcheck"]

CMD ["python", "worker.py"]
