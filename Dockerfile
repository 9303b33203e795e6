# distsupd in a container: built with Bazel on Debian 12, shipped on debian:12-slim.
#
#   docker build -t distsup .
#   head -c 32 /dev/urandom | base64 > api.token && sudo chown 10001 api.token && chmod 600 api.token
#   docker run -d --name distsup -p 127.0.0.1:50051:50051 -v distsup-data:/var/lib/distsup \
#       -v $PWD/api.token:/run/secrets/distsup-api-token:ro distsup
#   docker exec distsup distsupctl ls
#
# The API listens on the container's interfaces, so it needs a token: the file
# /run/secrets/distsup-api-token (mode 0600, owned by uid 10001; distsupd refuses to
# start without it).  Clients send it as "authorization: Bearer TOKEN"; distsupctl in
# the image finds it through DISTSUP_TOKEN_FILE.  grpc.health.v1 alone is served
# without a token on 8081 (--health-listen), where the HEALTHCHECK asks.
#
# Cluster mode adds --peer-listen 0.0.0.0:50052, --seeds, --key-file and --trust-file
# (see deploy/kubernetes/).  tests/container checks this file on a host without Docker.

# ---- build stage: the packages tools/setup.sh installs for building ----------------
FROM debian:12 AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      bazel-bootstrap pkg-config gcc g++ \
      libgrpc-dev protobuf-compiler-grpc protobuf-compiler \
      protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev grpc-proto \
      libsqlite3-dev libsodium-dev libinih-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# No user namespaces inside a container build: Bazel's sandbox cannot run there.
ENV DISTSUP_BAZEL_FLAGS=--spawn_strategy=local
RUN deploy/docker/build.sh /out

# ---- runtime stage: only the shared libraries distsupd and distsupctl load ----------
FROM debian:12-slim
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgrpc29 libprotobuf-c1 libsqlite3-0 libsodium23 libinih1 libmicrohttpd12 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 distsup \
 && useradd --system --uid 10001 --gid distsup --home-dir /var/lib/distsup \
      --no-create-home --shell /usr/sbin/nologin distsup \
 && install -d -o distsup -g distsup -m 0750 /var/lib/distsup \
 && install -d -m 0755 /etc/distsup
COPY --from=build /out/bin/distsupd /out/bin/distsupctl /usr/local/bin/
COPY --from=build /out/lib/distsup/strategies/ /usr/lib/distsup/strategies/
USER distsup:distsup
WORKDIR /var/lib/distsup
VOLUME ["/var/lib/distsup"]
# 50051: the gRPC API (distsup.v1.Supervisor, grpc.health.v1, reflection; token
# required); 50052: peer links; 8081: grpc.health.v1 only, no token (probes);
# 9464: Prometheus metrics (GET /metrics, with --metrics-listen 0.0.0.0:9464)
EXPOSE 50051 50052 8081 9464
ENV DISTSUP_ADDR=127.0.0.1:50051 DISTSUP_TOKEN_FILE=/run/secrets/distsup-api-token
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["distsupctl", "--addr", "127.0.0.1:8081", "--deadline-ms", "3000", "health"]
ENTRYPOINT ["distsupd", "--strategy-dir", "/usr/lib/distsup/strategies", "--data-dir", "/var/lib/distsup"]
CMD ["--listen", "0.0.0.0:50051", "--api-token-file", "/run/secrets/distsup-api-token", "--health-listen", "0.0.0.0:8081"]
