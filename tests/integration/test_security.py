"""The API's and the host's defences (docs/security.md), each attacked through a real
distsupd with real grpcio clients: the bearer token, unix sockets, TLS and mTLS, the
health listener, the refusal to serve a reachable API without authentication, and what
children get: a clean environment, cwd "/", run_as, escaped log lines."""

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time

import grpc

from harness import DISTSUPD, DaemonTest, main, pb, pbg, pid_alive, wait_for
from daemon import free_port, make_pki

import health_pb2  # noqa: E402  (flat stubs from //proto:py_stubs)
import health_pb2_grpc  # noqa: E402
import reflection_pb2  # noqa: E402
import reflection_pb2_grpc  # noqa: E402

SC = grpc.StatusCode
TOKEN = "s3cr3t-T0ken_for.tests~42"
T = 10  # seconds: every RPC's deadline


def sh(script, name="", **kw):
    return pb.ChildSpec(name=name, argv=["/bin/sh", "-c", script], protocol=pb.NONE, **kw)


def bearer(token=TOKEN):
    return (("authorization", "Bearer " + token),)


class Base(DaemonTest):
    """Helpers; no tests."""

    def setUp(self):
        super().setUp()
        # unix socket paths are limited to 107 bytes: keep them out of Bazel's deep tmp
        self.sockdir = tempfile.mkdtemp(prefix="ds-", dir="/tmp")

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def token_file(self, token=TOKEN, mode=0o600, name="api.token"):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(token + "\n")
        os.chmod(path, mode)
        return path

    def run_distsupd(self, *args, env=None, timeout=10):
        """Runs distsupd expecting it to refuse to start: (exit code, output)."""
        cmd = [DISTSUPD, "--data-dir", os.path.join(self.workdir, "refused-data")] + list(args)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           env=env if env is not None else os.environ)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def channel(self, target, creds=None):
        ch = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
        self.addCleanup(ch.close)
        return ch

    def marker_spec(self, name):
        """A child that leaves a file behind if it ever runs."""
        marker = os.path.join(self.workdir, name + ".ran")
        return sh("touch %s; sleep 60" % marker, name=name), marker


