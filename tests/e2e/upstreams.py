"""Real web frameworks as upstreams (the apps in tests/e2e/upstreams/), for the tests that put
them behind Envoy and ask, for a hostile spelling of a path, which handler the framework itself
served, and whether the token met that handler's requirement.

Every app has the same five handlers, routed by the framework's own router with its default
settings (only the WHATWG app matches prefixes by hand, on the WHATWG URL parser's pathname):

  admin   /admin and everything below /admin/                      requirement "role"
  me      /users/@me and everything below it (a reserved character) requirement "role"
  scoped  /api/private-scoped and everything below it              requirement "role"
  api     /api and everything below /api/ that is not scoped       requirement "authenticated"
  public  every other path (a catch-all, like an SPA fallback)     requirement "none"

Each answers 200 with `x-handler: <name>`, `x-seen-path: <the path as the framework saw it,
every byte outside printable ASCII percent-encoded>`, `x-raw-target: <the request target as it
arrived, path and query, encoded the same way>`, the request's `x-routed-vhost` echoed as
`x-echo-vhost`, and the body `handler <name>\\n`. They bind 127.0.0.1 on a free port, print one
ready line once listening, and log nothing else of a request (requests carry tokens).

  Express    Express 5 (npm, tests/e2e/upstreams/package.json), node express.mjs
  Whatwg     node:http routing on `new URL(req.url, base).pathname`, node whatwg.mjs
  Starlette  Starlette on uvicorn (PyPI, requirements-dev.txt), starlette_app.py
  Flask      Flask on werkzeug's threaded server (PyPI), flask_app.py
  Tomcat     Debian's tomcat10: HandlerServlet.java compiled with javac into a CATALINA_BASE
             of its own, run with `catalina.sh run`

scripts/setup.sh installs the npm and PyPI packages. Tomcat and a JDK are Debian packages
(`apt-get install tomcat10 default-jdk-headless`) the project does not install: without them
Tomcat raises Unavailable. start_all(log_dir) starts every upstream it can and returns
`(started, missing)`: the started ones by name, and for each one that cannot run here the
reason; a test over one upstream passes that reason to compose.skip_unless_required, so it is
skipped with the reason, or fails where REQUIRE_DOCKER=1 says every tool must be there.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from stack import ROOT, Process, Response, free_port

APPS = os.path.join(ROOT, "tests", "e2e", "upstreams")
CATALINA_HOME = "/usr/share/tomcat10"

# The requirement the route of each handler carries.
REQUIREMENTS = {"admin": "role", "me": "role", "scoped": "role", "api": "authenticated", "public": "none"}


class Unavailable(Exception):
    """An upstream cannot be run on this machine; the message says why."""


class Upstream:
    """One app as a child process on a free port, ready once it printed its ready line."""

    name = None

    def __init__(self, log_dir):
        self.port = free_port()
        args = self.command(log_dir)
        self.process = Process(f"upstream-{self.name}", args, log_dir, env=self.env())
        try:
            self.process.wait_for_line(self.ready_line())
        except AssertionError:
            self.process.stop()
            raise

    def command(self, log_dir):
        raise NotImplementedError

    def env(self):
        return None

    def ready_line(self):
        return f"{self.name} upstream ready"

    def stop(self):
        self.process.stop()


class Express(Upstream):
    name = "express"

    def command(self, log_dir):
        if not os.path.isdir(os.path.join(APPS, "node_modules", "express")):
            raise Unavailable("tests/e2e/upstreams/node_modules has no express: run scripts/setup.sh")
        return ["node", os.path.join(APPS, "express.mjs"), "--port", str(self.port)]


class Whatwg(Upstream):
    name = "whatwg"

    def command(self, log_dir):
        return ["node", os.path.join(APPS, "whatwg.mjs"), "--port", str(self.port)]


class Starlette(Upstream):
    name = "starlette"

    def command(self, log_dir):
        return [sys.executable, os.path.join(APPS, "starlette_app.py"), "--port", str(self.port)]


class Flask(Upstream):
    name = "flask"

    def command(self, log_dir):
        return [sys.executable, os.path.join(APPS, "flask_app.py"), "--port", str(self.port)]


SERVER_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!-- One HTTP connector on 127.0.0.1, no shutdown port, no AJP, no access log. -->
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector address="127.0.0.1" port="{port}" protocol="HTTP/1.1"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"/>
    </Engine>
  </Service>
</Server>
"""

