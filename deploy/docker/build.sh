#!/bin/sh
# Builds distsupd, distsupctl and the placement strategies with Bazel and gathers them:
#   OUT/bin/distsupd  OUT/bin/distsupctl  OUT/lib/distsup/strategies/*.so
# Run from the repo root.  The Dockerfile's build stage runs it; tests/container runs
# the same RUN line on the host.
#   DISTSUP_BAZEL_STARTUP   extra Bazel startup options (e.g. --output_user_root=DIR)
#   DISTSUP_BAZEL_FLAGS     extra build options (the Dockerfile: --spawn_strategy=local,
#                           since a container build has no namespaces for the sandbox)
set -eu
out=${1:?usage: deploy/docker/build.sh OUTDIR}
startup=${DISTSUP_BAZEL_STARTUP:-}
flags=${DISTSUP_BAZEL_FLAGS:-}

# The strategies that exist: every shared object under //strategies.
strategies=""
if [ -f strategies/BUILD ]; then
  # shellcheck disable=SC2086
  strategies=$(bazel $startup query --noshow_progress 'kind("cc_binary", //strategies/...)' \
               2>/dev/null | grep '\.so$' || true)
fi
# shellcheck disable=SC2086
bazel $startup build $flags //sidecar:distsupd //clients/c:distsupctl $strategies
# shellcheck disable=SC2086
bin=$(bazel $startup info $flags bazel-bin 2>/dev/null)

mkdir -p "$out/bin" "$out/lib/distsup/strategies"
install -m 0755 "$bin/sidecar/distsupd" "$bin/clients/c/distsupctl" "$out/bin/"
for t in $strategies; do
  rel=$(echo "${t#//}" | tr ':' '/')
  install -m 0644 "$bin/$rel" "$out/lib/distsup/strategies/"
done
strip --strip-unneeded "$out/bin/distsupd" "$out/bin/distsupctl"
echo "build.sh: $(ls "$out/bin" | tr '\n' ' ')and $(ls "$out/lib/distsup/strategies" | wc -l) strategies in $out"
