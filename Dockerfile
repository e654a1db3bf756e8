# imgcls images, one multi-stage file on one Python base; build a target with --target:
#
#   serve      CPU serving: imgcls[serve,gcs] (+ openvino when that extra exists) on the CPU onnxruntime wheel, no torch
#   serve-gpu  GPU serving: onnxruntime-gpu[cuda,cudnn], no torch; refuses to start unless the CUDA provider loads
#   train      training: imgcls[train,gcs,monitor] with torch's CUDA build (CUDA libraries come as pip wheels)
#
#   docker build --target serve -t imgcls-serve .
#   docker run -p 8080:8080 -v $PWD/runs/digits:/models/digits:ro imgcls-serve --model /models/digits
#   docker run -e PORT=9000 ... imgcls-serve --model gs://bucket/models/digits@production --watch 30
#   docker run --gpus all -p 8080:8080 -v ...:/models/digits:ro imgcls-serve-gpu --model /models/digits
#   docker run --gpus all -v $PWD/runs:/home/imgcls/runs imgcls-train train --config configs/digits.yaml --gpu
#
# CUDA without a CUDA base image: the GPU images carry the CUDA runtime, cuBLAS, cuFFT, cuRAND, NVRTC and cuDNN as
# NVIDIA's own pip wheels, the ones the Python package was built against: `onnxruntime-gpu[cuda,cudnn]` (extras
# since onnxruntime 1.21) pins the CUDA major its wheel was built for, and `onnxruntime.preload_dlls()` (called by
# imgcls before a CUDA session) loads them; torch's CUDA build depends on its own nvidia-* wheels. So the CUDA
# major matches by construction, and every image builds FROM the same PYTHON_BASE. Only the NVIDIA driver
# (libcuda.so.1) comes from the host: `docker run --gpus all` with the NVIDIA Container Toolkit, or a
# nvidia.com/gpu resource on Kubernetes / --gpu on Cloud Run. The driver must support the wheels' CUDA major
# (CUDA 13: driver R580 or newer).
#
# Runtime contract (Cloud Run, Kubernetes): non-root (uid 10001), listens on $PORT (default 8080) on all
# interfaces, HEALTHCHECK on /livez, and on SIGTERM /readyz turns 503 and in-flight requests drain within 8 s
# (--drain-s), inside Cloud Run's 10 s grace.
#
# The base image is a build argument: where no registry is reachable, build a Debian base with debootstrap and
# pass it as PYTHON_BASE (noxfile.py, sessions `image` and `image-gpu`, do exactly that). pip reaches the
# package index through a proxy that needs a CA bundle by giving it as a BuildKit secret, for the build only
# (never in a layer):
#   DOCKER_BUILDKIT=1 docker build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt ...
# hadolint global ignore=DL3008
ARG PYTHON_BASE=python:3.11-slim-bookworm

# --- the imgcls wheel and the requirement lists (pyproject.toml is the one source) ------------------------
# Each image installs its requirements in one layer and the imgcls wheel in the next, so a change to imgcls'
# code rebuilds only the small last layer, not the pip install of torch or CUDA.
FROM ${PYTHON_BASE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY imgcls ./imgcls
COPY scripts/image_requirements.py ./scripts/
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && mkdir /reqs \
    && python3 scripts/image_requirements.py --extras 'serve,gcs,openvino?' --onnxruntime cpu > /reqs/serve.txt \
    && python3 scripts/image_requirements.py --extras serve,gcs --onnxruntime gpu-wheels > /reqs/serve-gpu.txt \
    && python3 scripts/image_requirements.py --extras train,gcs,monitor --onnxruntime gpu > /reqs/train.txt

# --- serve: CPU ----------------------------------------------------------------------------------------------
FROM ${PYTHON_BASE} AS serve
ENV PATH=/opt/venv/bin:$PATH \
    PORT=8080 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IMGCLS_CACHE=/home/imgcls/.cache/imgcls
RUN --mount=type=secret,id=pip_cert --mount=type=bind,from=wheel,source=/reqs,target=/reqs \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin imgcls \
    && python3 -m venv /opt/venv \
    && pip install --no-cache-dir -r /reqs/serve.txt \
    && python3 -c "import importlib.util as u, sys; sys.exit(1 if u.find_spec('torch') else 0)"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels pip install --no-cache-dir --no-deps /wheels/imgcls-*.whl
USER 10001
WORKDIR /home/imgcls
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["python3", "-m", "imgcls.serve.probe"]
# Inside a container the server must listen on all interfaces; outside one imgcls binds 127.0.0.1 by default.
ENTRYPOINT ["imgcls", "serve", "--host", "0.0.0.0"]
CMD ["--help"]

# --- serve-gpu: onnxruntime-gpu with the CUDA + cuDNN wheels it was built for, on the same Python base -------
FROM ${PYTHON_BASE} AS serve-gpu
ENV PATH=/opt/venv/bin:$PATH \
    PORT=8080 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IMGCLS_CACHE=/home/imgcls/.cache/imgcls
RUN --mount=type=secret,id=pip_cert --mount=type=bind,from=wheel,source=/reqs,target=/reqs \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin imgcls \
    && python3 -m venv /opt/venv \
    && pip install --no-cache-dir -r /reqs/serve-gpu.txt \
    && python3 -c "import importlib.util as u, sys; sys.exit(1 if u.find_spec('torch') else 0)" \
    && python3 -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels pip install --no-cache-dir --no-deps /wheels/imgcls-*.whl
USER 10001
WORKDIR /home/imgcls
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=90s --retries=3 CMD ["python3", "-m", "imgcls.serve.probe"]
# --device cuda: start-up fails (exit 2, one line naming the missing CUDA provider/driver, one with the fix)
# unless onnxruntime's CUDA provider really loads; a GPU image never falls back to the CPU silently.
# `imgcls doctor --require ort-cuda` tells why.
ENTRYPOINT ["imgcls", "serve", "--host", "0.0.0.0", "--device", "cuda"]
CMD ["--help"]

# --- train: torch (CUDA build, its CUDA libraries as nvidia-* wheels) for `imgcls train --gpu` jobs ----------
FROM ${PYTHON_BASE} AS train
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WANDB_MODE=offline \
    IMGCLS_CACHE=/home/imgcls/.cache/imgcls
RUN --mount=type=secret,id=pip_cert --mount=type=bind,from=wheel,source=/reqs,target=/reqs \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin imgcls \
    && python3 -m venv /opt/venv \
    && pip install --no-cache-dir -r /reqs/train.txt
# with the run configurations, so `train --config configs/digits.yaml` works as it does in a checkout
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels --mount=type=bind,source=configs,target=/tmp/configs \
    pip install --no-cache-dir --no-deps /wheels/imgcls-*.whl \
    && cp -r /tmp/configs /home/imgcls/configs
USER 10001
WORKDIR /home/imgcls
ENTRYPOINT ["imgcls"]
CMD ["doctor"]
