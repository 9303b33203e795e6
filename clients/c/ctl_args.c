/* distsupctl argument parsing and help texts. */
#include "ctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define B(c) (1u << (c))
#define ALL 0xFFFFFFFFu

static const struct {
    const char *name;
    enum ctl_cmd cmd;
} commands[] = {
    {"start", CMD_START},       {"stop", CMD_STOP},       {"terminate", CMD_STOP}, {"ls", CMD_LS},
    {"children", CMD_LS},       {"whereis", CMD_WHEREIS}, {"whois", CMD_WHOIS},    {"call", CMD_CALL},
    {"cast", CMD_CAST},         {"send", CMD_SEND},       {"count", CMD_COUNT},    {"nodes", CMD_NODES},
    {"node-for", CMD_NODE_FOR}, {"mine", CMD_MINE},       {"watch", CMD_WATCH},    {"health", CMD_HEALTH},
    {"top", CMD_TOP},           {"help", CMD_HELP},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

enum opt_id {
    O_ADDR,
    O_SUPERVISOR,
    O_JSON,
    O_SPEC_DATA,
    O_DEADLINE,
    O_HELP,
    O_RESTART,
    O_SHUTDOWN,
    O_KILL,
    O_NODE,
    O_ENV,
    O_CWD,
    O_LABEL,
    O_INIT,
    O_PROTOCOL,
    O_KEY,
    O_ID,
    O_TIMEOUT,
    O_RAW,
    O_PAYLOAD_FILE,
    O_COUNT,
    O_KIND,
    O_SERVICE,
    O_CLUSTER,
    O_TOKEN_FILE,
    O_TLS_CA,
    O_TLS_CERT,
    O_TLS_KEY,
    O_TRACEPARENT,
    O_TRACESTATE,
    O_INTERVAL,
    O_ONCE,
};

static const struct optdef {
    const char *name;
    bool value;
    uint32_t cmds;
    enum opt_id id;
} options[] = {
    {"addr", true, ALL, O_ADDR},
    {"supervisor", true, ALL, O_SUPERVISOR},
    {"json", false, ALL, O_JSON},
    {"spec-data", false, ALL, O_SPEC_DATA},
    {"deadline-ms", true, ALL, O_DEADLINE},
    {"token-file", true, ALL, O_TOKEN_FILE},
    {"tls-ca", true, ALL, O_TLS_CA},
    {"tls-cert", true, ALL, O_TLS_CERT},
    {"tls-key", true, ALL, O_TLS_KEY},
    {"help", false, ALL, O_HELP},
    {"restart", true, B(CMD_START), O_RESTART},
    {"shutdown-ms", true, B(CMD_START), O_SHUTDOWN},
    {"kill-immediately", false, B(CMD_START), O_KILL},
    {"node", true, B(CMD_START) | B(CMD_LS) | B(CMD_COUNT) | B(CMD_TOP), O_NODE},
    {"env", true, B(CMD_START), O_ENV},
    {"cwd", true, B(CMD_START), O_CWD},
    {"label", true, B(CMD_START), O_LABEL},
    {"init", true, B(CMD_START), O_INIT},
    {"protocol", true, B(CMD_START), O_PROTOCOL},
    {"key", true, B(CMD_START), O_KEY},
    {"id", true, B(CMD_STOP), O_ID},
    {"timeout-ms", true, B(CMD_CALL) | B(CMD_WATCH), O_TIMEOUT},
    {"raw", false, B(CMD_CALL), O_RAW},
    {"payload-file", true, B(CMD_CALL) | B(CMD_CAST) | B(CMD_SEND), O_PAYLOAD_FILE},
    {"count", true, B(CMD_WATCH), O_COUNT},
    {"kind", true, B(CMD_WATCH) | B(CMD_START), O_KIND}, /* start: a hosted child's; watch: event kinds */
    {"cluster", false, B(CMD_WATCH), O_CLUSTER},
    {"service", true, B(CMD_HEALTH), O_SERVICE},
    {"traceparent", true, B(CMD_CALL) | B(CMD_CAST) | B(CMD_SEND), O_TRACEPARENT},
    {"tracestate", true, B(CMD_CALL) | B(CMD_CAST) | B(CMD_SEND), O_TRACESTATE},
    {"interval", true, B(CMD_TOP), O_INTERVAL},
    {"once", false, B(CMD_TOP), O_ONCE},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

const char *ctl_cmd_name(enum ctl_cmd cmd)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (commands[i].cmd == cmd) return commands[i].name;
    return "";
}

static enum ctl_cmd find_command(const char *s)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, s) == 0) return commands[i].cmd;
    return CMD_NONE;
}

