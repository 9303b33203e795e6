"""Adds up the tests' own pass/fail counts from Bazel's test logs.

Every test target prints its totals: the Python suites a line
"distsup-tests: N passed, M failed", cmocka its "[  PASSED  ] N test(s)." and
"[  FAILED  ] M test(s)" lines.  A target that failed, timed out or did not build
without reporting a failure of its own counts as one failure, so nothing is lost.

    test_totals.py BAZEL_LOG [TESTLOGS_DIR] [--fuzz FUZZ_LOG]

With --fuzz, the output of tools/fuzz.sh is counted too: each target's line
"fuzz TARGET: ok, ..." is one passed test, "fuzz TARGET: FAILED ..." one failed; a
log without any such line (fuzz.sh broke before running anything) is one failure.
Prints "N passed, M failed" last; exits 1 if M > 0 or nothing ran."""
import os
import re
import sys

STATUS = re.compile(r"^(//\S+)\s+(?:\(cached\)\s+)?(PASSED|FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|FLAKY|INCOMPLETE)\b",
                    re.M)
PY = re.compile(r"^distsup-tests: (\d+) passed, (\d+) failed", re.M)
CM_PASS = re.compile(r"^\[  PASSED  \] (\d+) test", re.M)
CM_FAIL = re.compile(r"^\[  FAILED  \] (\d+) test", re.M)
FUZZ = re.compile(r"^fuzz (\S+): (ok|FAILED)\b", re.M)


def counts(log_text):
    p = f = 0
    found = False
    for m in PY.finditer(log_text):
        p, f, found = p + int(m.group(1)), f + int(m.group(2)), True
    for m in CM_PASS.finditer(log_text):
        p, found = p + int(m.group(1)), True
    for m in CM_FAIL.finditer(log_text):
        f, found = f + int(m.group(1)), True
    return p, f, found


def fuzz_rows(path):
    """(rows, passed, failed) of a tools/fuzz.sh log."""
    text = open(path, errors="replace").read()
    rows, p, f = [], 0, 0
    for target, result in FUZZ.findall(text):
        ok = int(result == "ok")
        p, f = p + ok, f + 1 - ok
        rows.append("  %-60s %-16s %d passed, %d failed" % ("fuzz " + target, "PASSED" if ok else "FAILED", ok, 1 - ok))
    if not rows:
        rows.append("  %-60s %-16s 0 passed, 1 failed" % ("fuzz", "NO RESULTS"))
        f = 1
    return rows, p, f


def main():
    argv = sys.argv[1:]
    fuzz_log = None
    if "--fuzz" in argv:
        i = argv.index("--fuzz")
        fuzz_log = argv[i + 1]
        del argv[i:i + 2]
    out = open(argv[0], errors="replace").read()
    testlogs = argv[1] if len(argv) > 1 else ""
    total_p = total_f = 0
    rows = []
    for target, status in STATUS.findall(out):
        path = os.path.join(testlogs, target[2:].replace(":", "/"), "test.log")
        p = f = 0
        found = False
        if status in ("PASSED", "FAILED", "TIMEOUT", "FLAKY") and os.path.exists(path):
            p, f, found = counts(open(path, errors="replace").read())
        if status != "PASSED" and f == 0:
            f = 1  # the target failed without saying which test: count it
        if status == "PASSED" and not found:
            p = 1  # a passing target that prints no totals (should not happen): one test
        total_p += p
        total_f += f
        rows.append("  %-60s %-16s %d passed, %d failed" % (target, status, p, f))
    ran = bool(rows)
    if fuzz_log is not None:
        frows, fp, ff = fuzz_rows(fuzz_log)
        rows += frows
        total_p += fp
        total_f += ff
    print("\nper target:")
    print("\n".join(rows) if rows else "  (no test targets ran)")
    if not ran:
        if rows:
            print("  (no Bazel test targets ran)")
        total_f += 1
    print("%d passed, %d failed" % (total_p, total_f))
    sys.exit(1 if total_f or not ran else 0)


main()