class SecurityTest(Base):
    # ---- the bearer token ----

    def token_daemon(self, *extra):
        d = self.daemon(args=["--api-token-file", self.token_file()] + list(extra))
        return d, pbg.SupervisorStub(d.channel)

    def test_start_child_without_token_is_unauthenticated_and_runs_nothing(self):
        d, stub = self.token_daemon()
        spec, marker = self.marker_spec("intruder")
        msg = self.assertCode(SC.UNAUTHENTICATED, stub.StartChild, pb.StartChildRequest(spec=spec), timeout=T)
        self.assertIn("authorization", msg)
        self.assertIn("Bearer", msg)
        time.sleep(0.3)
        self.assertFalse(os.path.exists(marker), "the refused StartChild ran its child")
        self.assertEqual(len(stub.Children(pb.ChildrenRequest(), metadata=bearer(), timeout=T).children), 0)
        # with the token the same request works
        r = stub.StartChild(pb.StartChildRequest(spec=spec), metadata=bearer(), timeout=T)
        self.assertEqual(r.child.name, "intruder")
        wait_for(lambda: os.path.exists(marker), what="the child's marker")

    def test_every_api_method_needs_the_token(self):
        d, stub = self.token_daemon()
        for fn, req in ((stub.Children, pb.ChildrenRequest()), (stub.Nodes, pb.NodesRequest()),
                        (stub.WhereIs, pb.WhereIsRequest(name="x")),
                        (stub.TerminateChild, pb.TerminateChildRequest(name="x")),
                        (stub.Call, pb.CallRequest(name="x", payload=b"get"))):
            self.assertCode(SC.UNAUTHENTICATED, fn, req, timeout=T)
        # the Watch stream ends before it subscribes anything
        w = stub.Watch(pb.WatchRequest(), timeout=T)
        with self.assertRaises(grpc.RpcError) as cm:
            next(iter(w))
        self.assertEqual(cm.exception.code(), SC.UNAUTHENTICATED)
        # reflection and health on the API listener too (health without a token: --health-listen)
        refl = reflection_pb2_grpc.ServerReflectionStub(d.channel)
        with self.assertRaises(grpc.RpcError) as cm:
            list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                           timeout=T))
        self.assertEqual(cm.exception.code(), SC.UNAUTHENTICATED)
        h = health_pb2_grpc.HealthStub(d.channel)
        self.assertCode(SC.UNAUTHENTICATED, h.Check, health_pb2.HealthCheckRequest(), timeout=T)
        # an unknown method does not tell an unauthenticated caller it is unknown
        raw = d.channel.unary_unary("/distsup.v1.Supervisor/Nope")
        self.assertCode(SC.UNAUTHENTICATED, raw, b"", timeout=T)
        # and each works with the token
        self.assertEqual(h.Check(health_pb2.HealthCheckRequest(), metadata=bearer(), timeout=T).status,
                         health_pb2.HealthCheckResponse.SERVING)
        names = [s.name for r in refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=bearer(), timeout=T)
            for s in r.list_services_response.service]
        self.assertIn("distsup.v1.Supervisor", names)
        w = stub.Watch(pb.WatchRequest(), metadata=bearer(), timeout=T)
        w.initial_metadata()
        stub.StartChild(pb.StartChildRequest(spec=sh("sleep 60", name="w1")), metadata=bearer(), timeout=T)
        self.assertEqual(next(iter(w)).name, "w1")
        w.cancel()

    def test_wrong_token_is_unauthenticated(self):
        d, stub = self.token_daemon()
        spec, marker = self.marker_spec("wrong")
        for bad in ("nope", TOKEN + "x", TOKEN[:-1], TOKEN.upper(), "x" * 4000):
            msg = self.assertCode(SC.UNAUTHENTICATED, stub.StartChild, pb.StartChildRequest(spec=spec),
                                  metadata=bearer(bad), timeout=T)
            self.assertIn("invalid bearer token", msg)
            self.assertNotIn(TOKEN, msg)
        self.assertFalse(os.path.exists(marker))
        # the scheme's case does not matter (RFC 6750), the token's does
        stub.Children(pb.ChildrenRequest(), metadata=(("authorization", "bearer " + TOKEN),), timeout=T)

    def test_token_in_the_wrong_metadata_key_or_form_is_unauthenticated(self):
        d, stub = self.token_daemon()
        spec, marker = self.marker_spec("misplaced")
        for md in ((("token", TOKEN),), (("x-api-key", TOKEN),), (("authorization-token", "Bearer " + TOKEN),),
                   (("x-authorization", "Bearer " + TOKEN),)):
            msg = self.assertCode(SC.UNAUTHENTICATED, stub.StartChild, pb.StartChildRequest(spec=spec),
                                  metadata=md, timeout=T)
            self.assertIn("missing credentials", msg)
        for value in (TOKEN, "Basic " + TOKEN, "Bearer", "Bearer  " + TOKEN, "Token " + TOKEN):
            self.assertCode(SC.UNAUTHENTICATED, stub.StartChild, pb.StartChildRequest(spec=spec),
                            metadata=(("authorization", value),), timeout=T)
        # two authorization entries, one right: refused
        msg = self.assertCode(SC.UNAUTHENTICATED, stub.StartChild, pb.StartChildRequest(spec=spec),
                              metadata=(("authorization", "Bearer nope"), ("authorization", "Bearer " + TOKEN)),
                              timeout=T)
        self.assertIn("more than one", msg)
        self.assertFalse(os.path.exists(marker))

    def test_token_file_must_be_private_readable_and_not_empty(self):
        rc, out = self.run_distsupd("--api-token-file", self.token_file(mode=0o640))
        self.assertEqual(rc, 1, out)
        self.assertIn("chmod 600", out)
        rc, out = self.run_distsupd("--api-token-file", self.token_file(mode=0o604))
        self.assertEqual(rc, 1, out)
        rc, out = self.run_distsupd("--api-token-file", self.token_file(token="  ", name="empty"))
        self.assertEqual(rc, 1, out)
        self.assertIn("is empty", out)
        rc, out = self.run_distsupd("--api-token-file", os.path.join(self.workdir, "missing"))
        self.assertEqual(rc, 1, out)
        self.assertIn("No such file", out)
        # the environment names a token file when no flag does
        env = dict(os.environ, DISTSUP_API_TOKEN_FILE=self.token_file(mode=0o644, name="env.token"))
        rc, out = self.run_distsupd("--listen", "127.0.0.1:0", env=env)
        self.assertEqual(rc, 1, out)
        self.assertIn("env.token", out)

    def test_token_file_from_the_environment(self):
        os.environ["DISTSUP_API_TOKEN_FILE"] = self.token_file()
        try:
            d = self.daemon()
        finally:
            del os.environ["DISTSUP_API_TOKEN_FILE"]
        stub = pbg.SupervisorStub(d.channel)
        self.assertCode(SC.UNAUTHENTICATED, stub.Children, pb.ChildrenRequest(), timeout=T)
        stub.Children(pb.ChildrenRequest(), metadata=bearer(), timeout=T)

    # ---- refusing to serve a reachable API unauthenticated ----

    def test_non_loopback_listen_without_token_or_mtls_is_refused(self):
        for addr in ("0.0.0.0:0", "[::]:0", "10.1.2.3:0", "example.com:50051"):
            rc, out = self.run_distsupd("--listen", addr)
            self.assertEqual(rc, 2, out)
            self.assertIn("--api-token-file", out)
            self.assertIn("--insecure-api", out)
        # a config file the same
        ini = os.path.join(self.workdir, "open.ini")
        with open(ini, "w") as f:
            f.write("[daemon]\nlisten = 0.0.0.0:0\n")
        rc, out = self.run_distsupd("--config", ini)
        self.assertEqual(rc, 2, out)
        # loopback addresses need nothing
        for addr in ("127.0.0.1:0", "127.3.4.5:0", "localhost:0", "[::1]:0"):
            d = self.daemon(name="lo%d" % len(self.daemons), args=["--listen", addr])
            self.assertIsNone(d.proc.poll())

    def test_insecure_api_starts_with_a_warning_and_token_starts_quietly(self):
        d = self.daemon(name="open", args=["--listen", "0.0.0.0:0", "--insecure-api"])
        self.assertIn("has no authentication (--insecure-api)", d.read_log())
        ini = os.path.join(self.workdir, "insecure.ini")
        with open(ini, "w") as f:
            f.write("[daemon]\nlisten = 0.0.0.0:0\ninsecure_api = true\n")
        self.daemon(name="open2", args=["--config", ini])
        d3 = self.daemon(name="tok", args=["--listen", "0.0.0.0:0", "--api-token-file", self.token_file()])
        self.assertNotIn("no authentication", d3.read_log())

    # ---- the health listener ----

    def test_health_listener_serves_health_only_without_auth(self):
        hp = free_port()
        d, stub = self.token_daemon("--health-listen", "127.0.0.1:%d" % hp)
        ch = self.channel("127.0.0.1:%d" % hp)
        h = health_pb2_grpc.HealthStub(ch)
        self.assertEqual(h.Check(health_pb2.HealthCheckRequest(), timeout=T).status,
                         health_pb2.HealthCheckResponse.SERVING)
        self.assertEqual(h.Check(health_pb2.HealthCheckRequest(service="distsup.v1.Supervisor"), timeout=T).status,
                         health_pb2.HealthCheckResponse.SERVING)
        first = next(iter(h.Watch(health_pb2.HealthCheckRequest(), timeout=T)))
        self.assertEqual(first.status, health_pb2.HealthCheckResponse.SERVING)
        # nothing else, with or without the token
        spec, marker = self.marker_spec("via-health")
        hs = pbg.SupervisorStub(ch)
        for md in ((), bearer()):
            msg = self.assertCode(SC.UNIMPLEMENTED, hs.StartChild, pb.StartChildRequest(spec=spec), metadata=md,
                                  timeout=T)
            self.assertIn("health", msg)
            self.assertCode(SC.UNIMPLEMENTED, hs.Children, pb.ChildrenRequest(), metadata=md, timeout=T)
        w = hs.Watch(pb.WatchRequest(), timeout=T)
        with self.assertRaises(grpc.RpcError) as cm:
            next(iter(w))
        self.assertEqual(cm.exception.code(), SC.UNIMPLEMENTED)
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        with self.assertRaises(grpc.RpcError) as cm:
            list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                           timeout=T))
        self.assertEqual(cm.exception.code(), SC.UNIMPLEMENTED)
        time.sleep(0.3)
        self.assertFalse(os.path.exists(marker))
        # the API itself is where it was
        stub.Children(pb.ChildrenRequest(), metadata=bearer(), timeout=T)

    def test_health_listen_in_a_config_file_without_a_token(self):
        hp = free_port()
        ini = os.path.join(self.workdir, "h.ini")
        with open(ini, "w") as f:
            f.write("[daemon]\nhealth_listen = 127.0.0.1:%d\n" % hp)
        self.daemon(args=["--config", ini])
        h = health_pb2_grpc.HealthStub(self.channel("127.0.0.1:%d" % hp))
        self.assertEqual(h.Check(health_pb2.HealthCheckRequest(), timeout=T).status,
                         health_pb2.HealthCheckResponse.SERVING)

    # ---- unix sockets ----

    def test_unix_socket_mode_address_and_stale_socket(self):
        path = os.path.join(self.sockdir, "api.sock")
        d = self.daemon(args=["--listen", "unix:" + path])
        self.assertEqual(d.addr, "unix:" + path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        stub = pbg.SupervisorStub(d.channel)
        nodes = stub.Nodes(pb.NodesRequest(), timeout=T).nodes
        self.assertEqual(nodes[0].address, "unix:" + path)  # a usable address
        r = stub.StartChild(pb.StartChildRequest(spec=sh("sleep 60", name="u1")), timeout=T)
        self.assertEqual(r.child.state, pb.RUNNING)
        d.kill9()  # leaves the socket file behind
        self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))
        d.start()  # replaces the stale socket
        self.assertIn("removed the stale socket", d.read_log())
        wait_for(lambda: pbg.SupervisorStub(d.channel).WhereIs(pb.WhereIsRequest(name="u1"), timeout=T).child.os_pid,
                 what="u1 to run again")
        # a second daemon on the live socket is refused, and the first keeps it
        rc, out = self.run_distsupd("--listen", "unix:" + path)
        self.assertEqual(rc, 1, out)
        self.assertIn("another process serves on that socket", out)
        pbg.SupervisorStub(d.channel).Children(pb.ChildrenRequest(), timeout=T)

    def test_unix_socket_refuses_to_replace_a_file_and_takes_a_mode_and_group(self):
        path = os.path.join(self.sockdir, "not-a-socket")
        with open(path, "w") as f:
            f.write("precious\n")
        rc, out = self.run_distsupd("--listen", "unix:" + path)
        self.assertEqual(rc, 1, out)
        self.assertIn("not a socket", out)
        with open(path) as f:
            self.assertEqual(f.read(), "precious\n")
        os.mkdir(os.path.join(self.sockdir, "dir"))
        rc, out = self.run_distsupd("--listen", "unix:" + os.path.join(self.sockdir, "dir"))
        self.assertEqual(rc, 1, out)
        sock = os.path.join(self.sockdir, "m.sock")
        ini = os.path.join(self.workdir, "sock.ini")
        with open(ini, "w") as f:  # (the harness's --listen flag would win over a listen key)
            f.write("[daemon]\napi_socket_mode = 0660\n")
        d = self.daemon(args=["--config", ini, "--listen", "unix:" + sock])
        self.assertEqual(stat.S_IMODE(os.stat(sock).st_mode), 0o660)
        pbg.SupervisorStub(d.channel).Children(pb.ChildrenRequest(), timeout=T)
        rc, out = self.run_distsupd("--listen", "unix:" + os.path.join(self.sockdir, "x.sock"),
                                    "--api-socket-group", "no-such-group-here")
        self.assertEqual(rc, 1, out)
        self.assertIn("no group named", out)

    def test_unix_socket_with_token(self):
        path = os.path.join(self.sockdir, "t.sock")
        d = self.daemon(args=["--listen", "unix:" + path, "--api-token-file", self.token_file()])
        stub = pbg.SupervisorStub(d.channel)
        self.assertCode(SC.UNAUTHENTICATED, stub.Children, pb.ChildrenRequest(), timeout=T)
        stub.Children(pb.ChildrenRequest(), metadata=bearer(), timeout=T)

    # ---- TLS and mTLS ----

    def make_pki(self):
        P = make_pki(self.workdir)

        def read(n):
            with open(P(n), "rb") as f:
                return f.read()
        return os.path.dirname(P("ca.pem")), read

    def test_tls_and_mtls(self):
        pki, read = self.make_pki()
        P = lambda n: os.path.join(pki, n)  # noqa: E731
        # TLS only (with a token): the server is verified, plaintext fails
        d = self.daemon(name="tls", args=["--tls-cert", P("server.pem"), "--tls-key", P("server.key"),
                                          "--api-token-file", self.token_file()], start=False)
        d.started = lambda: None  # its channel is made here
        d.start()
        target = "127.0.0.1:%d" % d.port
        tls = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))
        stub = pbg.SupervisorStub(self.channel(target, tls))
        self.assertCode(SC.UNAUTHENTICATED, stub.Children, pb.ChildrenRequest(), timeout=T)
        stub.Children(pb.ChildrenRequest(), metadata=bearer(), timeout=T)
        plain = pbg.SupervisorStub(self.channel(target))
        self.assertCode(SC.UNAVAILABLE, plain.Children, pb.ChildrenRequest(), metadata=bearer(), timeout=T)

        # mTLS on a wildcard address, without a token: that is authentication enough
        m = self.daemon(name="mtls", args=["--listen", "0.0.0.0:0", "--tls-cert", P("server.pem"), "--tls-key",
                                           P("server.key"), "--tls-client-ca", P("ca.pem")], start=False)
        m.started = lambda: None
        m.start()
        target = "127.0.0.1:%d" % m.port
        spec, marker = self.marker_spec("no-cert")
        no_cert = pbg.SupervisorStub(self.channel(target, tls))
        self.assertCode(SC.UNAVAILABLE, no_cert.StartChild, pb.StartChildRequest(spec=spec), timeout=T)
        evil = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"), private_key=read("evil-client.key"),
                                            certificate_chain=read("evil-client.pem"))
        self.assertCode(SC.UNAVAILABLE, pbg.SupervisorStub(self.channel(target, evil)).StartChild,
                        pb.StartChildRequest(spec=spec), timeout=T)
        self.assertFalse(os.path.exists(marker))
        good = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"), private_key=read("client.key"),
                                            certificate_chain=read("client.pem"))
        ok = pbg.SupervisorStub(self.channel(target, good))
        self.assertEqual(ok.StartChild(pb.StartChildRequest(spec=spec), timeout=T).child.name, "no-cert")

    def test_tls_settings_are_checked(self):
        rc, out = self.run_distsupd("--tls-cert", "/nonexistent.pem")
        self.assertEqual(rc, 2, out)
        self.assertIn("tls_key", out)
        rc, out = self.run_distsupd("--tls-client-ca", "/nonexistent.pem")
        self.assertEqual(rc, 2, out)
        rc, out = self.run_distsupd("--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem", "--tls-key",
                                    "/nonexistent.key")
        self.assertEqual(rc, 1, out)
        self.assertIn("/nonexistent.pem", out)

    # ---- the host: what children get ----

    def test_child_environment_is_clean_and_inherit_env_widens_it(self):
        out = os.path.join(self.workdir, "env.out")
        secret_env = dict(os.environ, AWS_SECRET_ACCESS_KEY="hunter2-leaked", MYAPP_DB_PASSWORD="pw-leaked",
                          MYAPP_MODE="blue", LC_ALL="C.UTF-8", TZ="UTC",
                          DISTSUP_API_TOKEN_FILE=self.token_file())
        ini = os.path.join(self.workdir, "env.ini")
        with open(ini, "w") as f:
            f.write("[supervisor:wide]\ninherit_env = MYAPP_*, AWS_SECRET_ACCESS_KEY\n")
        d = self.daemon_with_env(secret_env, ["--config", ini])
        stub = pbg.SupervisorStub(d.channel)
        stub.StartChild(pb.StartChildRequest(spec=sh("env > %s.default; sleep 60" % out, name="e1",
                                                     env={"SPEC_VAR": "given"})),
                        metadata=bearer(), timeout=T)
        stub.StartChild(pb.StartChildRequest(supervisor="wide", spec=sh("env > %s.wide; sleep 60" % out, name="e2")),
                        metadata=bearer(), timeout=T)

        def env_of(path):
            wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, what=path)
            time.sleep(0.1)
            with open(path) as f:
                return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
        default = env_of(out + ".default")
        for leaked in ("AWS_SECRET_ACCESS_KEY", "MYAPP_DB_PASSWORD", "MYAPP_MODE", "DISTSUP_API_TOKEN_FILE"):
            self.assertNotIn(leaked, default)
        self.assertNotIn("leaked", "".join(default.values()))
        self.assertEqual(default["SPEC_VAR"], "given")
        self.assertEqual(default["DISTSUP_NAME"], "e1")
        self.assertEqual((default["LC_ALL"], default["TZ"]), ("C.UTF-8", "UTC"))
        self.assertEqual(default["PATH"], os.environ["PATH"])
        wide = env_of(out + ".wide")
        self.assertEqual(wide["AWS_SECRET_ACCESS_KEY"], "hunter2-leaked")
        self.assertEqual((wide["MYAPP_DB_PASSWORD"], wide["MYAPP_MODE"]), ("pw-leaked", "blue"))
        self.assertNotIn("DISTSUP_API_TOKEN_FILE", wide)

    def daemon_with_env(self, env, args):
        old = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            return self.daemon(name="envd", args=args)
        finally:
            os.environ.clear()
            os.environ.update(old)

    def test_child_cwd_is_root_not_the_data_dir(self):
        d = self.daemon()
        self.assertTrue(os.path.exists(os.path.join(d.data_dir, "distsup.db")))
        self.assertEqual(stat.S_IMODE(os.stat(d.data_dir).st_mode) & 0o077, 0)
        out = os.path.join(self.workdir, "cwd.out")
        d.stub.StartChild(pb.StartChildRequest(spec=sh(
            "{ pwd; if cat distsup.db >/dev/null 2>&1; then echo READ; else echo DENIED; fi; } > %s; sleep 60"
            % out, name="peek")), timeout=T)
        wait_for(lambda: os.path.exists(out) and open(out).read().count("\n") == 2, what="the child's report")
        with open(out) as f:
            self.assertEqual(f.read().split(), ["/", "DENIED"])
        # a spec's cwd still wins
        out2 = os.path.join(self.workdir, "cwd2.out")
        d.stub.StartChild(pb.StartChildRequest(spec=sh("pwd > %s; sleep 60" % out2, name="there",
                                                       cwd=self.workdir)), timeout=T)
        wait_for(lambda: os.path.exists(out2) and os.path.getsize(out2) > 0, what="cwd2")
        with open(out2) as f:
            self.assertEqual(f.read().strip(), os.path.realpath(self.workdir))

    def test_control_characters_in_child_logs_are_escaped(self):
        d = self.daemon()
        script = (r"printf 'red \033[31mALERT\033[0m done\n' >&2; "
                  r"printf 'innocent\r2026-01-01T00:00:00.000Z ERROR main: forged line' >&2; "
                  r"printf 'bell\007 nul-free back\\slash\n'")  # exits: the last line has no newline
        d.stub.StartChild(pb.StartChildRequest(spec=sh(script, name="noisy", restart=pb.TEMPORARY)), timeout=T)
        wait_for(lambda: "forged line" in d.read_log() and "bell" in d.read_log(), what="the child's lines")
        d.stop()
        with open(d.log_path, "rb") as f:
            raw = f.read()
        self.assertNotIn(b"\x1b", raw)
        self.assertNotIn(b"\r", raw)
        self.assertNotIn(b"\x07", raw)
        log = raw.decode()
        self.assertIn(r"noisy: red \x1b[31mALERT\x1b[0m done", log)
        self.assertIn(r"noisy: innocent\x0d2026-01-01T00:00:00.000Z ERROR main: forged line", log)
        self.assertIn(r"noisy (stdout): bell\x07 nul-free back\x5cslash", log)
        # the forged line did not become a line of its own
        self.assertFalse([ln for ln in log.splitlines() if ln.startswith("2026-01-01T00:00:00.000Z")])


