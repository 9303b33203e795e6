#!/usr/bin/env bash
# Formats every C file git tracks (*.c, *.h) with .clang-format, in place.
#
#   tools/format.sh           rewrite the files that are not formatted
#   tools/format.sh --check   change nothing; list those files (with the number of
#                             lines clang-format would change) and exit 1 if any
#
# The style is written for clang-format 14 (Debian 12's package clang-format, at
# /usr/bin/clang-format); another version formats some constructs differently.
# CLANG_FORMAT names another binary.
set -euo pipefail
cd "$(dirname "$0")/.."

cf=${CLANG_FORMAT:-/usr/bin/clang-format}
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: tools/format.sh [--check]" >&2; exit 2 ;;
esac
if ! command -v "$cf" >/dev/null; then
  echo "tools/format.sh: $cf not found (Debian package clang-format)" >&2
  exit 2
fi

mapfile -d '' files < <(git ls-files -z -- '*.c' '*.h')
[ ${#files[@]} -gt 0 ] || { echo "tools/format.sh: no C files tracked" >&2; exit 2; }

if [ $check -eq 0 ]; then
  "$cf" -i --style=file -- "${files[@]}"
  exit 0
fi

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
bad=0
for f in "${files[@]}"; do
  "$cf" --style=file -- "$f" >"$tmp" || { echo "tools/format.sh: clang-format failed on $f" >&2; exit 2; }
  cmp -s -- "$f" "$tmp" && continue
  n=$(diff -U0 -- "$f" "$tmp" | grep -c '^-[^-]' || true)
  echo "$f: $n lines to reformat"
  bad=$((bad + 1))
done
if [ $bad -gt 0 ]; then
  echo "$bad of ${#files[@]} C files are not formatted: run tools/format.sh" >&2
  exit 1
fi
echo "all ${#files[@]} C files are formatted"
