# The neurolab dashboard on the embedded model, as `make run` starts it locally.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/home/neurolab/.cache/huggingface

# The same runtime pins as local installs (the test tools of requirements-dev.txt stay out of the image). PyPI's
# Linux torch wheel carries CUDA; to build a CPU-only image pass
# --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX=""
# Debian's chromium: kaleido renders the PNG/SVG/PDF figure exports with it (neurolab/export/render.py finds it at
# /usr/bin/chromium; kaleido never downloads a browser). Without it HTML, CSV and Parquet still export.
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 neurolab
WORKDIR /app
COPY requirements.txt .
RUN if [ -n "$TORCH_INDEX" ]; then pip install --index-url "$TORCH_INDEX" torch==2.13.0; fi \
    && pip install -r requirements.txt

COPY --chown=neurolab:neurolab . .
# neurolab itself (the `neurolab` CLI; the app imports the same code from /app), without dependency resolution.
RUN pip install --no-deps . && rm -rf build neurolab.egg-info
USER neurolab

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health').status != 200)"

# python app.py: the model loaded before the server answers, then `streamlit run app.py` in the same process
CMD ["python", "app.py", "--server.address", "0.0.0.0", "--server.port", "8501"]
