# syntax=docker/dockerfile:1
# syncd container image.
#   docker build -t syncd .
#   docker run --init --stop-timeout 35 \
#     -v "$PWD/syncd.yaml:/etc/syncd/syncd.yaml:ro" -v syncd-state:/var/lib/syncd syncd
# Stage 1 builds wheels of syncd and every dependency; stage 2 installs only those wheels
# (no compiler, no network) into a slim image that runs as an unprivileged user.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY syncd ./syncd
RUN pip wheel --wheel-dir /wheels .


FROM python:3.11-slim
LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Keep MongoDB databases in step under a declarative YAML policy" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SYNCD_CONFIG=/etc/syncd/syncd.yaml \
    SYNCD_HEALTH_URL=http://127.0.0.1:9647/healthz

# A fixed uid/gid (10001) so bind-mounted state and secret files can be chowned to it.
RUN groupadd --system --gid 10001 syncd \
    && useradd --system --uid 10001 --gid syncd --home-dir /var/lib/syncd --no-create-home \
       --shell /usr/sbin/nologin syncd \
    && install -d -m 0755 /etc/syncd \
    && install -d -m 0700 -o syncd -g syncd /var/lib/syncd

# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/syncd-*.whl

COPY docker/healthcheck.py /usr/local/lib/syncd/healthcheck.py

# /etc/syncd: syncd.yaml (read-only is fine). /var/lib/syncd: baselines, leases, backups.
VOLUME ["/etc/syncd", "/var/lib/syncd"]
WORKDIR /var/lib/syncd
EXPOSE 9647
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001

# /healthz on metrics.listen; set SYNCD_HEALTH_URL if your config listens elsewhere.
# Inside a container metrics.listen must be 0.0.0.0:9647 for Prometheus to reach it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/lib/syncd/healthcheck.py"]

# SIGTERM gives syncd up to 30 s to finish its batch: stop with `docker stop -t 35` (compose:
# stop_grace_period). Run with --init (compose: init: true) so uri_command's children are reaped.
ENTRYPOINT ["syncd"]
CMD ["run"]
