# An app container that hosts distsup children: examples/python_counter_host on the
# Python host library (clients/python, distsup.host).  It runs beside a distsupd
# sidecar (deploy/kubernetes/statefulset.yaml) and attaches to it over the Host
# stream: the workers run here, in the app's own image; distsupd's image has no
# worker binaries at all.
#
#   docker build -f deploy/docker/counter-host.Dockerfile -t distsup-counter-host .
#
# It reads DISTSUP_ADDR (the sidecar, 127.0.0.1:50051 in a pod) and DISTSUP_TOKEN or
# DISTSUP_TOKEN_FILE (the API token), and reconnects by itself whenever the sidecar
# restarts.  tests/container checks this file on a host without Docker.
FROM debian:12-slim
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-grpcio python3-protobuf \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10002 app \
 && useradd --system --uid 10002 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY clients/python/distsup/ /opt/distsup/python/distsup/
COPY examples/python_counter_host/counter_host.py /opt/distsup/counter_host.py
ENV PYTHONPATH=/opt/distsup/python DISTSUP_ADDR=127.0.0.1:50051
USER app:app
ENTRYPOINT ["python3", "/opt/distsup/counter_host.py"]