static int usage(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static bool parse_u32(const char *s, uint32_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}

void ctl_opts_free(struct ctl_opts *o)
{
    free(o->env);
    free(o->labels);
    o->env = o->labels = NULL;
    o->n_env = o->n_labels = 0;
}

static bool valid_kv(const char *s)
{
    const char *eq = strchr(s, '=');
    return eq != NULL && eq != s;
}

/* Applies one option.  0, or -1 with errbuf set. */
static int apply(struct ctl_opts *o, const struct optdef *d, const char *v, char *errbuf, size_t errlen)
{
    const char *cmd = ctl_cmd_name(o->cmd);
    switch (d->id) {
    case O_ADDR:
        if (*v == '\0') return usage(errbuf, errlen, "--addr needs HOST:PORT");
        o->addr = v;
        break;
    case O_SUPERVISOR: o->supervisor = v; break;
    case O_TOKEN_FILE: o->token_file = v; break;
    case O_TLS_CA: o->tls_ca = v; break;
    case O_TLS_CERT: o->tls_cert = v; break;
    case O_TLS_KEY: o->tls_key = v; break;
    case O_JSON: o->json = true; break;
    case O_SPEC_DATA: o->spec_data = true; break;
    case O_DEADLINE:
        if (!parse_u32(v, &o->deadline_ms) || o->deadline_ms == 0)
            return usage(errbuf, errlen, "--deadline-ms wants a positive number, not '%s'", v);
        break;
    case O_HELP: o->help = true; break;
    case O_RESTART:
        if (strcasecmp(v, "permanent") == 0) o->restart = DS_RESTART_PERMANENT;
        else if (strcasecmp(v, "transient") == 0) o->restart = DS_RESTART_TRANSIENT;
        else if (strcasecmp(v, "temporary") == 0) o->restart = DS_RESTART_TEMPORARY;
        else return usage(errbuf, errlen, "--restart is permanent, transient or temporary, not '%s'", v);
        break;
    case O_SHUTDOWN:
        if (!parse_u32(v, &o->shutdown_ms)) return usage(errbuf, errlen, "--shutdown-ms wants a number, not '%s'", v);
        break;
    case O_KILL: o->kill_immediately = true; break;
    case O_NODE: o->node = v; break;
    case O_ENV:
        if (!valid_kv(v)) return usage(errbuf, errlen, "--env wants KEY=VALUE, not '%s'", v);
        o->env[o->n_env++] = v;
        break;
    case O_CWD: o->cwd = v; break;
    case O_LABEL:
        if (!valid_kv(v)) return usage(errbuf, errlen, "--label wants KEY=VALUE, not '%s'", v);
        o->labels[o->n_labels++] = v;
        break;
    case O_INIT: o->init = v; break;
    case O_PROTOCOL:
        if (strcasecmp(v, "frames") == 0) o->protocol = DS_PROTOCOL_FRAMES;
        else if (strcasecmp(v, "none") == 0) o->protocol = DS_PROTOCOL_NONE;
        else return usage(errbuf, errlen, "--protocol is frames or none, not '%s'", v);
        break;
    case O_KEY: o->key = v; break;
    case O_ID:
        if (*v == '\0') return usage(errbuf, errlen, "--id needs an id");
        o->id = v;
        break;
    case O_TIMEOUT:
        if (!parse_u32(v, &o->timeout_ms) || o->timeout_ms == 0)
            return usage(errbuf, errlen, "%s: --timeout-ms wants a positive number, not '%s'", cmd, v);
        break;
    case O_RAW: o->raw = true; break;
    case O_PAYLOAD_FILE:
        if (*v == '\0') return usage(errbuf, errlen, "--payload-file needs a file name");
        o->payload_file = v;
        break;
    case O_COUNT: {
        uint32_t n;
        if (!parse_u32(v, &n) || n == 0) return usage(errbuf, errlen, "--count wants a positive number, not '%s'", v);
        o->count = n;
        break;
    }
    case O_KIND: {
        if (o->cmd == CMD_START) {
            if (*v == '\0') return usage(errbuf, errlen, "--kind needs a kind");
            o->kind = v;
            break;
        }
        int k = ds_event_kind_parse(v);
        if (k <= 0) return usage(errbuf, errlen, "unknown event kind '%s' (see watch --help)", v);
        if (o->n_kinds == CTL_MAX_KINDS) return usage(errbuf, errlen, "too many --kind");
        o->kinds[o->n_kinds++] = (ds_event_kind)k;
        break;
    }
    case O_SERVICE: o->service = v; break;
    case O_CLUSTER: o->cluster = true; break;
    case O_TRACEPARENT: o->traceparent = v; break;
    case O_TRACESTATE: o->tracestate = v; break;
    case O_INTERVAL: {
        errno = 0;
        char *end;
        double sec = strtod(v, &end);
        if (errno || end == v || *end || !(sec >= 0.1 && sec <= 3600))
            return usage(errbuf, errlen, "--interval wants seconds from 0.1 to 3600, not '%s'", v);
        o->interval_ms = (uint32_t)(sec * 1000 + 0.5);
        break;
    }
    case O_ONCE: o->once = true; break;
    }
    return 0;
}

int ctl_parse(int argc, char **argv, const char *env_addr, struct ctl_opts *o, char *errbuf, size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (errlen) errbuf[0] = '\0';
    o->addr = env_addr && *env_addr ? env_addr : DS_DEFAULT_ADDRESS;
    o->interval_ms = 1000;
    size_t slots = argc > 0 ? (size_t)argc : 1;
    o->env = calloc(slots, sizeof *o->env);
    o->labels = calloc(slots, sizeof *o->labels);
    const char **pos = calloc(slots, sizeof *pos);
    size_t npos = 0;
    if (!o->env || !o->labels || !pos) {
        free(pos);
        return usage(errbuf, errlen, "out of memory");
    }

    int rc = 0;
    bool rest_positional = false;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (!rest_positional && strcmp(a, "--") == 0) {
            if (o->cmd == CMD_START) {
                o->child_argv = argv + i + 1;
                o->child_argc = (size_t)(argc - i - 1);
                break;
            }
            rest_positional = true;
            continue;
        }
        if (!rest_positional && (strcmp(a, "-h") == 0)) {
            o->help = true;
            continue;
        }
        if (!rest_positional && strncmp(a, "--", 2) == 0) {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t nl = eq ? (size_t)(eq - name) : strlen(name);
            const struct optdef *d = NULL;
            for (size_t k = 0; k < N_OPTIONS; k++)
                if (strlen(options[k].name) == nl && strncmp(options[k].name, name, nl) == 0) d = &options[k];
            if (d == NULL || (o->cmd != CMD_NONE && !(d->cmds & B(o->cmd))) || (o->cmd == CMD_NONE && d->cmds != ALL)) {
                rc = o->cmd == CMD_NONE
                    ? usage(errbuf, errlen, "unknown option '--%.*s'", (int)nl, name)
                    : usage(errbuf, errlen, "%s: unknown option '--%.*s'", ctl_cmd_name(o->cmd), (int)nl, name);
                break;
            }
            const char *v = NULL;
            if (d->value) {
                if (eq) v = eq + 1;
                else if (i + 1 < argc) v = argv[++i];
                else {
                    rc = usage(errbuf, errlen, "--%s needs a value", d->name);
                    break;
                }
            } else if (eq) {
                rc = usage(errbuf, errlen, "--%s takes no value", d->name);
                break;
            }
            rc = apply(o, d, v, errbuf, errlen);
            continue;
        }
        if (o->cmd == CMD_NONE) {
            o->cmd = find_command(a);
            if (o->cmd == CMD_NONE) rc = usage(errbuf, errlen, "unknown command '%s'", a);
            continue;
        }
        pos[npos++] = a;
    }
    if (rc != 0) goto out;

    o->help_cmd = o->cmd;
    if (o->cmd == CMD_HELP) {
        o->help = true;
        o->help_cmd = CMD_NONE;
        if (npos > 1) {
            rc = usage(errbuf, errlen, "help takes one command name");
        } else if (npos == 1) {
            o->help_cmd = find_command(pos[0]);
            if (o->help_cmd == CMD_NONE || o->help_cmd == CMD_HELP)
                rc = usage(errbuf, errlen, "no such command '%s'", pos[0]);
        }
        goto out;
    }
    if (o->help) goto out;
    if (o->cmd == CMD_NONE) {
        rc = usage(errbuf, errlen, "no command given");
        goto out;
    }

    const char *cmd = ctl_cmd_name(o->cmd);
    switch (o->cmd) {
    case CMD_START:
        if (npos > 1) {
            rc = usage(errbuf, errlen, "start: one NAME, then the command after '--' (got '%s')", pos[1]);
        } else {
            if (npos == 1) o->name = pos[0];
            if (o->kind && o->child_argc)
                rc = usage(errbuf, errlen, "start: --kind (a hosted child) or a command after '--', not both");
            else if (!o->kind && (o->child_argc == 0 || o->child_argv[0][0] == '\0'))
                rc = usage(errbuf, errlen, "start: the child's command goes after '--' (or --kind KIND)");
        }
        break;
    case CMD_STOP:
        if (npos > 1) rc = usage(errbuf, errlen, "stop: one NAME only");
        else if (npos == 1 && o->id) rc = usage(errbuf, errlen, "stop: NAME or --id, not both");
        else if (npos == 0 && !o->id) rc = usage(errbuf, errlen, "stop: NAME (or --id ID) needed");
        else if (npos == 1) o->name = pos[0];
        break;
    case CMD_WHEREIS:
    case CMD_WHOIS:
    case CMD_NODE_FOR:
    case CMD_MINE: {
        const char *what = o->cmd == CMD_WHEREIS ? "NAME" : o->cmd == CMD_WHOIS ? "ID" : "KEY";
        if (npos != 1) {
            rc = usage(errbuf, errlen, "%s: exactly one %s needed", cmd, what);
        } else if (o->cmd == CMD_WHEREIS) {
            o->name = pos[0];
        } else if (o->cmd == CMD_WHOIS) {
            o->id = pos[0];
        } else {
            o->key = pos[0];
        }
        break;
    }
    case CMD_CALL:
    case CMD_CAST:
    case CMD_SEND:
        if (npos == 0) {
            rc = usage(errbuf, errlen, "%s: NAME and PAYLOAD needed", cmd);
        } else if (npos > 2) {
            rc = usage(errbuf, errlen, "%s: NAME PAYLOAD only (quote a payload with spaces)", cmd);
        } else if (npos == 2 && o->payload_file) {
            rc = usage(errbuf, errlen, "%s: PAYLOAD or --payload-file, not both", cmd);
        } else if (npos == 1 && !o->payload_file) {
            rc = usage(errbuf, errlen, "%s: PAYLOAD (or --payload-file FILE) needed", cmd);
        } else {
            o->name = pos[0];
            if (npos == 2) o->payload = pos[1];
            if (o->name[0] == '\0') rc = usage(errbuf, errlen, "%s: NAME is empty", cmd);
        }
        break;
    default:
        if (npos > 0) rc = usage(errbuf, errlen, "%s: unexpected argument '%s'", cmd, pos[0]);
        break;
    }
    if (rc == 0 && o->name && o->name[0] == '\0' && o->cmd != CMD_START)
        rc = usage(errbuf, errlen, "%s: NAME is empty", cmd);
out:
    free(pos);
    return rc;
}

