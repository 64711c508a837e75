# syntax=docker/dockerfile:1
# vidserve's production image: the server on ONNX Runtime (CUDA) or TorchScript, as a non-root
# user, weights and exported engines in a cache volume (docker-compose.yml mounts it).
#
#   docker build -t vidserve:0.1.0 .
#   docker build -t vidserve:0.1.0-offline --build-arg BAKE_WEIGHTS="rife-4.0" .
#   docker run --gpus all -p 8000:8000 -v vidserve-cache:/var/cache/vidserve vidserve:0.1.0
#
# The version set, and why it is consistent:
# - torch 2.13.0 from PyPI is a CUDA 13.0 build. Its wheel depends on NVIDIA's pip packages,
#   pinned exactly: cuda-toolkit 13.0.3 (cudart, cuBLAS 13.1, cuFFT, cuRAND, NVRTC, ...) and
#   cuDNN 9.20.0.48 (nvidia-cudnn-cu13). libtorch_cuda.so finds them through its RPATH.
# - onnxruntime-gpu 1.31.1 is a CUDA 13.0 / cuDNN 9 build (its build_and_package_info says
#   cuda_version 13.0; on a host without them it asks for "cuDNN 9.* and CUDA 13.*"). Its CUDA
#   provider links libcudart.so.13, libcublas(Lt).so.13 and libcurand.so.10: the same
#   sonames as torch's, so one copy of each library serves both. Checked without a GPU
#   (ldd -r): with only those pip libraries on the search path, every symbol of
#   libonnxruntime_providers_cuda.so resolves except cuTensorMapEncodeTiled, the driver's
#   (libcuda.so.1, mounted by the NVIDIA Container Toolkit), and Provider_GetHost, which
#   onnxruntime itself provides when it loads the provider.
# - ONNX Runtime documents this arrangement ("Compatibility with PyTorch"): the CUDA and
#   cuDNN that torch's wheels ship serve ORT too, cuDNN 9 from PyTorch 2.4 on.
# - CUDA 13 needs an NVIDIA driver r580 or newer on the host. The base image declares
#   NVIDIA_REQUIRE_CUDA=cuda>=13.0, so an older driver is refused when the container starts,
#   with a message that says so, instead of failing later inside ONNX Runtime.
# A host whose driver is older than r580 needs the CUDA 12 set instead: onnxruntime-gpu
# 1.26.0 (PyPI's builds are CUDA 12.2-12.8 up to 1.26.0 and CUDA 13.0 from 1.27.0, per each
# wheel's build_and_package_info), torch from PyTorch's cu128 index, an nvidia/cuda 12.8 base.

