"""The container and deployment files, checked on a host without a Docker engine.

- Dockerfile build stage: every package it installs exists (apt-cache) and is one
  tools/setup.sh installs too; its build RUN step runs here, as a script, on a copy
  of the build context (what .dockerignore lets through), with the stage's ENV.
- Runtime stage: every COPY --from=build source exists in that output; every shared
  library the built binaries and strategies load (ldd) comes from a package the
  runtime stage installs or from one those depend on; the image's ENTRYPOINT + CMD
  start the built daemon (with the token file the image expects), its HEALTHCHECK
  command reports healthy (exit 0) from the health listener without a token, then
  unhealthy once the daemon is gone; the API refuses a client without the token; a non-root USER, a VOLUME for the data dir.
- deploy/kubernetes: the YAML parses; the API listens on the pod's loopback with a
  token from a Secret (copied 0600 by an init container; the app gets the same Secret);
  the probes are gRPC probes on the health listener; ports, the headless Service, seeds
  and node names agree; every distsupd flag used exists in `distsupd --help`.
- deploy/systemd/distsupd.service: ExecStart's flags exist; the data dir is the
  StateDirectory; the API is a 0660 unix socket of the service's group.

The repo is found through this file's real path (Bazel's runfiles link into it)."""

import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.realpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "clients"))
import clientharness as h  # noqa: E402

try:
    import yaml
except ImportError:  # a clear failure, not a skip
    yaml = None

ARCH_LIBDIRS = ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib", "/lib"]
# Packages every Debian image has (Priority: required), which runtime stages need not name.
BASE_IMAGE = {"libc6", "libgcc-s1", "gcc-12-base"}


# ---- Dockerfile parsing ----------------------------------------------------------------

def dockerfile_stages(path):
    """[(name, [(INSTRUCTION, argument text)])] with continuation lines joined."""
    stages = []
    logical = ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not logical and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                logical += line[:-1] + " "
                continue
            logical += line
            instr, _, arg = logical.strip().partition(" ")
            instr = instr.upper()
            arg = arg.strip()
            logical = ""
            if instr == "FROM":
                m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", arg, re.I)
                stages.append((m.group(2) or m.group(1), [("FROM", m.group(1))]))
            else:
                stages[-1][1].append((instr, arg))
    return stages


def apt_packages(run_text):
    """The package names of the `apt-get install` commands in a RUN line."""
    pkgs = []
    for cmd in re.split(r"&&|;|\|\|", run_text):
        words = shlex.split(cmd)
        if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
            pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def env_of(instrs):
    env = {}
    for instr, arg in instrs:
        if instr == "ENV":
            if "=" in arg.split()[0]:
                for kv in shlex.split(arg):
                    k, _, v = kv.partition("=")
                    env[k] = v
            else:
                k, _, v = arg.partition(" ")
                env[k] = v.strip()
    return env


def exec_form(arg):
    arg = arg.strip()
    if arg.startswith("["):
        return json.loads(arg)
    return ["/bin/sh", "-c", arg]


def setup_packages():
    text = open(os.path.join(REPO, "tools", "setup.sh")).read()
    m = re.search(r"PACKAGES=\((.*?)\)", text, re.S)
    return set(m.group(1).split())


# ---- the build context -----------------------------------------------------------------

