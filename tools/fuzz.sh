#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz/ (outside Bazel, with clang) and runs
# each for a while on a copy of its committed seed corpus (docs/security.md "Fuzzing").
#
#   tools/fuzz.sh [--merge] [SECONDS] [TARGET...]
#
#   SECONDS   how long each target runs (libFuzzer -max_total_time; default 5)
#   TARGET    frame, peer, spec, config, identity, reflection, host (default: all)
#   --merge   afterwards, add the inputs that found new coverage to the committed
#             corpus tests/fuzz/corpus/TARGET/ (libFuzzer -merge=1); without it the
#             committed corpus is never changed
#   --build   build only
#   --seeds   (re)write the generated seed inputs into tests/fuzz/corpus/ (gen_seeds.c)
#
# Prints one line per target, "fuzz TARGET: ok, N execs (X exec/s), cov C" or
# "fuzz TARGET: FAILED (...)", and exits 1 if any failed.  Everything it makes
# lives under .bazel/fuzz/ (ignored by git and Bazel): the binaries, a scratch copy
# of each corpus, the logs (TARGET.log) and crash artifacts.  The build is skipped
# when no source, generated file or flag changed since the last one.
#
# Environment: CC (default clang), FUZZ_JOBS (parallel compiles, default 2).
set -uo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(frame peer spec config identity reflection host)
CC=${CC:-clang}
jobs=${FUZZ_JOBS:-2}
merge=0 build_only=0 seeds=0 seconds=5 targets=()
for a in "$@"; do
  case "$a" in
    --merge) merge=1 ;;
    --build) build_only=1 ;;
    --seeds) seeds=1 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    [0-9]*) seconds=$a ;;
    *)
      if [ -f "tests/fuzz/$a.c" ]; then targets+=("$a")
      else echo "tools/fuzz.sh: no target '$a' (tests/fuzz/$a.c)" >&2; exit 2; fi ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

fail_all() { # every asked-for target fails, with the reason
  for t in "${targets[@]}"; do echo "fuzz $t: FAILED ($1)"; done
  exit 1
}

command -v "$CC" >/dev/null || fail_all "$CC not found: apt-get install clang"

# ---------- build ----------

out=.bazel/fuzz
mkdir -p "$out/obj" "$out/bin" "$out/run" "$out/artifacts" || fail_all "cannot create $out"

if ! bazel build --noshow_progress //proto:distsup_pb_c_src //proto:grpc_pb_c_src //proto:descriptor_pb_c_src \
    //proto:descriptor_set_c >"$out/bazel.log" 2>&1; then
  cat "$out/bazel.log" >&2
  fail_all "bazel build of the generated protobuf-c sources failed"
fi
gen="$(bazel info bazel-bin 2>/dev/null)/proto"
[ -f "$gen/distsup_desc.c" ] || fail_all "no generated sources under $gen"