/* ---- help ----------------------------------------------------------------------- */

#define GLOBAL_OPTS \
    "Global options (anywhere on the line):\n" \
    "  --addr HOST:PORT    daemon address, or unix:/PATH (default: $DISTSUP_ADDR, else 127.0.0.1:50051)\n" \
    "  --token-file FILE   the daemon's API token (default: $DISTSUP_TOKEN, else the file $DISTSUP_TOKEN_FILE)\n" \
    "  --tls-ca PEM        TLS: verify the daemon with this CA\n" \
    "  --tls-cert PEM --tls-key PEM  TLS with a client certificate (a daemon with tls_client_ca)\n" \
    "  --supervisor NAME   supervisor to use (default: \"default\")\n" \
    "  --json              machine-readable output: one JSON object (one per line for watch)\n" \
    "  --deadline-ms MS    deadline of each RPC (default 10000)\n" \
    "  --spec-data         show children's init and env values (left out by default)\n" \
    "  --help, -h          this help\n"

#define EXIT_CODES \
    "Exit codes:\n" \
    "  0   success\n" \
    "  1   usage error\n" \
    "  2   local failure (out of memory, unreadable --payload-file, write error)\n" \
    "  3   health: the daemon answered but is not SERVING\n" \
    "  10+CODE  the RPC failed with gRPC status CODE; the daemon's message goes to stderr\n" \
    "      (with --json also as {\"error\":{\"code\":N,\"status\":\"NAME\",\"message\":\"...\"}} on stdout):\n" \
    "      11 CANCELLED  12 UNKNOWN  13 INVALID_ARGUMENT  14 DEADLINE_EXCEEDED  15 NOT_FOUND\n" \
    "      16 ALREADY_EXISTS  17 PERMISSION_DENIED  18 RESOURCE_EXHAUSTED\n" \
    "      19 FAILED_PRECONDITION  20 ABORTED  21 OUT_OF_RANGE  22 UNIMPLEMENTED\n" \
    "      23 INTERNAL  24 UNAVAILABLE (daemon unreachable, no eligible node)  25 DATA_LOSS\n" \
    "      26 UNAUTHENTICATED\n"

