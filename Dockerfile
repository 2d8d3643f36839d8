# The paper profile on a CUDA GPU (docs/cloud.md). PyPI's torch 2.9.1 is a CUDA 12.8 build, hence
# this runtime image, pinned by digest (linux/amd64). Two stages: the build stage holds pip, git
# and uv; the final image gets only the interpreter, the two environments and the workflow, and
# runs as a non-root user.
#
#   docker build -t eisbach:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --gpus all -e HF_TOKEN -v "$PWD/site.yaml:/app/site.yaml:ro" \
#     -v "$PWD/results:/app/results" -v "$PWD/.snakemake:/app/.snakemake" -v eisbach-hf:/data/hf \
#     eisbach:0.1.0
# REVISION is required: the image has no .git, and every artefact records this commit.

# --- build: Python 3.11, .venv (envs/requirements.lock) and .venv-musicnn (envs/musicnn.lock) ---
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04@sha256:fcbbd60a5ad3db3a1c7375bf14546b369b54064c513224310b2026df50c7a9bd AS build

ARG PYTHON_VERSION=3.11.18
ENV DEBIAN_FRONTEND=noninteractive \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

# Ubuntu's own Python 3.10 and pip only bootstrap uv; they stay in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git python3-pip \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY envs/ envs/

# uv itself, hash-checked: its entry of the lock (the version and sha256 hashes that setup and
# CI use), cut out and installed with --require-hashes.
RUN awk '/^uv==/{p=1; print; next} p && /^[^ #]/{exit} p' envs/requirements.lock > /tmp/uv.txt \
    && python3 -m pip install --no-cache-dir --require-hashes --no-deps -r /tmp/uv.txt

# uv's standalone CPython 3.11 (uv checks the download against the sha256 it ships with), then
# the two locked environments. Bytecode is compiled here, once: each of the paper DAG's ~416
# jobs is a new interpreter that imports torch and stable-audio-tools, and the final image's
# files are read-only to its user.
RUN uv python install "$PYTHON_VERSION" \
    && uv venv --python "$PYTHON_VERSION" /app/.venv \
    && uv pip sync --python /app/.venv/bin/python --require-hashes envs/requirements.lock \
    && uv venv --python "$PYTHON_VERSION" /app/.venv-musicnn \
    && uv pip sync --python /app/.venv-musicnn/bin/python --require-hashes envs/musicnn.lock

# stable_audio_3 at its pinned commit (envs/stable-audio-3.txt, which the host route's
# scripts/setup_sa3.sh installs too), without its declared dependencies (they conflict with
# this stack: envs/stable-audio-3.txt), then this package.
COPY pyproject.toml ./
COPY eisbach/ eisbach/
RUN uv pip install --python /app/.venv/bin/python --no-deps -r envs/stable-audio-3.txt \
    && uv pip install --python /app/.venv/bin/python --no-deps --no-build-isolation -e . \
    && /app/.venv/bin/python -c "import eisbach, stable_audio_3, stable_audio_tools, torch" \
    && /app/.venv-musicnn/bin/python -c "import musicnn, tensorflow"

# --- the image ------------------------------------------------------------------------------
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04@sha256:fcbbd60a5ad3db3a1c7375bf14546b369b54064c513224310b2026df50c7a9bd

ARG VERSION=0.1.0
ARG REVISION
# The commit this image is built from: checked to be one (40 hex digits) and kept as
# EISBACH_GIT_COMMIT, which eisbach.provenance records where there is no .git to ask.
RUN case "$REVISION" in ""|*[!0-9a-f]*) false ;; esac && [ "${#REVISION}" -eq 40 ] \
    || { echo "REVISION must be the full commit of the source (--build-arg REVISION=...), got '$REVISION'" >&2; exit 1; }
LABEL org.opencontainers.image.title="eisbach" \
      org.opencontainers.image.description="Snakemake pipeline re-running arXiv 2606.07207 (Eisbach log-barrier weighting) on Stable Audio 3 Medium" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="nvidia/cuda:12.8.1-runtime-ubuntu22.04"

# ffmpeg: yt-dlp's --download-sections and its format conversions.
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates ffmpeg \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin eisbach \
    && mkdir -p /app/results /app/.snakemake /data/hf \
    && chown 10001:10001 /app /app/results /app/.snakemake /data/hf

# The interpreter at the path the venvs' links name; the code owned by root, so the job user can
# write results and caches but not the environment it runs.
COPY --from=build /opt/python /opt/python
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/.venv-musicnn /app/.venv-musicnn
WORKDIR /app
COPY pyproject.toml Snakefile LICENSE ./
COPY eisbach/ eisbach/
COPY scripts/ scripts/
COPY benchmarks/ benchmarks/
COPY workflow/ workflow/
COPY config/ config/
COPY profiles/ profiles/
COPY envs/ envs/

# HF_HOME: the hub cache (SA3 weights, T5Gemma) on a volume, reused across containers; HF_TOKEN
# is read from the environment at run time (docker run -e HF_TOKEN), never baked in.
ENV PATH=/app/.venv/bin:$PATH \
    EISBACH_GIT_COMMIT=${REVISION} \
    HF_HOME=/data/hf \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Snakemake's state (.snakemake/: job metadata, incomplete markers, locks) must outlive a --rm
# container, or a rerun cannot tell finished work from interrupted work: mount it with the
# results. site.yaml (scripts/make_site.py) is mounted read-only at /app/site.yaml.
VOLUME ["/app/results", "/app/.snakemake", "/data/hf"]
USER 10001:10001

CMD ["snakemake", "--cores", "all", "--configfile", "config/paper.yaml", "site.yaml"]
