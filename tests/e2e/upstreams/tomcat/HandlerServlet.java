// Tomcat as an upstream behind Envoy: one servlet class, one instance per handler (its name
// from the init-param `handler`), mapped with Tomcat's own url-patterns in web.xml. Each
// answers 200 with `x-handler: <name>` and `x-seen-path: <servlet path + path info>`, the
// normalized, decoded path Tomcat mapped the request on. See tests/e2e/upstreams.py.
package upstream;

import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;

public class HandlerServlet extends HttpServlet {
    private String name;

    @Override
    public void init() {
        name = getInitParameter("handler");
    }

    // service(), not doGet() and friends: every method reaches the handler.
    @Override
    protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
        String seen = req.getServletPath() + (req.getPathInfo() == null ? "" : req.getPathInfo());
        resp.setHeader("x-handler", name);
        resp.setHeader("x-seen-path", headerSafe(seen));
        String query = req.getQueryString();
        resp.setHeader("x-raw-target", headerSafe(req.getRequestURI() + (query == null ? "" : "?" + query)));
        String vhost = req.getHeader("x-routed-vhost");
        if (vhost != null) {
            resp.setHeader("x-echo-vhost", vhost);
        }
        byte[] body = ("handler " + name + "\n").getBytes(StandardCharsets.UTF_8);
        resp.setContentType("text/plain");
        resp.setContentLength(body.length);
        resp.getOutputStream().write(body);
    }

    // Every byte outside printable ASCII percent-encoded.
    static String headerSafe(String path) {
        StringBuilder out = new StringBuilder();
        for (byte b : path.getBytes(StandardCharsets.UTF_8)) {
            int c = b & 0xff;
            out.append(c >= 0x21 && c <= 0x7e ? String.valueOf((char) c) : String.format("%%%02X", c));
        }
        return out.toString();
    }
}
