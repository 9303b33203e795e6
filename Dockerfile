# distsupd in a container: built with Bazel on Debian 12, shipped on debian:12-slim.
#
#   docker build -t distsup .
#   docker run -d --name distsup -p 127.0.0.1:50051:50051 -v distsup-data:/var/lib/distsup distsup
#   docker exec distsup distsupctl ls
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
      libsqlite3-dev libsodium-dev libinih-dev \
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
      libgrpc29 libprotobuf-c1 libsqlite3-0 libsodium23 libinih1 \
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
# 50051: the gRPC API (distsup.v1.Supervisor, grpc.health.v1, reflection); 50052: peer links
EXPOSE 50051 50052
ENV DISTSUP_ADDR=127.0.0.1:50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["distsupctl", "--deadline-ms", "3000", "health"]
ENTRYPOINT ["distsupd", "--strategy-dir", "/usr/lib/distsup/strategies", "--data-dir", "/var/lib/distsup"]
CMD ["--listen", "0.0.0.0:50051"]
