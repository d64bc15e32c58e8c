# The gateway as a container: slim Python, non-root, health-checked on /health.
# It installs what deploy/ configures: the postgres extra (deploy/kubernetes/configmap.yaml's
# store is postgresql://) and the fast extra (the ONNX Runtime engine), every package pinned by
# deploy/constraints.txt (`make constraints` regenerates it).
# Mount a directory holding configs/ and models/ at /srv (outcomes go to /srv/var by default).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/router
COPY pyproject.toml README.md deploy/constraints.txt ./
COPY router ./router
RUN pip install --constraint constraints.txt '.[postgres,fast]' \
    && useradd --create-home --uid 10001 router \
    && mkdir -p /srv/var && chown -R router /srv

USER router
WORKDIR /srv
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)" || exit 1

CMD ["router", "serve", "--config", "configs/router.yaml", "--host", "0.0.0.0", "--port", "8000"]