static const char help_overview[] =
    "usage: distsupctl [global options] COMMAND [options] [args]\n"
    "\n"
    "Drives distsupd, the distsup supervisor sidecar, over gRPC.\n"
    "\n"
    "Commands:\n"
    "  start [NAME] [options] -- ARGV...   start a child (NAME generated when omitted)\n"
    "  start [NAME] --kind KIND [options]  start a hosted child\n"
    "  stop NAME | --id ID                 terminate a child\n"
    "  ls                                  children on every node (alias: children)\n"
    "  whereis NAME                        where a child runs\n"
    "  whois ID                            which child has this id\n"
    "  call NAME PAYLOAD                   call a child and print its reply\n"
    "  cast NAME PAYLOAD                   cast a message to a child (no reply)\n"
    "  send NAME PAYLOAD                   send a plain message to a child\n"
    "  count                               count the children\n"
    "  nodes                               the cluster's nodes\n"
    "  node-for KEY                        the node a key is placed on\n"
    "  mine KEY                            is KEY placed on this daemon's node?\n"
    "  watch                               follow lifecycle events\n"
    "  health                              gRPC health check of the daemon\n"
    "  top                                 live table of children: state, restarts, call rates\n"
    "  help [COMMAND]                      help on a command (or: COMMAND --help)\n"
    "\n" GLOBAL_OPTS "\n" EXIT_CODES;

