#!/usr/bin/env node
// Gets a token for a service user from the local issuer, through the real grant, and prints
// only the token on stdout: the access token, or with --print the key user's refresh or ID token.
//
//   node demo/issuer/get-token.mjs --state-dir DIR --user reader-opaque
//   node demo/issuer/get-token.mjs --state-dir DIR --user key-user        (JWT profile grant)
//   node demo/issuer/get-token.mjs --state-dir DIR --user key-user --print refresh_token
//   node demo/issuer/get-token.mjs --state-dir DIR --user reader-opaque --dpop
//
// client_credentials: HTTP Basic with the user's client id and secret (form-encoded first, as
// RFC 6749 section 2.3.1 says). jwt-bearer: an assertion signed with service-user-key.json
// (RS256, kid = keyId, iss = sub = userId, aud = issuer), as ZITADEL's JWT profile grant wants.
// --dpop: a DPoP proof (RFC 9449) signed with a fresh P-256 key, which is then thrown away: the
// token is bound to a key nobody has, so it can only ever be presented without a valid proof.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { exportJWK, generateKeyPair, SignJWT } from 'jose';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const USAGE = `usage: node get-token.mjs [--state-dir DIR] [--user NAME] [--grant client_credentials|jwt-bearer]
                         [--scope SCOPE] [--issuer URL] [--print access_token|refresh_token|id_token] [--dpop]
  --state-dir DIR  the issuer's state dir (default ${path.join(HERE, '.state')})
  --user NAME      a service user named in ids.json (default reader-opaque)
  --grant G        default: the user's own grant (jwt-bearer for the key user)
  --scope SCOPE    default "openid urn:zitadel:iam:org:project:id:<project_id>:aud"
  --issuer URL     default: the issuer in ids.json
  --print KIND     which token of the response to print (default access_token); refresh_token
                   and id_token need the JWT profile grant, and add offline_access or openid
                   to the scope when it lacks them
  --dpop           send a DPoP proof made with a throw-away EC P-256 key: the tokens are DPoP-bound`;
const KINDS = ['access_token', 'refresh_token', 'id_token'];
// The scope each kind of token needs, as in ZITADEL's JWT profile grant.
const KIND_SCOPE = { refresh_token: 'offline_access', id_token: 'openid' };

function fail(message, code = 1) {
  process.stderr.write(`get-token: ${message}\n`);
  process.exit(code);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      'state-dir': { type: 'string', default: path.join(HERE, '.state') },
      user: { type: 'string', default: 'reader-opaque' },
      grant: { type: 'string' },
      scope: { type: 'string' },
      issuer: { type: 'string' },
      print: { type: 'string', default: 'access_token' },
      dpop: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }));
} catch (err) {
  fail(`${err.message}\n${USAGE}`, 2);
}
if (args.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    return fail(`cannot read ${file}: ${err.code === 'ENOENT' ? 'no such file (has the issuer been started with this --state-dir?)' : err.message}`);
  }
}

const stateDir = path.resolve(args['state-dir']);
const ids = readJson(path.join(stateDir, 'ids.json'));
const user = ids.service_users?.[args.user];
if (!user) fail(`unknown user "${args.user}"; known: ${Object.keys(ids.service_users ?? {}).join(', ')}`, 2);
const issuer = (args.issuer ?? ids.issuer).replace(/\/+$/, '');
const grant = args.grant ?? user.grant;
const kind = args.print;
if (!KINDS.includes(kind)) fail(`unknown --print "${kind}" (${KINDS.join(', ')})`, 2);
if (kind !== 'access_token' && grant !== 'jwt-bearer') {
  fail(`--print ${kind} needs the JWT profile grant (--user ${ids.key_user ?? 'key-user'}); client_credentials gives an access token only`, 2);
}
let scope = args.scope ?? `openid urn:zitadel:iam:org:project:id:${ids.project_id}:aud`;
if (KIND_SCOPE[kind] && !scope.split(' ').includes(KIND_SCOPE[kind])) scope = `${KIND_SCOPE[kind]} ${scope}`.trim();
const tokenEndpoint = `${issuer}/oauth/v2/token`;

// RFC 6749 2.3.1: client id and secret are application/x-www-form-urlencoded before Basic.
const formEncode = (s) => encodeURIComponent(s).replace(/%20/g, '+');

const body = new URLSearchParams({ scope });
const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };

if (grant === 'client_credentials') {
  if (!user.client_secret) fail(`user "${args.user}" has no client secret; use --grant jwt-bearer`, 2);
  body.set('grant_type', 'client_credentials');
  headers.authorization = `Basic ${Buffer.from(`${formEncode(user.client_id)}:${formEncode(user.client_secret)}`).toString('base64')}`;
} else if (grant === 'jwt-bearer') {
  const keyFile = readJson(path.join(stateDir, user.key_file ?? ids.service_user_key_file ?? 'service-user-key.json'));
  if (keyFile.userId !== user.user_id) fail(`the key file belongs to user ${keyFile.userId}, not to "${args.user}"`, 2);
  let key;
  try {
    key = crypto.createPrivateKey(keyFile.key);
  } catch (err) {
    fail(`cannot load the key in the key file: ${err.message}`);
  }
  const now = Math.floor(Date.now() / 1000);
  const assertion = await new SignJWT({})
    .setProtectedHeader({ alg: 'RS256', kid: keyFile.keyId })
    .setIssuer(keyFile.userId)
    .setSubject(keyFile.userId)
    .setAudience(issuer)
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(key);
  body.set('grant_type', 'urn:ietf:params:oauth:grant-type:jwt-bearer');
  body.set('assertion', assertion);
} else {
  fail(`unknown --grant "${grant}" (client_credentials or jwt-bearer)`, 2);
}

// RFC 9449 section 4.2: typ dpop+jwt, the public key in the header, htm and htu naming this
// request, iat, and a unique jti.
if (args.dpop) {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  headers.dpop = await new SignJWT({ htm: 'POST', htu: tokenEndpoint })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(publicKey) })
    .setIssuedAt()
    .setJti(crypto.randomUUID())
    .sign(privateKey);
}

let response;
try {
  response = await fetch(tokenEndpoint, {
    method: 'POST', headers, body, signal: AbortSignal.timeout(10_000),
  });
} catch (err) {
  fail(`cannot reach ${tokenEndpoint}: ${err.cause?.code ?? err.message}`);
}
const text = await response.text();
let json;
try {
  json = JSON.parse(text);
} catch {
  fail(`token endpoint answered HTTP ${response.status} with a non-JSON body`);
}
if (!response.ok || typeof json.access_token !== 'string') {
  fail(`token request failed: HTTP ${response.status} ${json.error ?? ''}${json.error_description ? `: ${json.error_description}` : ''}`);
}
if (args.dpop && json.token_type !== 'DPoP') fail(`asked for a DPoP-bound token, got token_type ${json.token_type}`);
if (typeof json[kind] !== 'string') fail(`the token response has no ${kind} (scope "${scope}")`);
process.stdout.write(`${json[kind]}\n`);
