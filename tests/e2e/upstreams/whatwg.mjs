// An app that routes on the WHATWG URL parser's reading of the path: a plain node:http server
// that takes `new URL(req.url, base).pathname` (which resolves `..` and `%2e%2e`, keeps empty
// segments, and reads `//x/...` as a host) and routes on it with a segment-aware prefix match.
// Each handler answers 200 with `x-handler: <name>` and `x-seen-path: <that pathname>`.
// See tests/e2e/upstreams.py.
//
//     node tests/e2e/upstreams/whatwg.mjs --port 8002
import http from 'node:http';

const port = Number(process.argv[process.argv.indexOf('--port') + 1]);

// First match wins: the role route under /api comes before /api.
const ROUTES = [['/admin', 'admin'], ['/users/@me', 'me'], ['/api/private-scoped', 'scoped'], ['/api', 'api']];

// Every byte outside printable ASCII percent-encoded (a pathname is ASCII already; latin1 is
// for symmetry with express.mjs).
function headerSafe(text) {
  return [...Buffer.from(text, 'latin1')]
    .map((b) => (b >= 0x21 && b <= 0x7e ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`))
    .join('');
}

// `/admin` matches `/admin` and `/admin/...`, not `/adminx`.
function route(pathname) {
  const hit = ROUTES.find(([prefix]) => pathname === prefix || pathname.startsWith(`${prefix}/`));
  return hit ? hit[1] : 'public';
}

http.createServer((req, res) => {
  let pathname;
  try {
    pathname = new URL(req.url, 'http://upstream.invalid').pathname;
  } catch {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('400\n');
    return;
  }
  const name = route(pathname);
  const headers = { 'content-type': 'text/plain', 'x-handler': name, 'x-seen-path': headerSafe(pathname),
    'x-raw-target': headerSafe(req.url) };
  if (req.headers['x-routed-vhost'] !== undefined) headers['x-echo-vhost'] = req.headers['x-routed-vhost'];
  const body = `handler ${name}\n`;
  headers['content-length'] = Buffer.byteLength(body);
  res.writeHead(200, headers).end(body);
}).listen(port, '127.0.0.1', () => console.log(`whatwg upstream ready on ${port}`));