# The app's context: Tomcat's jar scanner skips the JVM's class path (every Tomcat and JDK jar,
# scanned for TLDs and web fragments the app does not have), which took about 1 s of the start.
CONTEXT_XML = """<Context><JarScanner scanClassPath="false"/></Context>
"""

# Tomcat's log on the console at WARNING, except Catalina's two lines on how long it took to
# start ("Server startup in [N] milliseconds" is the ready line).
LOGGING_PROPERTIES = """handlers = java.util.logging.ConsoleHandler
.level = WARNING
java.util.logging.ConsoleHandler.level = ALL
java.util.logging.ConsoleHandler.formatter = org.apache.juli.OneLineFormatter
org.apache.catalina.startup.Catalina.level = INFO
"""


class Tomcat(Upstream):
    name = "tomcat"

    def command(self, log_dir):
        catalina = os.path.join(CATALINA_HOME, "bin", "catalina.sh")
        if not os.path.exists(catalina):
            raise Unavailable(f"no {catalina} (apt-get install tomcat10)")
        if not shutil.which("javac"):
            raise Unavailable("no javac (apt-get install default-jdk-headless)")
        self.base = tempfile.mkdtemp(prefix="tomcat-base-", dir=log_dir)
        conf, root = os.path.join(self.base, "conf"), os.path.join(self.base, "webapps", "ROOT")
        classes = os.path.join(root, "WEB-INF", "classes")
        for folder in (conf, classes, os.path.join(root, "META-INF"),
                       *(os.path.join(self.base, d) for d in ("logs", "temp", "work"))):
            os.makedirs(folder)
        _write(os.path.join(conf, "server.xml"), SERVER_XML.format(port=self.port))
        _write(os.path.join(conf, "logging.properties"), LOGGING_PROPERTIES)
        # Tomcat's global web.xml (its default servlet, JSP servlet and welcome files), as installed.
        shutil.copy(os.path.join(CATALINA_HOME, "etc", "web.xml"), conf)
        _write(os.path.join(root, "META-INF", "context.xml"), CONTEXT_XML)
        shutil.copy(os.path.join(APPS, "tomcat", "web.xml"), os.path.join(root, "WEB-INF"))
        servlet_api = os.path.join(CATALINA_HOME, "lib", "servlet-api.jar")
        javac = subprocess.run(["javac", "--release", "17", "-cp", servlet_api, "-d", classes,
                                os.path.join(APPS, "tomcat", "HandlerServlet.java")],
                               capture_output=True, text=True, timeout=120)
        if javac.returncode != 0:
            raise AssertionError(f"javac failed ({javac.returncode}):\n{javac.stderr}")
        return [catalina, "run"]

    def env(self):
        return dict(os.environ, CATALINA_HOME=CATALINA_HOME, CATALINA_BASE=self.base)

    def ready_line(self):
        return "Server startup in"


ALL = (Express, Whatwg, Starlette, Flask, Tomcat)


def start_all(log_dir):
    """Starts every upstream that can run here: `({name: upstream}, {name: why not})`. One that
    fails to start stops the others and raises."""
    started, missing = {}, {}
    try:
        for cls in ALL:
            try:
                started[cls.name] = cls(log_dir)
            except Unavailable as err:
                missing[cls.name] = str(err)
    except BaseException:
        for upstream in started.values():
            upstream.stop()
        raise
    return started, missing


def raw_request(port, target, method="GET", header_lines=()):
    """One request written byte for byte (the target unnormalized, unvalidated) with
    `Connection: close`, read to the end: any framing (Content-Length, chunked, or none)."""
    request = "\r\n".join([f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
                           *header_lines]) + "\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_block = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in
               (line.partition(":") for line in header_block)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Response(int(status_line.split()[1]), headers, body.decode("utf-8", "replace"))


def _dechunk(data):
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2:]


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