static const char help_start[] =
    "usage: distsupctl start [NAME] [options] -- ARGV...\n"
    "       distsupctl start [NAME] --kind KIND [options]\n"
    "\n"
    "Starts a child running ARGV (argv[0] is looked up in PATH when it has no '/'; a\n"
    "relative path is resolved by the daemon against the child's cwd), or a hosted\n"
    "child of KIND, run by an app attached to a node with that kind (docs/hosting.md).\n"
    "Prints the child (--json: the child object).\n"
    "\n"
    "Options:\n"
    "  --restart permanent|transient|temporary   restart policy (default permanent)\n"
    "  --shutdown-ms MS     SIGTERM, wait MS, then SIGKILL (default 5000)\n"
    "  --kill-immediately   SIGKILL at once on stop (brutal kill)\n"
    "  --node NODE          run on this node\n"
    "  --key KEY            placement key (default: the name)\n"
    "  --env K=V            environment variable (repeatable)\n"
    "  --cwd DIR            working directory (default: /)\n"
    "  --label K=V          label (repeatable)\n"
    "  --init TEXT          init bytes handed to the child in its Init frame\n"
    "  --protocol frames|none   frames (default) speaks the child frame protocol;\n"
    "                       none is a plain process (call/cast answer FAILED_PRECONDITION)\n"
    "  --kind KIND          a hosted child of KIND instead of a command\n"
    "\n"
    "Example:\n"
    "  distsupctl start counter1 --init 10 -- /path/to/counter\n"
    "  distsupctl start web --protocol none --env PORT=8080 -- python3 -m http.server 8080\n"
    "  distsupctl start c7 --kind counter --init 5\n"
    "\n" GLOBAL_OPTS;

static const char help_stop[] = "usage: distsupctl stop NAME\n"
                                "       distsupctl stop --id ID\n"
                                "\n"
                                "Terminates a child (SIGTERM, then SIGKILL after its shutdown time) and removes it.\n"
                                "Prints its name and exit status.  Unknown name: exit 15 (NOT_FOUND).\n"
                                "\n" GLOBAL_OPTS;

