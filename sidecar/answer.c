#include "sidecar/answer.h"

#include <stdarg.h>
#include <stdio.h>

void answer_fail(answer_fn done, void *arg, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    done(arg, code, msg, NULL);
}
