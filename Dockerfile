# The paper profile on a CUDA GPU. PyPI's torch 2.9.1 is a CUDA 12.8 build, hence this runtime.
# Installs from the same hashed lock as `make setup` and CI. Runs as a non-root user.
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04@sha256:fcbbd60a5ad3db3a1c7375bf14546b369b54064c513224310b2026df50c7a9bd

ARG SA3_COMMIT=636f906fc0ee54b3f06edf974dc7d3aa99d6841b
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHON=python3.11

# Ubuntu 22.04 has no Python 3.11 in its main archive: take it from the deadsnakes PPA.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git gnupg software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ffmpeg make \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin eisbach
WORKDIR /app
RUN chown eisbach:eisbach /app
USER 10001:10001

COPY --chown=eisbach:eisbach envs/ envs/
COPY --chown=eisbach:eisbach pyproject.toml Makefile ./
COPY --chown=eisbach:eisbach scripts/ scripts/
COPY --chown=eisbach:eisbach eisbach/ eisbach/
RUN bash scripts/setup_env.sh \
    && .venv/bin/uv pip install --python .venv/bin/python --no-deps \
       "stable-audio-3 @ git+https://github.com/Stability-AI/stable-audio-3@${SA3_COMMIT}" \
    && rm -rf /home/eisbach/.cache

COPY --chown=eisbach:eisbach Snakefile ./
COPY --chown=eisbach:eisbach workflow/ workflow/
COPY --chown=eisbach:eisbach config/ config/

ENV PATH=/app/.venv/bin:$PATH
CMD ["snakemake", "--cores", "all", "--configfile", "config/paper.yaml"]
