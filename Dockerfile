# A serving image: imgcls[serve,gcs] on onnxruntime — no torch (~10x smaller than a training image).
#   docker build -t imgcls-serve .
#   docker run -p 8000:8000 -v $PWD/runs/digits:/models/digits:ro imgcls-serve --model /models/digits
#   docker run -p 8000:8000 -e GOOGLE_APPLICATION_CREDENTIALS=... imgcls-serve \
#       --model gs://bucket/models/digits@production --watch 30
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY imgcls ./imgcls
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[serve,gcs]'

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 imgcls
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER imgcls
ENV IMGCLS_CACHE=/home/imgcls/.cache/imgcls PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2)" || exit 1
# Inside a container the server must listen on all interfaces; outside one imgcls binds 127.0.0.1 by default.
ENTRYPOINT ["imgcls", "serve", "--host", "0.0.0.0", "--port", "8000"]
