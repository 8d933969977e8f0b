// A fast stand-in issuer for the memory run (bench/memory.py): answers every
// POST (the introspection call) with active:true for any token, ZITADEL-shaped,
// expiring in an hour; GET /_stats → {"introspections": N}. Loopback only.
// It checks nothing, not even the client's credentials: never use it but in
// the benchmark.
//   node bench/stub-issuer.mjs PORT ISSUER_URL AUDIENCE
import { createServer } from 'node:http';

const [port, issuer, audience] = process.argv.slice(2);
let introspections = 0;

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/_stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ introspections }));
    return;
  }
  req.resume(); // the form body (token=...) is not needed
  req.on('end', () => {
    introspections += 1;
    const now = Math.floor(Date.now() / 1000);
    const body = JSON.stringify({
      active: true,
      scope: 'openid',
      client_id: 'reader-opaque',
      token_type: 'Bearer',
      exp: now + 3600,
      iat: now,
      nbf: now,
      sub: '300000000000000011',
      aud: [audience, '300000000000000002@demo'],
      iss: issuer,
      'urn:zitadel:iam:org:project:roles': { 'read:messages': { '300000000000000000': 'demo.localhost' } },
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(port), '127.0.0.1', () => { console.log(`stub issuer ready ${issuer}`); });
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