class RootTest(Base):
    """Switching users and groups (run_as, api_socket_group): Bazel's sandbox (a user
    namespace where only root is mapped) cannot, so //tests/integration:root_test
    runs outside it (local)."""

    def test_unix_socket_group(self):
        if os.geteuid() != 0:
            self.skipTest("needs root")
        sock = os.path.join(self.sockdir, "g.sock")
        d = self.daemon(args=["--listen", "unix:" + sock, "--api-socket-mode", "660",
                              "--api-socket-group", "nogroup"])
        st = os.stat(sock)
        import grp
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_gid), (0o660, grp.getgrnam("nogroup").gr_gid))
        pbg.SupervisorStub(d.channel).Children(pb.ChildrenRequest(), timeout=T)

    def test_run_as_nobody(self):
        if os.geteuid() != 0:
            self.skipTest("run_as needs the daemon to run as root")
        ini = os.path.join(self.workdir, "runas.ini")
        with open(ini, "w") as f:
            f.write("[supervisor:low]\nrun_as = nobody\n")
        d = self.daemon(args=["--config", ini])
        os.chmod(self.sockdir, 0o1777)
        out = os.path.join(self.sockdir, "id.out")  # nobody may write there
        d.stub.StartChild(pb.StartChildRequest(supervisor="low", spec=sh(
            "echo $(id -u) $(id -g) $(id -G) $USER $HOME > %s; cat %s/distsup.db >/dev/null 2>&1 && echo READ >> %s;"
            " sleep 60" % (out, d.data_dir, out), name="low1")), timeout=T)
        wait_for(lambda: os.path.exists(out) and os.path.getsize(out) > 0, what="the child's id")
        time.sleep(0.2)
        import pwd
        nobody = pwd.getpwnam("nobody")
        with open(out) as f:
            words = f.read().split()
        self.assertEqual(words[:3], [str(nobody.pw_uid), str(nobody.pw_gid), str(nobody.pw_gid)])
        self.assertIn("nobody", words)
        self.assertNotIn("READ", words)
        # the default supervisor still runs children as the daemon's user
        out2 = os.path.join(self.sockdir, "id2.out")
        d.stub.StartChild(pb.StartChildRequest(spec=sh("id -u > %s; sleep 60" % out2, name="root1")), timeout=T)
        wait_for(lambda: os.path.exists(out2) and os.path.getsize(out2) > 0, what="root1's id")
        with open(out2) as f:
            self.assertEqual(f.read().strip(), "0")
        # a run_as child still dies with the daemon (a change of credentials clears the
        # parent-death signal unless it is set after it)
        pid = d.stub.WhereIs(pb.WhereIsRequest(supervisor="low", name="low1"), timeout=T).child.os_pid
        self.assertTrue(pid_alive(pid))
        d.kill9()
        wait_for(lambda: not pid_alive(pid), timeout=5, what="the run_as child to die with the daemon")

    def test_run_as_unknown_user_is_refused_at_start(self):
        ini = os.path.join(self.workdir, "bad.ini")
        with open(ini, "w") as f:
            f.write("[supervisor:x]\nrun_as = no-such-user-here\n")
        rc, out = self.run_distsupd("--config", ini)
        self.assertEqual(rc, 2, out)
        self.assertIn("no-such-user-here", out)
        if os.geteuid() == 0:  # and a daemon that is not root cannot switch users
            ini2 = os.path.join(self.sockdir, "nobody.ini")
            with open(ini2, "w") as f:
                f.write("[supervisor:x]\nrun_as = nobody\n")
            os.chmod(self.sockdir, 0o755)
            os.chmod(ini2, 0o644)
            p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", DISTSUPD,
                                "--config", ini2, "--data-dir", os.path.join(self.sockdir, "nd")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
            out = p.stdout.decode()
            self.assertEqual(p.returncode, 2, out)
            self.assertIn("needs distsupd to run as root", out)


if __name__ == "__main__":
    main()
