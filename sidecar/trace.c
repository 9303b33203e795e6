#include "sidecar/trace.h"

static int lower_hex(const char *s, size_t n, int *nonzero)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return 0;
        if (ch != '0') *nonzero = 1;
    }
    return 1;
}

int trace_parent_valid(const char *s, size_t len)
{
    if (!s || len != TRACE_PARENT_LEN) return 0;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-') return 0;
    int nz_version = 0, nz_trace = 0, nz_parent = 0, nz_flags = 0;
    if (!lower_hex(s, 2, &nz_version) || !lower_hex(s + 3, 32, &nz_trace) || !lower_hex(s + 36, 16, &nz_parent) ||
        !lower_hex(s + 53, 2, &nz_flags))
        return 0;
    if (s[0] == 'f' && s[1] == 'f') return 0; /* version ff is invalid */
    return nz_trace && nz_parent;
}

int trace_state_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > TRACE_STATE_MAX) return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] > 0x7e) return 0;
    return 1;
}
