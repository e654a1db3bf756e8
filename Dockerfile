# imgcls images, one multi-stage file; build a target with --target:
#
#   serve      CPU serving: imgcls[serve,gcs] (+ openvino when that extra exists) on the CPU onnxruntime wheel, no torch
#   serve-gpu  GPU serving: NVIDIA CUDA runtime + cuDNN base, onnxruntime-gpu; refuses to start unless CUDA loads
#   train      training: imgcls[train,gcs,monitor] with torch's CUDA build (CUDA libraries come as pip wheels)
#
#   docker build --target serve -t imgcls-serve .
#   docker run -p 8080:8080 -v $PWD/runs/digits:/models/digits:ro imgcls-serve --model /models/digits
#   docker run -e PORT=9000 ... imgcls-serve --model gs://bucket/models/digits@production --watch 30
#
# Runtime contract (Cloud Run, Kubernetes): non-root (uid 10001), listens on $PORT (default 8080) on all
# interfaces, HEALTHCHECK on /livez, and on SIGTERM /readyz turns 503 and in-flight requests drain within 8 s
# (--drain-s), inside Cloud Run's 10 s grace.
#
# Base images are build arguments: where no registry is reachable, build a Debian base with debootstrap and pass
# it as PYTHON_BASE (noxfile.py, session `image`, does exactly that). pip reaches the package index through a
# proxy that needs a CA bundle by giving it as a BuildKit secret, for the build only (never in a layer):
#   DOCKER_BUILDKIT=1 docker build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt ...
# hadolint global ignore=DL3008
ARG PYTHON_BASE=python:3.11-slim-bookworm
# onnxruntime-gpu 1.2x-1.3x on PyPI is built for CUDA 13 + cuDNN 9: the base must match that CUDA major.
ARG CUDA_BASE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# --- the imgcls wheel and the requirement lists (pyproject.toml is the one source) ------------------------
FROM ${PYTHON_BASE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY imgcls ./imgcls
COPY scripts/image_requirements.py ./scripts/
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python3 scripts/image_requirements.py --extras 'serve,gcs,openvino?' --onnxruntime cpu > /wheels/serve.txt \
    && python3 scripts/image_requirements.py --extras serve,gcs --onnxruntime gpu > /wheels/serve-gpu.txt \
    && python3 scripts/image_requirements.py --extras train,gcs,monitor --onnxruntime gpu > /wheels/train.txt

# --- serve: CPU ----------------------------------------------------------------------------------------------
FROM ${PYTHON_BASE} AS serve
ENV PATH=/opt/venv/bin:$PATH \
    PORT=8080 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IMGCLS_CACHE=/home/imgcls/.cache/imgcls
RUN --mount=type=secret,id=pip_cert --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin imgcls \
    && python3 -m venv /opt/venv \
    && pip install --no-cache-dir -r /wheels/serve.txt \
    && pip install --no-cache-dir --no-deps /wheels/imgcls-*.whl \
    && python3 -c "import importlib.util as u, sys; sys.exit(1 if u.find_spec('torch') else 0)"
USER 10001
WORKDIR /home/imgcls
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["python3", "-m", "imgcls.serve.probe"]
# Inside a container the server must listen on all interfaces; outside one imgcls binds 127.0.0.1 by default.
ENTRYPOINT ["imgcls", "serve", "--host", "0.0.0.0"]
CMD ["--help"]

# --- serve-gpu: onnxruntime-gpu on the CUDA runtime + cuDNN base -------------------------------------------
FROM ${CUDA_BASE} AS serve-gpu
ENV PATH=/opt/venv/bin:$PATH \
    PORT=8080 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IMGCLS_CACHE=/home/imgcls/.cache/imgcls
RUN --mount=type=secret,id=pip_cert --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin imgcls \
    && python3 -m venv /opt/venv \
    && pip install --no-cache-dir -r /wheels/serve-gpu.txt \
    && pip install --no-cache-dir --no-deps /wheels/imgcls-*.whl
USER 10001
WORKDIR /home/imgcls
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=90s --retries=3 CMD ["python3", "-m", "imgcls.serve.probe"]
# --device cuda: start-up fails (exit 2, with the reason) unless onnxruntime's CUDA provider really loads; a GPU
# image never falls back to the CPU silently. `imgcls doctor --require ort-cuda` tells why.
ENTRYPOINT ["imgcls", "serve", "--host", "0.0.0.0", "--device", "cuda"]
CMD ["--help"]

# --- train: torch (CUDA build) for `imgcls train --gpu` jobs (Vertex AI, Kubernetes) -----------------------
FROM ${PYTHON_BASE} AS train
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WANDB_MODE=offline \
    IMGCLS_CACHE=/home/imgcls/.cache/imgcls
RUN --mount=type=secret,id=pip_cert --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin imgcls \
    && python3 -m venv /opt/venv \
    && pip install --no-cache-dir -r /wheels/train.txt \
    && pip install --no-cache-dir --no-deps /wheels/imgcls-*.whl
USER 10001
WORKDIR /home/imgcls
ENTRYPOINT ["imgcls"]
CMD ["doctor"]