static const char help_ls[] = "usage: distsupctl ls [--node NODE]\n"
                              "\n"
                              "Lists the children on every node (or on NODE): NAME NODE PID STATE RESTARTS UPTIME.\n"
                              "--json prints {\"children\":[CHILD...]}, each CHILD as described in\n"
                              "docs/quickstart-distsupctl.md.\n"
                              "\n" GLOBAL_OPTS;

static const char help_whereis[] = "usage: distsupctl whereis NAME\n"
                                   "\n"
                                   "Shows where the child NAME runs (NAME NODE PID STATE RESTARTS UPTIME ID).\n"
                                   "Unknown name: exit 15 (NOT_FOUND).\n"
                                   "\n" GLOBAL_OPTS;

static const char help_whois[] = "usage: distsupctl whois ID\n"
                                 "\n"
                                 "Shows the child whose current incarnation has id ID (\"node/seq\").\n"
                                 "\n" GLOBAL_OPTS;

static const char help_call[] =
    "usage: distsupctl call NAME PAYLOAD [--timeout-ms MS] [--raw]\n"
    "       distsupctl call NAME --payload-file FILE   (FILE '-' reads stdin)\n"
    "\n"
    "Calls the child NAME with PAYLOAD and prints its reply: the reply's bytes exactly,\n"
    "followed by a newline (none with --raw).  --json prints\n"
    "{\"name\":..,\"node\":..,\"payload_base64\":..,\"payload\":..} where \"payload\" (the\n"
    "reply as text) is present only when the reply is valid UTF-8; payload_base64 always.\n"
    "\n"
    "Options:\n"
    "  --timeout-ms MS      time the child has to reply (default 5000); past it: exit 14\n"
    "  --raw                no newline after the reply\n"
    "  --payload-file FILE  read the payload from FILE ('-' = stdin) instead\n"
    "  --traceparent TP     a W3C trace context the child receives with the call\n"
    "                       (00-<32 hex>-<16 hex>-<2 hex>; dropped by the daemon if not valid)\n"
    "  --tracestate TS      its tracestate (with --traceparent)\n"
    "\n" GLOBAL_OPTS;

static const char help_cast[] = "usage: distsupctl cast NAME PAYLOAD\n"
                                "       distsupctl cast NAME --payload-file FILE\n"
                                "\n"
                                "Casts PAYLOAD to the child NAME (fire and forget; delivered as a Cast frame).\n"
                                "Prints \"ok\" (--json: {\"ok\":true}).  --traceparent TP [--tracestate TS]:\n"
                                "a W3C trace context the child receives with it (see call --help).\n"
                                "\n" GLOBAL_OPTS;

static const char help_send[] = "usage: distsupctl send NAME PAYLOAD\n"
                                "       distsupctl send NAME --payload-file FILE\n"
                                "\n"
                                "Sends PAYLOAD to the child NAME as a plain message (an Info frame).\n"
                                "Prints \"ok\" (--json: {\"ok\":true}).  --traceparent TP [--tracestate TS]:\n"
                                "a W3C trace context the child receives with it (see call --help).\n"
                                "\n" GLOBAL_OPTS;

static const char help_count[] = "usage: distsupctl count [--node NODE]\n"
                                 "\n"
                                 "Counts the supervisor's children: SPECS ACTIVE WORKERS SUPERVISORS FAILED.\n"
                                 "--json: {\"specs\":N,\"active\":N,\"supervisors\":N,\"workers\":N,\"failed\":N}.\n"
                                 "\n" GLOBAL_OPTS;

static const char help_nodes[] =
    "usage: distsupctl nodes\n"
    "\n"
    "Lists the cluster's nodes: NAME ADDRESS UP SELF CHILDREN (SELF marks the node this\n"
    "daemon runs).  --json: {\"nodes\":[{\"name\",\"address\",\"up\",\"self\",\"children\",\"labels\"}]}.\n"
    "\n" GLOBAL_OPTS;

static const char help_node_for[] = "usage: distsupctl node-for KEY\n"
                                    "\n"
                                    "Prints the node KEY is placed on.  --json: {\"key\":..,\"node\":..}.\n"
                                    "\n" GLOBAL_OPTS;