def dockerignore_patterns():
    pats = []
    with open(os.path.join(REPO, ".dockerignore")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                pats.append(line.rstrip("/"))
    return pats


def ignored(rel, pats):
    for p in pats:
        if p.startswith("!"):
            continue
        if fnmatch.fnmatch(rel, p):
            return True
        if p.startswith("**/") and (fnmatch.fnmatch(rel, p[3:]) or
                                     fnmatch.fnmatch(os.path.basename(rel), p[3:])):
            return True
    return False


def copy_context(dst):
    """Copies the repo as `COPY . .` would see it: minus what .dockerignore names."""
    pats = dockerignore_patterns()
    for root, dirs, files in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        rel_root = "" if rel_root == "." else rel_root
        dirs[:] = [d for d in dirs if not ignored(os.path.join(rel_root, d), pats)]
        os.makedirs(os.path.join(dst, rel_root), exist_ok=True)
        for name in files:
            rel = os.path.join(rel_root, name)
            if ignored(rel, pats):
                continue
            src = os.path.join(root, name)
            if os.path.islink(src) and not os.path.exists(src):
                continue
            shutil.copy2(src, os.path.join(dst, rel), follow_symlinks=True)


# ---- libraries and packages ------------------------------------------------------------

def needed_libs(binary):
    """The resolved paths of the shared libraries binary loads (ldd); fails on any
    library ldd cannot find."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    libs = []
    for line in out.stdout.splitlines():
        if "=>" in line:
            name, _, rest = line.strip().partition("=>")
            rest = rest.strip()
            assert not rest.startswith("not found"), "%s: %s not found" % (binary, name.strip())
            libs.append(rest.split()[0])
    return libs


def package_of(lib):
    """The Debian package that ships a library path (merged /usr aware)."""
    candidates = {lib, os.path.realpath(lib)}
    for p in list(candidates):
        if p.startswith("/usr/"):
            candidates.add(p[4:])
        else:
            candidates.add("/usr" + p)
    for c in candidates:
        r = subprocess.run(["dpkg-query", "-S", c], capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return r.stdout.split(":")[0].strip()
    name = os.path.basename(lib)
    r = subprocess.run(["dpkg-query", "-S", "*/" + name], capture_output=True, text=True,
                       timeout=60)
    if r.returncode == 0:
        return r.stdout.splitlines()[0].split(":")[0].strip()
    return None


def dependency_closure(pkgs):
    r = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                        "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"]
                       + list(pkgs), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return {l.strip() for l in r.stdout.splitlines() if l and not l.startswith(" ")}


class Built:
    """The Dockerfile's build stage, run once for the whole test class."""
    out = None
    log = ""
    error = None


def run_build_stage(stages, workdir):
    """Runs the build stage's `deploy/docker/build.sh` RUN line on a copy of the context."""
    build = dict(stages)["build"]
    ctx = os.path.join(workdir, "src")
    copy_context(ctx)
    out = os.path.join(workdir, "out")
    runs = [a for i, a in build if i == "RUN" and "build.sh" in a]
    assert len(runs) == 1, runs
    # The image's /out is this test's out dir; the rest of the line runs as written.
    script = runs[0].replace("/out", out)
    env = dict(os.environ)
    env.update(env_of(build))
    user_root = os.path.join(workdir, "bazel-root")
    env["DISTSUP_BAZEL_STARTUP"] = ("--output_user_root=%s --max_idle_secs=30" % user_root)
    env["HOME"] = workdir
    for k in [k for k in env if k.startswith("TEST_") or k.startswith("BUILD_")]:
        env.pop(k)  # the outer `bazel test` must not leak into the inner Bazel
    try:
        r = subprocess.run(["/bin/sh", "-c", script], cwd=ctx, env=env, capture_output=True,
                           text=True, timeout=1500)
    finally:
        subprocess.run(["bazel", "--output_user_root=%s" % user_root, "shutdown"], cwd=ctx,
                       env=env, capture_output=True, timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == 0, "the build stage failed:\n" + log[-8000:]
    return out, log


class ContainerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="distsup-container-",
                                       dir=os.environ.get("TEST_TMPDIR"))
        cls.stages = dockerfile_stages(os.path.join(REPO, "Dockerfile"))
        cls.procs = []
        try:
            Built.out, Built.log = run_build_stage(cls.stages, cls.workdir)
        except AssertionError as e:
            Built.error = str(e)

    @classmethod
    def tearDownClass(cls):
        for p in cls.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def built(self):
        if Built.error:
            self.fail(Built.error)
        return Built.out

    @property
    def runtime(self):
        return self.stages[-1][1]

    # -- build stage
    def test_stages(self):
        names = [n for n, _ in self.stages]
        self.assertEqual(len(names), 2, names)
        self.assertEqual(names[0], "build")
        self.assertEqual(dict(self.stages)["build"][0], ("FROM", "debian:12"))
        self.assertEqual(self.runtime[0], ("FROM", "debian:12-slim"))

    def test_build_packages_exist_and_match_setup(self):
        build = dict(self.stages)["build"]
        pkgs = [p for i, a in build if i == "RUN" for p in apt_packages(a)]
        self.assertIn("bazel-bootstrap", pkgs)
        self.assertIn("libgrpc-dev", pkgs)
        setup = setup_packages()
        for p in pkgs:
            r = subprocess.run(["apt-cache", "show", "--no-all-versions", p],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, "no Debian package %s: %s" % (p, r.stderr))
            self.assertIn("Package: " + p, r.stdout)
            self.assertIn(p, setup, "%s is installed by the Dockerfile but not by tools/setup.sh" % p)

    def test_build_stage_output(self):
        out = self.built()
        for rel in ["bin/distsupd", "bin/distsupctl"]:
            self.assertTrue(os.access(os.path.join(out, rel), os.X_OK), rel)
        sos = sorted(os.listdir(os.path.join(out, "lib", "distsup", "strategies")))
        build = os.path.join(REPO, "strategies", "BUILD")
        if os.path.exists(build) and re.search(r'name = "\w+\.so"', open(build).read()):
            self.assertTrue(sos, "strategies/BUILD has shared objects, none were gathered")
        for so in sos:
            self.assertTrue(so.endswith(".so"), so)
        self.assertRegex(Built.log, r"build\.sh: (distsupd distsupctl|distsupctl distsupd) ")

    # -- runtime stage
    def test_runtime_copies_exist(self):
        out = self.built()
        copies = [a for i, a in self.runtime if i == "COPY"]
        self.assertTrue(copies)
        for arg in copies:
            words = arg.split()
            self.assertTrue(words[0].startswith("--from=build"), arg)
            for src in words[1:-1]:
                self.assertTrue(src.startswith("/out/"), src)
                local = os.path.join(out, src[len("/out/"):])
                self.assertTrue(os.path.exists(local), "COPY source %s is not built" % src)

    def test_runtime_provides_every_library(self):
        out = self.built()
        pkgs = [p for i, a in self.runtime if i == "RUN" for p in apt_packages(a)]
        self.assertTrue(pkgs)
        have = dependency_closure(pkgs) | BASE_IMAGE
        files = [os.path.join(out, "bin", "distsupd"), os.path.join(out, "bin", "distsupctl")]
        files += glob.glob(os.path.join(out, "lib", "distsup", "strategies", "*.so"))
        missing = {}
        for f in files:
            for lib in needed_libs(f):
                pkg = package_of(lib)
                if pkg is None or pkg.split(":")[0] not in have:
                    missing.setdefault(os.path.basename(f), []).append("%s (%s)" % (lib, pkg))
        self.assertEqual(missing, {}, "libraries the runtime stage does not install")
        # Nothing the binaries do not need: each named package ships a loaded library.
        used = {package_of(lib).split(":")[0] for f in files for lib in needed_libs(f)}
        for p in pkgs:
            self.assertIn(p, used, "the runtime stage installs %s, which no binary loads" % p)

    def test_runtime_user_volume_ports(self):
        instrs = dict((i, a) for i, a in self.runtime if i in ("USER", "VOLUME", "EXPOSE",
                                                               "WORKDIR"))
        user = instrs["USER"].split(":")[0]
        self.assertNotIn(user, ("root", "0"))
        run = " ".join(a for i, a in self.runtime if i == "RUN")
        self.assertRegex(run, r"useradd\b.*\b%s\b" % re.escape(user))
        entry = exec_form(dict((i, a) for i, a in self.runtime if i == "ENTRYPOINT")["ENTRYPOINT"])
        data_dir = entry[entry.index("--data-dir") + 1]
        self.assertEqual(json.loads(instrs["VOLUME"]), [data_dir])
        self.assertRegex(run, r"install -d -o %s\b.*%s" % (user, re.escape(data_dir)))
        self.assertEqual(instrs["EXPOSE"].split(), ["50051", "50052", "8081", "9464"])

    def test_entrypoint_runs_and_healthcheck_works(self):
        out = self.built()
        instrs = dict((i, a) for i, a in self.runtime if i in ("ENTRYPOINT", "CMD", "HEALTHCHECK"))
        env = env_of(self.runtime)
        argv = exec_form(instrs["ENTRYPOINT"]) + exec_form(instrs["CMD"])
        self.assertEqual(argv[0], "distsupd")
        # The image's paths, mapped onto the build output and a scratch dir.
        m = {"/usr/lib/distsup/strategies": os.path.join(out, "lib", "distsup", "strategies"),
             "/var/lib/distsup": os.path.join(self.workdir, "data")}
        # The API token the image expects, as a 0600 file.
        token_path = env["DISTSUP_TOKEN_FILE"]
        token = os.path.join(self.workdir, "api.token")
        with open(token, "w") as f:
            f.write("container-test-token\n")
        os.chmod(token, 0o600)
        m[token_path] = token
        argv = [os.path.join(out, "bin", "distsupd")] + [m.get(a, a) for a in argv[1:]]
        # The API is reachable from outside the container, so it needs the token ...
        listen = argv[argv.index("--listen") + 1]
        self.assertEqual(listen, "0.0.0.0:50051")
        self.assertEqual(argv[argv.index("--api-token-file") + 1], token)
        self.assertEqual(env["DISTSUP_ADDR"], "127.0.0.1:50051")
        # ... and health is served without it on its own listener.
        health = argv[argv.index("--health-listen") + 1]
        self.assertEqual(health, "0.0.0.0:8081")
        # Here: loopback, free ports (50051 and 8081 may be in use on this machine).
        hport = h.free_port()
        argv[argv.index("--listen") + 1] = "127.0.0.1:0"
        argv[argv.index("--health-listen") + 1] = "127.0.0.1:%d" % hport
        port_file = os.path.join(self.workdir, "port")
        log = open(os.path.join(self.workdir, "daemon.log"), "wb")
        p = subprocess.Popen(argv + ["--port-file", port_file], stdout=log, stderr=log)
        self.procs.append(p)
        port = h.wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(),
                          10, what="the daemon's port")
        hc = instrs["HEALTHCHECK"]
        self.assertIn("CMD", hc)
        cmd = exec_form(hc[hc.index("CMD") + 3:])
        self.assertEqual(cmd[0], "distsupctl")
        cmd[0] = os.path.join(out, "bin", "distsupctl")
        self.assertEqual(cmd[cmd.index("--addr") + 1], "127.0.0.1:8081")  # the health listener
        cmd[cmd.index("--addr") + 1] = "127.0.0.1:%d" % hport
        henv = {k: v for k, v in os.environ.items() if not k.startswith("DISTSUP_")}  # no token needed
        r = subprocess.run(cmd, env=henv, capture_output=True, text=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (0, "SERVING\n"), r.stderr)
        # Without the token the API refuses; with the image's DISTSUP_TOKEN_FILE it serves,
        # and a started child proves the strategies dir and data dir work too.
        ctl = [cmd[0], "--addr", "127.0.0.1:%s" % port]
        start = ctl + ["start", "s", "--protocol", "none", "--kill-immediately", "--", "sleep", "30"]
        r = subprocess.run(start, env=henv, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 10 + 16, r.stderr)  # UNAUTHENTICATED
        r = subprocess.run(start, env=dict(henv, DISTSUP_TOKEN_FILE=token), capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(20), 0)
        log.close()
        r = subprocess.run(cmd, env=henv, capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)  # unhealthy once the daemon is gone

    # -- Kubernetes
    def k8s_docs(self):
        self.assertIsNotNone(yaml, "python3-yaml is needed to check the manifests "
                                   "(Debian package python3-yaml)")
        docs = []
        for path in sorted(glob.glob(os.path.join(REPO, "deploy", "kubernetes", "*.yaml"))):
            with open(path) as f:
                for d in yaml.safe_load_all(f):
                    if d:
                        self.assertIn("kind", d, path)
                        self.assertIn("apiVersion", d, path)
                        docs.append((os.path.basename(path), d))
        return docs

    def daemon_flags(self):
        r = subprocess.run([os.path.join(self.built(), "bin", "distsupd"), "--help"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = re.search(r"--listen HOST:PORT\s+gRPC address \(default [\d.]+:(\d+)", r.stdout)
        self.assertTrue(m, r.stdout)
        return set(re.findall(r"(--[a-z][a-z-]+)", r.stdout)), int(m.group(1))

    def check_distsupd_container(self, pod_spec, where):
        flags, default_port = self.daemon_flags()
        cs = {c["name"]: c for c in pod_spec["containers"]}
        self.assertIn("distsupd", cs, where)
        d = cs["distsupd"]
        args = d.get("args", [])
        opts = {}
        for a in args:
            self.assertTrue(a.startswith("--") and "=" in a, "%s: write args as --flag=value: %s"
                            % (where, a))
            k, _, v = a.partition("=")
            self.assertIn(k, flags, "%s: distsupd has no flag %s" % (where, k))
            opts[k] = v
        ports = {p["name"]: p["containerPort"] for p in d["ports"]}
        # The API: on the pod's loopback only (the app shares it), with a token ...
        grpc_port = int(opts["--listen"].rsplit(":", 1)[1])
        self.assertEqual(opts["--listen"].rsplit(":", 1)[0], "127.0.0.1", where)
        self.assertEqual(grpc_port, default_port)
        self.assertNotIn("grpc", ports, "%s: the API port is not for the pod's network" % where)
        token_file = opts["--api-token-file"]
        self.assertNotIn("--insecure-api", opts)
        # ... and the probes on the health listener, which the kubelet reaches on the pod IP.
        self.assertEqual(opts["--health-listen"].rsplit(":", 1)[0], "0.0.0.0", where)
        health_port = int(opts["--health-listen"].rsplit(":", 1)[1])
        self.assertEqual(ports["health"], health_port)
        for probe in ("livenessProbe", "readinessProbe"):
            self.assertIn(probe, d, where)
            g = d[probe].get("grpc")
            self.assertIsNotNone(g, "%s: %s is not a gRPC probe" % (where, probe))
            port = g["port"]
            self.assertEqual(ports.get(port, port), health_port, "%s: %s port" % (where, probe))
            self.assertEqual(g.get("service", ""), "")  # distsupd's whole-server status
        # The token file: made 0600 by an init container from the Secret the app reads.
        inits = pod_spec.get("initContainers", [])
        made = [c for c in inits if re.search(r"install -m 0600 \S+ %s\b" % re.escape(token_file),
                                              " ".join(c.get("command", [])))]
        self.assertEqual(len(made), 1, "%s: no init container writes %s with mode 0600" % (where, token_file))
        vols = {v["name"]: v for v in pod_spec["volumes"]}
        src_mount = re.search(r"install -m 0600 (\S+) %s" % re.escape(token_file),
                              " ".join(made[0]["command"])).group(1)
        secret_vol = [m["name"] for m in made[0]["volumeMounts"] if src_mount.startswith(m["mountPath"] + "/")]
        self.assertEqual(len(secret_vol), 1, where)
        token_secret = vols[secret_vol[0]]["secret"]["secretName"]
        self.assertTrue(any(token_file.startswith(m["mountPath"] + "/") for m in d.get("volumeMounts", [])),
                        "%s: %s is not on a volume of the distsupd container" % (where, token_file))
        env_names = {e["name"] for e in d.get("env", [])}
        for a in args:
            for var in re.findall(r"\$\(([A-Z_]+)\)", a):
                self.assertIn(var, env_names, "%s: $(%s) is not defined" % (where, var))
        apps = [c for n, c in cs.items() if n != "distsupd"]
        self.assertTrue(apps, "%s: no app container beside the sidecar" % where)
        for c in apps:
            env = {e["name"]: e for e in c.get("env", [])}
            self.assertEqual(env["DISTSUP_ADDR"].get("value"), "127.0.0.1:%d" % grpc_port, where)
            ref = env["DISTSUP_TOKEN"]["valueFrom"]["secretKeyRef"]
            self.assertEqual(ref["name"], token_secret, "%s: the app's token is another Secret" % where)
        mounts = {m["mountPath"] for m in d.get("volumeMounts", [])}
        self.assertIn("/var/lib/distsup", mounts, "%s: the data dir is not a volume" % where)
        return opts, ports

    def check_scrape(self, template, opts, ports, where):
        """The metrics listener on the pod IP, its port named, the pod annotated for scraping."""
        self.assertEqual(opts["--metrics-listen"].rsplit(":", 1)[0], "0.0.0.0", where)
        port = int(opts["--metrics-listen"].rsplit(":", 1)[1])
        self.assertEqual(ports["metrics"], port, where)
        ann = template["metadata"].get("annotations", {})
        self.assertEqual(ann.get("prometheus.io/scrape"), "true", where)
        self.assertEqual(ann.get("prometheus.io/port"), str(port), where)
        self.assertEqual(ann.get("prometheus.io/path"), "/metrics", where)

    def test_kubernetes_sidecar_cluster(self):
        docs = self.k8s_docs()
        by_kind = {}
        for name, d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        sts = by_kind["StatefulSet"][0]
        svc = [s for s in by_kind["Service"] if s["spec"].get("clusterIP") == "None"]
        self.assertEqual(len(svc), 1, "one headless Service")
        svc = svc[0]
        spec = sts["spec"]
        self.assertEqual(spec["serviceName"], svc["metadata"]["name"])
        sel = svc["spec"]["selector"]
        labels = spec["template"]["metadata"]["labels"]
        self.assertTrue(all(labels.get(k) == v for k, v in sel.items()), "selector")
        self.assertTrue(svc["spec"].get("publishNotReadyAddresses"))
        opts, ports = self.check_distsupd_container(spec["template"]["spec"], "statefulset")
        self.check_scrape(spec["template"], opts, ports, "statefulset")
        peer_port = int(opts["--peer-listen"].rsplit(":", 1)[1])
        self.assertEqual(ports["peer"], peer_port)
        svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
        self.assertEqual(svc_ports["peer"]["port"], peer_port)
        self.assertIn(svc_ports["peer"].get("targetPort", peer_port), ("peer", peer_port))
        name, service = sts["metadata"]["name"], svc["metadata"]["name"]
        seeds = opts["--seeds"].split(",")
        self.assertEqual(len(seeds), spec["replicas"])
        for i, s in enumerate(seeds):
            self.assertEqual(s, "%s-%d.%s.$(POD_NAMESPACE).svc.cluster.local:%d"
                             % (name, i, service, peer_port))
        self.assertEqual(opts["--peer-advertise"],
                         "$(POD_NAME).%s.$(POD_NAMESPACE).svc.cluster.local:%d" % (service, peer_port))
        self.assertEqual(opts["--node-name"], "$(POD_NAME)")
        # Keys and trust come from mounted volumes.
        mounts = {m["mountPath"]: m["name"] for m in
                  [c for c in spec["template"]["spec"]["containers"]
                   if c["name"] == "distsupd"][0]["volumeMounts"]}
        for flag in ("--key-file", "--trust-file"):
            path = opts[flag]
            self.assertTrue(any(path.startswith(m + "/") for m in mounts), "%s %s" % (flag, path))
        cms = {c["metadata"]["name"] for c in by_kind.get("ConfigMap", [])}
        vols = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
        self.assertIn(vols["trust"]["configMap"]["name"], cms)
        self.assertEqual(spec["template"]["spec"]["securityContext"]["runAsUser"], 10001)

    def test_app_container_hosts_the_workers(self):
        """statefulset.yaml: the app container is the counter host (hosted children,
        docs/hosting.md), built by deploy/docker/counter-host.Dockerfile from files of
        this repo, with Debian packages that exist; distsupd's image has no workers."""
        path = os.path.join(REPO, "deploy", "docker", "counter-host.Dockerfile")
        stages = dockerfile_stages(path)
        self.assertEqual(len(stages), 1)
        instrs = stages[0][1]
        self.assertEqual(instrs[0], ("FROM", "debian:12-slim"))
        pkgs = [p for i, a in instrs if i == "RUN" for p in apt_packages(a)]
        self.assertIn("python3-grpcio", pkgs)
        for p in pkgs:
            r = subprocess.run(["apt-cache", "show", "--no-all-versions", p], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, "no Debian package %s: %s" % (p, r.stderr))
        dests = {}
        for i, a in instrs:
            if i == "COPY":
                src, dst = shlex.split(a)
                self.assertTrue(os.path.exists(os.path.join(REPO, src)), src)
                dests[dst] = src
        entry = exec_form([a for i, a in instrs if i == "ENTRYPOINT"][-1])
        self.assertIn(entry[-1], dests, "the entrypoint runs a file the image has")
        self.assertIn("examples/python_counter_host/counter_host.py", dests.values())
        user = [a for i, a in instrs if i == "USER"][-1]
        self.assertNotIn(user.split(":")[0], ("root", "0"))
        env = env_of(instrs)
        self.assertEqual(env["PYTHONPATH"], "/opt/distsup/python")
        self.assertIn("/opt/distsup/python/distsup/", dests)
        # the manifest runs that image as the app, with arguments the host app takes
        docs = self.k8s_docs()
        sts = [d for _, d in docs if d["kind"] == "StatefulSet"][0]
        cs = {c["name"]: c for c in sts["spec"]["template"]["spec"]["containers"]}
        app = cs["app"]
        self.assertEqual(app["image"], "distsup-counter-host:latest")
        args = [re.sub(r"\$\(POD_NAME\)", "distsup-0", a) for a in app.get("args", [])]
        self.assertIn("--kind", args)
        r = subprocess.run([h.PYTHON, os.path.join(REPO, "examples", "python_counter_host", "counter_host.py")] + args +
                           ["--help"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PYTHONPATH=os.path.join(REPO, "clients", "python")))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--kind", r.stdout)
        # distsupd's own image copies no worker (examples/) into the runtime stage
        runtime = self.stages[-1][1]
        for i, a in runtime:
            if i == "COPY":
                self.assertNotIn("examples", a)

    def test_kubernetes_single_node_deployment(self):
        docs = self.k8s_docs()
        deps = [d for _, d in docs if d["kind"] == "Deployment"]
        self.assertEqual(len(deps), 1)
        opts, ports = self.check_distsupd_container(deps[0]["spec"]["template"]["spec"], "deployment")
        self.check_scrape(deps[0]["spec"]["template"], opts, ports, "deployment")
        self.assertNotIn("--peer-listen", opts)

    # -- systemd
    def test_systemd_unit(self):
        path = os.path.join(REPO, "deploy", "systemd", "distsupd.service")
        sections, cur = {}, None
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("["):
                    cur = sections.setdefault(line.strip("[]"), {})
                    continue
                k, _, v = line.partition("=")
                cur.setdefault(k, []).append(v)
        self.assertEqual(set(sections), {"Unit", "Service", "Install"})
        svc = sections["Service"]
        words = shlex.split(svc["ExecStart"][0])
        self.assertEqual(words[0], "/usr/local/bin/distsupd")
        flags, default_port = self.daemon_flags()
        for w in words[1:]:
            if w.startswith("--"):
                self.assertIn(w, flags, "distsupd has no flag %s" % w)
        self.assertEqual(words[words.index("--data-dir") + 1],
                         "/var/lib/" + svc["StateDirectory"][0])
        # The API: a unix socket in the RuntimeDirectory, for the service's group only.
        self.assertEqual(words[words.index("--listen") + 1], "unix:/run/%s/api.sock" % svc["RuntimeDirectory"][0])
        self.assertEqual(words[words.index("--api-socket-mode") + 1], "0660")
        self.assertEqual([words[words.index("--api-socket-group") + 1]], svc["Group"])
        self.assertEqual(svc["User"], ["distsup"])
        self.assertIn("multi-user.target", sections["Install"]["WantedBy"][0])
        sysusers = open(os.path.join(REPO, "deploy", "systemd", "distsup.sysusers")).read()
        self.assertRegex(sysusers, r"(?m)^u distsup ")
        if shutil.which("systemd-analyze"):
            r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True,
                               text=True, timeout=60)
            self.assertNotIn("Unknown key", r.stderr)
            self.assertNotIn("Unknown section", r.stderr)


if __name__ == "__main__":
    h.main()
