# PLACEHOLDER: not the production image yet. Issue 6 makes it real (CUDA base image,
# matching onnxruntime-gpu, non-root user, HEALTHCHECK, weights volume, engine cache).
# Until then this builds a CPU image that runs the offline CLI on the demo frames.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY server ./server
COPY clients ./clients
COPY docs/demo ./docs/demo
RUN pip install --no-cache-dir "torch==2.13.0" && pip install --no-cache-dir .
CMD ["python", "-m", "models", "interpolate", "docs/demo/frame0.png", "docs/demo/frame1.png", "--factor", "2", "--out", "/tmp/out"]