# Every project source the harnesses may need, except main(): they go into one
# archive, from which the linker takes only the objects a harness uses.
srcs=(framing/frame.c sidecar/cluster/*.c sidecar/peer/*.c)
for f in sidecar/*.c; do [ "$f" = sidecar/main.c ] || srcs+=("$f"); done
srcs+=("$gen"/distsup/v1/*.pb-c.c "$gen"/grpc/health/v1/health.pb-c.c "$gen"/grpc/reflection/v1/reflection.pb-c.c
  "$gen"/grpc/reflection/v1alpha/reflection.pb-c.c "$gen"/google/protobuf/descriptor.pb-c.c "$gen/distsup_desc.c")

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Wno-unused-parameter $SAN -I. -I$gen"
LIBS="-lgrpc -lgpr -lprotobuf-c -lsodium -linih -lsqlite3 -lmicrohttpd -ldl -lpthread"

# Rebuilt only when something changed: the project's archive when a source, header,
# generated file or flag did; the harnesses when they or the archive did.
lib_stamp=$( { echo "$CC $CFLAGS"; $CC --version | head -1
               cat "${srcs[@]}" sidecar/*.h sidecar/cluster/*.h sidecar/peer/*.h framing/*.h strategies/*.h \
                   "$gen"/distsup/v1/*.h; } | sha256sum | cut -c1-16)
bin_stamp=$( { echo "$lib_stamp $LIBS"; cat tests/fuzz/*.c tests/fuzz/*.h; } | sha256sum | cut -c1-16)
if [ "$(cat "$out/lib.stamp" 2>/dev/null)" != "$lib_stamp" ] || [ ! -f "$out/libdistsup.a" ]; then
  rm -f "$out/lib.stamp" "$out/bin.stamp" "$out"/obj/*.o "$out/libdistsup.a"
  echo "fuzz: building ${#srcs[@]} sources with $CC (ASan, UBSan, coverage) into $out" >&2
  # -fsanitize=fuzzer-no-link: the project's code is instrumented for libFuzzer too
  if ! printf '%s\n' "${srcs[@]}" | xargs -P "$jobs" -I{} sh -c \
      'o="$1/obj/$(echo "$2" | tr / _ | sed "s/\.c$/.o/")"; '"$CC $CFLAGS"' -fsanitize=fuzzer-no-link -c "$2" -o "$o"' \
      sh "$out" {} >"$out/build.log" 2>&1; then
    cat "$out/build.log" >&2
    fail_all "compiling the project's sources failed; see $out/build.log"
  fi
  ar rcs "$out/libdistsup.a" "$out"/obj/*.o || fail_all "ar failed"
  echo "$lib_stamp" >"$out/lib.stamp"
fi
built=1
for t in "${ALL_TARGETS[@]}" gen_seeds; do [ -x "$out/bin/$t" ] || built=0; done
if [ "$(cat "$out/bin.stamp" 2>/dev/null)" != "$bin_stamp" ] || [ $built -eq 0 ]; then
  rm -f "$out/bin.stamp"
  : >"$out/link.log"
  for t in "${ALL_TARGETS[@]}"; do
    if ! $CC $CFLAGS -Werror -fsanitize=fuzzer "tests/fuzz/$t.c" "$out/libdistsup.a" $LIBS -o "$out/bin/$t" \
        >>"$out/link.log" 2>&1; then
      cat "$out/link.log" >&2
      fail_all "building tests/fuzz/$t.c failed; see $out/link.log"
    fi
  done
  if ! $CC $CFLAGS -Werror -fsanitize=fuzzer-no-link tests/fuzz/gen_seeds.c "$out/libdistsup.a" $LIBS \
      -o "$out/bin/gen_seeds" >>"$out/link.log" 2>&1; then
    cat "$out/link.log" >&2
    fail_all "building tests/fuzz/gen_seeds.c failed; see $out/link.log"
  fi
  echo "$bin_stamp" >"$out/bin.stamp"
fi

if [ $seeds -eq 1 ]; then
  "$out/bin/gen_seeds" tests/fuzz/corpus || { echo "fuzz: gen_seeds failed" >&2; exit 1; }
fi
[ $build_only -eq 0 ] || exit 0

# ---------- run ----------

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
rc=0
for t in "${targets[@]}"; do
  work="$out/run/$t"
  rm -rf "$work" && mkdir -p "$work/corpus"
  cp tests/fuzz/corpus/"$t"/* "$work/corpus/" 2>/dev/null
  rm -f "$out/artifacts/$t-"*
  log="$out/$t.log"
  "$out/bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$t-" "$work/corpus" >"$log" 2>&1
  frc=$?
  art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  if [ $frc -ne 0 ] || [ -n "$art" ]; then
    echo "fuzz $t: FAILED (${art:+crash artifact at $art; }exit $frc; log $log)"
    grep -m3 -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$log" | sed 's/^/    /'
    rc=1
    continue
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
  echo "fuzz $t: ok, ${execs:-?} execs (${rate:-?} exec/s), cov ${cov:-?}"
  if [ $merge -eq 1 ]; then
    before=$(ls tests/fuzz/corpus/"$t" | wc -l)
    "$out/bin/$t" -merge=1 tests/fuzz/corpus/"$t" "$work/corpus" >"$out/$t.merge.log" 2>&1 ||
      { echo "fuzz $t: merge failed (see $out/$t.merge.log)" >&2; rc=1; }
    echo "fuzz $t: corpus $before -> $(ls tests/fuzz/corpus/"$t" | wc -l) inputs" >&2
  fi
done
exit $rc
