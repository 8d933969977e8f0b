// Express 5 as an upstream behind Envoy: five handlers routed by Express's own router
// (path-to-regexp v8), with Express's default settings (case-insensitive, non-strict).
// Each handler answers 200 with `x-handler: <name>` and `x-seen-path: <req.path>`, the path
// Express matched its routes against. See tests/e2e/upstreams.py.
//
//     node tests/e2e/upstreams/express.mjs --port 8001
import express from 'express';

const port = Number(process.argv[process.argv.indexOf('--port') + 1]);

// Every byte outside printable ASCII percent-encoded. Node reads the request target one byte
// per char (latin1), so latin1 gives back the bytes that came in.
function headerSafe(text) {
  return [...Buffer.from(text, 'latin1')]
    .map((b) => (b >= 0x21 && b <= 0x7e ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`))
    .join('');
}

function handler(name) {
  return (req, res) => {
    res.set('x-handler', name);
    res.set('x-seen-path', headerSafe(req.path));
    res.set('x-raw-target', headerSafe(req.originalUrl));
    const vhost = req.get('x-routed-vhost');
    if (vhost !== undefined) res.set('x-echo-vhost', vhost);
    res.type('text/plain').send(`handler ${name}\n`);
  };
}

const app = express();
app.all(['/admin', '/admin/*splat'], handler('admin'));
app.all(['/users/@me', '/users/@me/*splat'], handler('me'));
app.all(['/api/private-scoped', '/api/private-scoped/*splat'], handler('scoped'));
app.all(['/api', '/api/*splat'], handler('api'));
app.all('/{*splat}', handler('public'));
// Errors (a path that does not percent-decode, say) answered with their status, without the
// stack trace Express would print.
app.use((err, req, res, next) => res.status(err.status ?? 500).type('text/plain').send(`${err.status ?? 500}\n`));

app.listen(port, '127.0.0.1', () => console.log(`express upstream ready on ${port}`));
