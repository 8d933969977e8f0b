// For case (d) of bench/bench.py, Envoy's native jwt_authn: makes a fresh
// RS256 key pair in memory and writes to OUT_DIR only the public JWKS
// (jwks.json) and one long-lived JWT signed with it (token.txt). The private
// key never reaches the disk. Uses `jose` from demo/issuer/node_modules.
//   node bench/make-jwt.mjs OUT_DIR ISSUER AUDIENCE
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [outDir, issuer, audience] = process.argv.slice(2);
if (!outDir || !issuer || !audience) {
  console.error('usage: node bench/make-jwt.mjs OUT_DIR ISSUER AUDIENCE');
  process.exit(2);
}
const require = createRequire(new URL('../demo/issuer/package.json', import.meta.url));
const jose = await import(pathToFileURL(require.resolve('jose')).href);

const { publicKey, privateKey } = await jose.generateKeyPair('RS256', { modulusLength: 2048 });
const jwk = { ...(await jose.exportJWK(publicKey)), kid: 'bench-1', alg: 'RS256', use: 'sig' };
const token = await new jose.SignJWT({ client_id: 'bench-client' })
  .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'JWT' })
  .setIssuer(issuer)
  .setAudience(audience)
  .setSubject('300000000000000099')
  .setIssuedAt()
  .setExpirationTime('1d')
  .sign(privateKey);
writeFileSync(join(outDir, 'jwks.json'), JSON.stringify({ keys: [jwk] }), { mode: 0o600 });
writeFileSync(join(outDir, 'token.txt'), token + '\n', { mode: 0o600 });