static const char help_mine[] =
    "usage: distsupctl mine KEY\n"
    "\n"
    "Prints \"true NODE\" when KEY is placed on this daemon's node, else \"false NODE\"\n"
    "(NODE: the key's node).  Exit 0 either way.  --json: {\"key\":..,\"mine\":B,\"node\":..}.\n"
    "\n" GLOBAL_OPTS;

static const char help_watch[] =
    "usage: distsupctl watch [--kind KIND]... [--count N] [--timeout-ms MS] [--cluster]\n"
    "\n"
    "Follows lifecycle events, one line each (TIME SEQ KIND SUPERVISOR NAME NODE PID\n"
    "and details; the header line appears once the daemon has subscribed the stream,\n"
    "so every later event is shown), until interrupted (Ctrl-C, SIGTERM: exit 0), until N events were\n"
    "printed (exit 0), or until MS milliseconds passed (exit 14).  --json prints one\n"
    "object per line: {\"seq\",\"kind\",\"supervisor\",\"name\",\"id\",\"node\",\"os_pid\",\n"
    "\"exit_code\",\"signal\",\"reason\",\"at_ms\",\"restarts\"}.  --supervisor '*' watches\n"
    "every supervisor.  --cluster follows every node's events (cluster mode), not only\n"
    "those of the daemon's own node.\n"
    "\n"
    "KIND: process_start process_stop process_restart process_failed process_moved\n"
    "      node_up node_down node_terminate (repeatable; default: every kind)\n"
    "\n" GLOBAL_OPTS;

static const char help_health[] = "usage: distsupctl health [--service NAME]\n"
                                  "\n"
                                  "Asks grpc.health.v1.Health/Check.  Prints SERVING (exit 0), or NOT_SERVING,\n"
                                  "UNKNOWN, SERVICE_UNKNOWN (exit 3).  An unreachable daemon: exit 24 (UNAVAILABLE).\n"
                                  "--json: {\"status\":\"SERVING\"}.\n"
                                  "\n" GLOBAL_OPTS;

static const char help_top[] =
    "usage: distsupctl top [--interval SECONDS] [--once] [--node NODE]\n"
    "\n"
    "A live table of the children, polled every interval (default 1 s, at least 0.1):\n"
    "NAME NODE STATE RESTARTS +RESTARTS CALLS CALLS/S.  +RESTARTS: restarts in the last\n"
    "interval; CALLS: calls, casts and sends the child's node delivered to it since it\n"
    "started it there; CALLS/S: their rate over the last interval (\"-\" for a child not\n"
    "seen in the previous poll).  The count lives on the child's node: children of other\n"
    "nodes than the one --addr names show \"-\" for both (run top against their node).\n"
    "Busiest first.  On a terminal the screen is redrawn;\n"
    "otherwise a table is printed per interval, each after a line \"top: TIME, N children\".\n"
    "Runs until interrupted (Ctrl-C, SIGTERM: exit 0).\n"
    "\n"
    "Options:\n"
    "  --interval SECONDS   time between polls (decimals allowed)\n"
    "  --once               poll twice, an interval apart, print one table and exit\n"
    "  --node NODE          only the children on NODE\n"
    "--json prints one object per table: {\"at_ms\",\"interval_ms\",\"children\":[{\"name\",\n"
    "\"node\",\"state\",\"restarts\",\"restarts_delta\",\"calls\",\"calls_per_s\"}]}\n"
    "(null where the table shows \"-\").\n"
    "\n" GLOBAL_OPTS;

const char *ctl_help_text(enum ctl_cmd cmd)
{
    switch (cmd) {
    case CMD_START: return help_start;
    case CMD_STOP: return help_stop;
    case CMD_LS: return help_ls;
    case CMD_WHEREIS: return help_whereis;
    case CMD_WHOIS: return help_whois;
    case CMD_CALL: return help_call;
    case CMD_CAST: return help_cast;
    case CMD_SEND: return help_send;
    case CMD_COUNT: return help_count;
    case CMD_NODES: return help_nodes;
    case CMD_NODE_FOR: return help_node_for;
    case CMD_MINE: return help_mine;
    case CMD_WATCH: return help_watch;
    case CMD_HEALTH: return help_health;
    case CMD_TOP: return help_top;
    case CMD_NONE:
    case CMD_HELP: break;
    }
    return help_overview;
}