# Base: the official CUDA image, "base" flavour: libcudart plus the NVIDIA container
# environment (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES, NVIDIA_REQUIRE_CUDA). The
# "runtime" / "cudnn-runtime" flavours add cuBLAS, cuFFT, cuDNN, NCCL, ... as system
# libraries: about 3 GB that torch's pinned pip packages already bring, and that torch's
# RPATH bypasses, so they would only be a second, unused copy. 13.0.2 matches torch's CUDA
# 13.0 line; Ubuntu 24.04 (glibc 2.39) satisfies onnxruntime-gpu's manylinux_2_28 wheel and
# ships Python 3.12 (the project needs >= 3.11). Pin the digest as well where builds must be
# bit-for-bit reproducible: docker buildx imagetools inspect nvidia/cuda:13.0.2-base-ubuntu24.04
FROM nvidia/cuda:13.0.2-base-ubuntu24.04 AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu's own python3.12 (security updates through apt) rather than a second interpreter.
# tini is PID 1: it forwards SIGTERM to the server and reaps any child process.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 tini \
    && rm -rf /var/lib/apt/lists/*
# DL3008 (pin apt versions) is ignored on purpose: Ubuntu's archive keeps only the current
# version of a package, so a pinned python3.12=3.12.3-1ubuntu0.x stops building at the next
# security update. The base image's tag pins the release (24.04) and with it Python 3.12.

# Build: a virtual environment with the pinned dependencies and vidserve's own wheel.
FROM base AS builder
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Third-party dependencies first, so editing vidserve's code does not re-download 4 GB.
# torch and onnxruntime-gpu are pinned for the CUDA reasons above; the rest are the versions
# the test suite runs with (pyproject.toml declares only floors). pip check, below, fails
# the build if pyproject.toml gains a requirement these pins do not satisfy.
RUN pip install --no-cache-dir \
        torch==2.13.0 \
        onnxruntime-gpu==1.31.1 \
        onnx==1.23.2 \
        numpy==2.4.6 \
        pydantic==2.14.3 \
        pydantic-settings==2.16.3 \
        fastapi==0.165.0 \
        uvicorn==0.54.0 \
        python-multipart==0.0.34 \
        pillow==13.0.0 \
        tqdm==4.70.1 \
        httpx==0.28.1 \
        prometheus-client==0.26.0 \
        websockets==17.4 \
        pycocotools==2.0.11 \
        av==18.1.0 \
        safetensors==0.8.0
# Optional TensorRT for ONNX Runtime's TensorRT provider (the server tries it first on a GPU):
# --build-arg WITH_TENSORRT=1, then run with VIDSERVE_PROVIDERS
# '["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]'.
# onnxruntime-gpu 1.31.1's provider links libnvinfer.so.10 and libnvonnxparser.so.10, so it
# must be a TensorRT 10 release built for CUDA 13 (not 11.x). 10.16.1.11 is the last 10.x;
# TensorRT's API and ABI follow semantic versioning (NVIDIA's support policy), so a later
# 10.x serves a provider built against an earlier one. The wheels live on NVIDIA's index
# (PyPI holds only a stub that downloads from it). Off by default: it adds about 2 GB, and
# the CUDA provider alone serves every model.
ARG WITH_TENSORRT=0
RUN if [ "${WITH_TENSORRT}" = 1 ]; then \
        pip install --no-cache-dir --extra-index-url https://pypi.nvidia.com tensorrt-cu13-libs==10.16.1.11; \
    fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY server ./server
COPY clients ./clients
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && pip install --no-cache-dir --no-deps /tmp/wheels/vidserve-*.whl \
    && pip check
# Weights for offline hosts: --build-arg BAKE_WEIGHTS="rife-4.0 xmem" (space-separated
# registry names) fetches them, verified, into /opt/vidserve/baked/weights, laid out as a
# cache. The entrypoint links them into the cache volume instead of downloading; they are
# not written into the volume itself, so a bind mount or a Kubernetes volume does not hide
# them. Empty by default: the volume is filled on first start.
ARG BAKE_WEIGHTS=""
RUN mkdir -p /opt/vidserve/baked/weights \
    && for model in ${BAKE_WEIGHTS}; do \
        VIDSERVE_CACHE_DIR=/opt/vidserve/baked python -m models fetch --quiet "${model}"; \
    done

# Runtime: the base image, the built environment, an unprivileged user.
FROM base AS runtime
# A fixed uid, so volumes and bind mounts can be chowned to it (chown -R 10001:10001 DIR);
# 1000 is taken by the base image's "ubuntu" user.
RUN groupadd --system --gid 10001 vidserve \
    && useradd --system --uid 10001 --gid vidserve --create-home --home-dir /home/vidserve \
        --shell /usr/sbin/nologin vidserve \
    && install -d -o vidserve -g vidserve -m 0755 /var/cache/vidserve
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/vidserve/baked /opt/vidserve/baked
COPY --chmod=0755 docker/entrypoint.sh /opt/vidserve/entrypoint.sh
# LD_LIBRARY_PATH: ONNX Runtime's providers have no RPATH; pointing the loader at torch's
# pip copies of CUDA 13 / cuDNN 9 (and TensorRT's, when built in) makes ORT load the same
# libraries whether or not torch was imported first. The base image's own entries follow.
# VIDSERVE_CACHE_DIR is the volume's mount point (created above, owned by vidserve, so a
# fresh named volume inherits that owner). VIDSERVE_BAKED_WEIGHTS is read by the entrypoint
# only. VIDSERVE_PROVIDERS leaves TensorRT out because it is not installed by default.
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.12/site-packages/nvidia/cu13/lib:/opt/venv/lib/python3.12/site-packages/nvidia/cudnn/lib:/opt/venv/lib/python3.12/site-packages/tensorrt_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    PYTHONUNBUFFERED=1 \
    VIDSERVE_HOST=0.0.0.0 \
    VIDSERVE_PORT=8000 \
    VIDSERVE_CACHE_DIR=/var/cache/vidserve \
    VIDSERVE_BAKED_WEIGHTS=/opt/vidserve/baked \
    VIDSERVE_PROVIDERS='["CUDAExecutionProvider", "CPUExecutionProvider"]'
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/vidserve
VOLUME ["/var/cache/vidserve"]
EXPOSE 8000
# Liveness only: /healthz answers while engines are still exported and warmed (/readyz says
# when they are ready). The start period covers a first start that downloads weights before
# the server listens. Python, because the image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VIDSERVE_PORT', '8000') + '/healthz', timeout=4)"]
# tini -g: a SIGTERM during the entrypoint's download reaches the whole process group.
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/opt/vidserve/entrypoint.sh"]
CMD []
