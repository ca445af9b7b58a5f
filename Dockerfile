# gpu-audit: the collector as the entrypoint (docs/scale.md "Kubernetes"; deploy/helm/gpu-audit runs it
# as a DaemonSet and the daily report as a CronJob with `gpu-audit report` as the command).
# NVML is not in the image: the NVIDIA container runtime mounts the host driver's libnvidia-ml.so.1
# when NVIDIA_VISIBLE_DEVICES is set (the "utility" capability is enough for NVML).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=utility
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gpu_audit ./gpu_audit
RUN pip install . && rm -rf /src && useradd --uid 10001 --create-home --shell /usr/sbin/nologin gpuaudit
WORKDIR /home/gpuaudit
# Non-root: every NVML query the collector makes works as any user; process owners of other users
# need root (the chart's collector.runAsUser: 0) to read their /proc entries.
USER 10001
ENTRYPOINT ["gpu-audit", "collect"]
CMD ["--interval", "1s", "--out", "/var/lib/gpu-audit/store"]
