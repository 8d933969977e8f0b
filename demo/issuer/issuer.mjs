#!/usr/bin/env node
// A local OpenID provider that behaves like ZITADEL where the introspection filter can tell.
//
// It is a real OAuth 2.0 / OpenID Connect server (the `oidc-provider` package) configured with
// ZITADEL's endpoint paths, ids, key files, client authentication methods, grants and
// introspection response shape. It is for tests and the demo only: it binds to loopback,
// keeps tokens in memory, and exposes unauthenticated /_test/* endpoints.
//
//   node demo/issuer/issuer.mjs --port 9000 --host 127.0.0.1 \
//        --issuer http://127.0.0.1:9000 --state-dir /some/dir [--instance N] [--strict-assertion-reuse]
//        [--enforce-audience] [--record-assertions] [--verbose]
//
// See README.md beside this file for the users, clients and files it writes.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// --- quiet logs ------------------------------------------------------------------------------
// oidc-provider prints two notices this server triggers on purpose, both harmless here:
//  * "Unsupported runtime": oidc-provider 9 targets Node 22 LTS; this machine has Node 20.20,
//    on which everything this server uses works (verified by the checks in README.md).
//  * "already parsed request body detected": we read the body of the token, introspection and
//    revocation requests ourselves (see preReadForm below) and hand it to oidc-provider through
//    its documented pre-parsed-body fallback.
// Everything else oidc-provider prints goes through untouched. Installed before the import,
// because the runtime notice is printed while the module loads.
const QUIET = [
  'oidc-provider WARNING: Unsupported runtime',
  'oidc-provider WARNING: already parsed request body detected',
];
const consoleWarn = console.warn.bind(console);
console.warn = (...args) => {
  const [first] = args;
  if (typeof first === 'string' && QUIET.some((prefix) => first.includes(prefix))) return;
  consoleWarn(...args);
};

const { default: Provider, errors } = await import('oidc-provider');
// oidc-provider's own DPoP proof checks, which its built-in grants get as helpers; a grant
// registered with registerGrantType gets only ctx, so the JWT profile grant imports them (see
// there). The package has no exports map and is pinned to one version in package.json.
const { default: validateDpop, checkDpopReplay } = await import('oidc-provider/lib/helpers/validate_dpop.js');
const jose = await import('jose');

// --- command line ----------------------------------------------------------------------------
const HERE = path.dirname(fileURLToPath(import.meta.url));
const USAGE = `usage: node issuer.mjs [--port 9000] [--host 127.0.0.1] [--issuer URL] [--state-dir DIR] [--instance N]
                        [--strict-assertion-reuse] [--enforce-audience] [--record-assertions] [--verbose]
                        [--rotate-signing-key] [--retire-old-signing-keys]
  --port N                  TCP port (0 = any free port; the ready line shows which)
  --host ADDR               address to bind (loopback only is the point; default 127.0.0.1)
  --issuer URL              issuer identifier (default http://HOST:PORT)
  --state-dir DIR           where keys, secrets and ids.json live (default ${path.join(HERE, '.state')})
  --instance N              1-6: which ZITADEL instance to be; its ids start with the digit N + 2
                            (instance 1: 3000…, instance 2: 4000…), its org domain differs
  --strict-assertion-reuse  reject a client assertion whose jti was already used (oidc-provider's
                            normal replay detection); default: accept reuse, as ZITADEL does
  --enforce-audience        like ZITADEL, answer active:true only to an API app whose client id or
                            project id is in the token's aud (default: answer for any audience, so
                            that the filter's own audience check can be tested)
  --record-assertions       append every distinct client_assertion received to
                            STATE_DIR/client-assertions.txt (tests check that none leaks into a log)
  --verbose                 log one line per failed request (error code and description, no secrets)
  --rotate-signing-key      make a new signing key (a new kid) and sign with it from now on; the
                            keys before it stay published at /oauth/v2/keys, as in a rotation
  --retire-old-signing-keys publish only the newest signing key: tokens signed with the older ones
                            no longer verify
  --tls-cert FILE --tls-key FILE
                            serve HTTPS with this certificate (PEM) and key; the default issuer URL
                            is then https://HOST:PORT`;

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string', default: '9000' },
      host: { type: 'string', default: '127.0.0.1' },
      issuer: { type: 'string' },
      'state-dir': { type: 'string', default: path.join(HERE, '.state') },
      instance: { type: 'string', default: '1' },
      'strict-assertion-reuse': { type: 'boolean', default: false },
      'enforce-audience': { type: 'boolean', default: false },
      'record-assertions': { type: 'boolean', default: false },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      verbose: { type: 'boolean', default: false },
      'rotate-signing-key': { type: 'boolean', default: false },
      'retire-old-signing-keys': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }));
} catch (err) {
  process.stderr.write(`${err.message}\n${USAGE}\n`);
  process.exit(2);
}
if (args.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const PORT = Number(args.port);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  process.stderr.write(`invalid --port ${args.port}\n`);
  process.exit(2);
}
const INSTANCE = Number(args.instance);
if (!Number.isInteger(INSTANCE) || INSTANCE < 1 || INSTANCE > 6) {
  process.stderr.write(`invalid --instance ${args.instance} (1-6)\n`);
  process.exit(2);
}
const HOST = args.host;
const STATE_DIR = path.resolve(args['state-dir']);
const STRICT_ASSERTION_REUSE = args['strict-assertion-reuse'];
const ENFORCE_AUDIENCE = args['enforce-audience'];
const RECORD_ASSERTIONS = args['record-assertions'];
const VERBOSE = args.verbose;
if (Boolean(args['tls-cert']) !== Boolean(args['tls-key'])) {
  process.stderr.write('--tls-cert and --tls-key go together\n');
  process.exit(2);
}
let TLS;
try {
  TLS = args['tls-cert'] && { cert: fs.readFileSync(args['tls-cert']), key: fs.readFileSync(args['tls-key']) };
} catch (err) {
  process.stderr.write(`cannot read the TLS certificate or key: ${err.code ?? err.message}\n`);
  process.exit(2);
}

// --- the fixed, ZITADEL-looking world ---------------------------------------------------------
// Ids are fixed so tests and configs can name them; only keys and secrets are random (per
// state dir). ZITADEL ids are 18-digit snowflake-like numbers; API app client ids are
// "<id>@<project name>". Each --instance has ids of its own: 3000… for instance 1, 4000… for 2.
const id = (n) => `${INSTANCE + 2}${String(n).padStart(17, '0')}`;
const ORG_ID = id(0);
const ORG_DOMAIN = INSTANCE === 1 ? 'demo.localhost' : `instance${INSTANCE}.localhost`;
const PROJECT_ID = id(1);
const OTHER_PROJECT_ID = id(9);
const API_APP = { appId: id(3), clientId: `${id(2)}@demo`, keyId: id(4), secondKeyId: id(22) };
const BASIC_APP = { appId: id(5), clientId: `${id(6)}@demo` };
// The other project's own API app, for a filter that introspects its tokens (ZITADEL answers
// active only to a client whose project is in the token's aud; see --enforce-audience).
const OTHER_API_APP = { appId: id(18), clientId: `${id(19)}@other`, keyId: id(20) };
const ROLE = 'read:messages';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const CLOCK_TOLERANCE = 5; // seconds
const MAX_ASSERTION_AGE = 3600; // ZITADEL rejects an assertion whose iat is more than 1 h old

// What ZITADEL puts in `aud` for a token of each project: the project id and the client ids
// of the project's apps.
const AUDIENCES = {
  [PROJECT_ID]: [PROJECT_ID, API_APP.clientId, BASIC_APP.clientId],
  [OTHER_PROJECT_ID]: [OTHER_PROJECT_ID, OTHER_API_APP.clientId],
};

// Service users. The key of this object is the user name; with client credentials, ZITADEL's
// client id is the user name. `key-user` authenticates with its key (JWT profile grant) and its
// tokens carry client_id = its user id, as in ZITADEL.
const SERVICE_USERS = {
  'reader-opaque': { userId: id(11), tokenType: 'opaque', roles: [ROLE], ttl: 3600, project: PROJECT_ID },
  'reader-jwt': { userId: id(12), tokenType: 'jwt', roles: [ROLE], ttl: 3600, project: PROJECT_ID },
  'plain-opaque': { userId: id(13), tokenType: 'opaque', roles: [], ttl: 3600, project: PROJECT_ID },
  'short-lived': { userId: id(14), tokenType: 'opaque', roles: [ROLE], ttl: 3, project: PROJECT_ID },
  // Has the right role name, but in another project: its aud lacks PROJECT_ID.
  'other-project': { userId: id(15), tokenType: 'opaque', roles: [ROLE], ttl: 3600, project: OTHER_PROJECT_ID },
  'other-jwt': { userId: id(21), tokenType: 'jwt', roles: [ROLE], ttl: 3600, project: OTHER_PROJECT_ID },
  'key-user': {
    userId: id(16), keyId: id(17), grant: JWT_BEARER, tokenType: 'jwt', roles: [ROLE], ttl: 3600, project: PROJECT_ID,
  },
};
const KEY_USER = 'key-user';

// --- state dir: keys and secrets -------------------------------------------------------------
function randomSecret(length = 64) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = crypto.randomBytes(length * 2);
  let out = '';
  for (const b of bytes) {
    if (b < 248) out += alphabet[b % 62]; // 248 = 4 * 62: no modulo bias
    if (out.length === length) break;
  }
  return out;
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${file}: ${err.message}`);
  }
}

// Secrets are written with mode 0600, through a temporary file so that a reader never sees half.
function writeSecretJson(file, value) {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

function newRsaPkcs1Pem() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return privateKey.export({ type: 'pkcs1', format: 'pem' });
}

// A ZITADEL key file is only written when absent; an existing one is reused as it is.
function loadOrCreateKeyFile(file, fresh, expect) {
  let value = readJson(file);
  if (!value) {
    value = fresh();
    writeSecretJson(file, value);
  }
  for (const [k, v] of Object.entries(expect)) {
    if (value[k] !== v) throw new Error(`${file}: ${k} is ${JSON.stringify(value[k])}, expected ${JSON.stringify(v)} (delete the state dir to start over)`);
  }
  const privateKey = crypto.createPrivateKey(value.key); // PKCS#1 or PKCS#8 PEM
  return { file: value, publicKey: crypto.createPublicKey(privateKey) };
}

// An API app's key file (type "application"), as ZITADEL's console downloads it.
function loadOrCreateAppKey(file, app, keyId) {
  return loadOrCreateKeyFile(path.join(STATE_DIR, file), () => ({
    type: 'application', keyId, key: newRsaPkcs1Pem(), appId: app.appId, clientId: app.clientId,
  }), { type: 'application', appId: app.appId, clientId: app.clientId });
}

function loadState(issuer) {
  fs.mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });

  const apiKey = loadOrCreateAppKey('api-app-key.json', API_APP, API_APP.keyId);
  // A second key of the same API app, as after a key rotation in ZITADEL's console: both
  // are valid until the old one is deleted.
  const apiKey2 = loadOrCreateAppKey('api-app-key-2.json', API_APP, API_APP.secondKeyId);
  const otherApiKey = loadOrCreateAppKey('other-api-app-key.json', OTHER_API_APP, OTHER_API_APP.keyId);

  const keyUser = SERVICE_USERS[KEY_USER];
  const userKey = loadOrCreateKeyFile(path.join(STATE_DIR, 'service-user-key.json'), () => ({
    type: 'serviceaccount', keyId: keyUser.keyId, key: newRsaPkcs1Pem(), userId: keyUser.userId,
  }), { type: 'serviceaccount', userId: keyUser.userId });

  // The issuer's own signing keys (JWT access tokens, JWKS at /oauth/v2/keys), newest first:
  // the first signs, all are published. Kept so that JWT tokens and the keys Envoy fetched
  // survive a restart; --rotate-signing-key and --retire-old-signing-keys change them as a key
  // rotation at ZITADEL does. (State dirs of earlier versions hold one key, in
  // issuer-signing-key.json.)
  const signingFile = path.join(STATE_DIR, 'issuer-signing-keys.json');
  let signingJwks = readJson(signingFile) ?? [readJson(path.join(STATE_DIR, 'issuer-signing-key.json'))].filter(Boolean);
  const newSigningJwk = () => {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    // ZITADEL's kids are numeric strings; one newer than every kid so far.
    const kid = `${Math.max(Date.now(), ...signingJwks.map((k) => Number(k.kid) + 1).filter(Number.isFinite))}`;
    return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  };
  if (signingJwks.length === 0 || args['rotate-signing-key']) signingJwks = [newSigningJwk(), ...signingJwks];
  if (args['retire-old-signing-keys']) signingJwks = signingJwks.slice(0, 1);
  writeSecretJson(signingFile, signingJwks);

  // ids.json: fixed ids plus the secrets; secrets already there are kept, the rest is
  // regenerated (e.g. the issuer URL after a port change).
  const idsFile = path.join(STATE_DIR, 'ids.json');
  const old = readJson(idsFile) ?? {};
  const serviceUsers = {};
  for (const [name, u] of Object.entries(SERVICE_USERS)) {
    const cc = u.grant !== JWT_BEARER;
    serviceUsers[name] = {
      user_id: u.userId,
      client_id: cc ? name : u.userId,
      client_secret: cc ? (old.service_users?.[name]?.client_secret ?? randomSecret()) : null,
      grant: cc ? 'client_credentials' : 'jwt-bearer',
      access_token_type: u.tokenType,
      roles: u.roles,
      project_id: u.project,
      audience: AUDIENCES[u.project],
      ttl_seconds: u.ttl,
      ...(u.keyId ? { key_id: u.keyId, key_file: 'service-user-key.json' } : {}),
    };
  }
  const ids = {
    issuer,
    org_id: ORG_ID,
    org_domain: ORG_DOMAIN,
    project_id: PROJECT_ID,
    other_project_id: OTHER_PROJECT_ID,
    role: ROLE,
    api_app_id: API_APP.appId,
    api_client_id: API_APP.clientId,
    api_key_id: apiKey.file.keyId,
    api_key_file: 'api-app-key.json',
    api_key_2_id: apiKey2.file.keyId,
    api_key_2_file: 'api-app-key-2.json',
    instance: INSTANCE,
    other_api_app_id: OTHER_API_APP.appId,
    other_api_client_id: OTHER_API_APP.clientId,
    other_api_key_id: otherApiKey.file.keyId,
    other_api_key_file: 'other-api-app-key.json',
    basic_api_client_id: BASIC_APP.clientId,
    basic_api_client_secret: old.basic_api_client_secret ?? randomSecret(),
    service_users: serviceUsers,
    key_user: KEY_USER,
    service_user_key_file: 'service-user-key.json',
    endpoints: {
      discovery: `${issuer}/.well-known/openid-configuration`,
      token: `${issuer}/oauth/v2/token`,
      introspection: `${issuer}/oauth/v2/introspect`,
      revocation: `${issuer}/oauth/v2/revoke`,
      jwks: `${issuer}/oauth/v2/keys`,
      userinfo: `${issuer}/oidc/v1/userinfo`,
    },
  };
  if (JSON.stringify(ids) !== JSON.stringify(old)) writeSecretJson(idsFile, ids);

  return { ids, apiKey, apiKey2, otherApiKey, userKey, signingJwks };
}

// --- in-memory storage (oidc-provider adapter) -----------------------------------------------
// JWT access tokens are not stored by oidc-provider; we store a record for each under a
// "shadow" id that only this process can derive (see JWT ACCESS TOKENS below).
const SHADOW_PREFIX = `jwt~${crypto.randomBytes(16).toString('base64url')}~`;
const shadowId = (jti) => `${SHADOW_PREFIX}${jti}`;

const stores = new Map(); // model name -> Map(id -> { payload, expiresAt })
class MemoryAdapter {
  constructor(model) {
    this.model = model;
    if (!stores.has(model)) stores.set(model, new Map());
    this.records = stores.get(model);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    this.records.set(id, { payload, expiresAt });
  }

  async find(id) {
    const record = this.records.get(id);
    if (!record) return undefined;
    if (record.expiresAt <= Date.now()) {
      this.records.delete(id);
      return undefined;
    }
    return record.payload;
  }

  async findByUid(uid) {
    for (const { payload } of this.records.values()) if (payload.uid === uid) return payload;
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const { payload } of this.records.values()) if (payload.userCode === userCode) return payload;
    return undefined;
  }

  async consume(id) {
    const record = this.records.get(id);
    if (record) record.payload.consumed = Math.floor(Date.now() / 1000);
  }

  // Revoking a JWT access token destroys it by its jti; its record lives under the shadow id.
  async destroy(id) {
    this.records.delete(id);
    this.records.delete(shadowId(id));
  }

  async revokeByGrantId(grantId) {
    for (const [id, { payload }] of this.records) if (payload.grantId === grantId) this.records.delete(id);
  }
}

// CLIENT ASSERTION REUSE.
// oidc-provider verifies a private_key_jwt client assertion and then calls
// ReplayDetection.unique(iss, jti, exp), which looks the (iss, jti) pair up through the
// adapter of the ReplayDetection model and, when absent, stores it until the assertion expires.
// ZITADEL does not track jti at all: a client may sign one assertion and reuse it until it
// expires, and the filter does exactly that. The cleanest supported way to get ZITADEL's
// behaviour is the adapter, oidc-provider's public storage extension point: by default the
// ReplayDetection model gets an adapter that remembers nothing, so every assertion is "unique".
// Everything else about the assertion (signature, kid, alg, iss = sub = client_id, aud, exp,
// iat age) is still checked. --strict-assertion-reuse gives ReplayDetection the normal memory
// adapter, which restores oidc-provider's replay detection (a reused jti -> 401 invalid_client).
class ForgetfulAdapter extends MemoryAdapter {
  async upsert() {}

  async find() { return undefined; }
}

function adapterFor(model) {
  if (model === 'ReplayDetection' && !STRICT_ASSERTION_REUSE) return new ForgetfulAdapter(model);
  return new MemoryAdapter(model);
}

setInterval(() => {
  const now = Date.now();
  for (const records of stores.values()) {
    for (const [id, { expiresAt }] of records) if (expiresAt <= now) records.delete(id);
  }
}, 30_000).unref();

// --- helpers -----------------------------------------------------------------------------------
const epoch = () => Math.floor(Date.now() / 1000);
const audienceList = (aud) => {
  if (Array.isArray(aud)) return aud;
  if (typeof aud === 'string') return AUDIENCES[aud] ?? [aud];
  return [];
};
const resourceIndicator = (projectId) => `urn:zitadel:iam:org:project:id:${projectId}`;

function roleClaims(user) {
  if (!user.roles.length) return undefined;
  const roles = Object.fromEntries(user.roles.map((r) => [r, { [ORG_ID]: ORG_DOMAIN }]));
  return {
    'urn:zitadel:iam:org:project:roles': roles,
    [`urn:zitadel:iam:org:project:${user.project}:roles`]: structuredClone(roles),
  };
}

// ZITADEL's own rule on assertions (zitadel/oidc: iat present, not in the future, not older
// than 1 h). Returns what is wrong, or undefined.
function assertionIatProblem(iat) {
  const now = epoch();
  if (typeof iat !== 'number') return 'iat (issued at) must be provided in the assertion';
  if (iat > now + CLOCK_TOLERANCE) return 'assertion iat is in the future';
  if (now - iat > MAX_ASSERTION_AGE + CLOCK_TOLERANCE) return 'assertion iat is more than 1 hour old';
  return undefined;
}

function invalidGrant(description) {
  const err = new errors.InvalidGrant(description);
  err.error_description = description;
  return err;
}

// Reads an application/x-www-form-urlencoded body before oidc-provider does (same 56 KiB limit
// as oidc-provider), so that we can look at it and, where needed, rewrite it. The result is
// handed on as a pre-parsed body (ctx.req.body), which oidc-provider's body parser accepts.
const BODY_LIMIT = 56 * 1024;
async function preReadForm(ctx) {
  if (ctx.method !== 'POST' || !ctx.is('application/x-www-form-urlencoded')) return undefined;
  if (ctx.request.length !== undefined && ctx.request.length > BODY_LIMIT) return undefined;
  const chunks = [];
  let size = 0;
  try {
    for await (const chunk of ctx.req) {
      size += chunk.length;
      if (size > BODY_LIMIT) break;
      chunks.push(chunk);
    }
  } catch {
    ctx.throw(400, 'failed to read the request body');
  }
  if (size > BODY_LIMIT) ctx.throw(413, 'request entity too large');
  const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  recordAssertion(form.get('client_assertion'));
  return form;
}

// --record-assertions: each distinct client assertion once, one per line, for the tests' leak check.
const recordedAssertions = new Set();
function recordAssertion(assertion) {
  if (!RECORD_ASSERTIONS || !assertion || recordedAssertions.has(assertion)) return;
  recordedAssertions.add(assertion);
  fs.appendFileSync(path.join(STATE_DIR, 'client-assertions.txt'), `${assertion}\n`, { mode: 0o600 });
}

// --- the provider ------------------------------------------------------------------------------
// An API app that authenticates with its keys (private_key_jwt). In oidc-provider 9
// token_endpoint_auth_method applies to every endpoint, introspection and revocation included
// (there is no separate introspection_endpoint_auth_method).
function keyAuthenticatedClient(app, keys) {
  return {
    client_id: app.clientId,
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'RS256',
    jwks: { keys: keys.map((k) => ({ ...k.publicKey.export({ format: 'jwk' }), kid: k.file.keyId, alg: 'RS256', use: 'sig' })) },
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  };
}

function buildProvider({ issuer, ids, apiKey, apiKey2, otherApiKey, userKey, signingJwks }) {
  const usersByClientId = new Map();
  for (const [name, u] of Object.entries(SERVICE_USERS)) {
    const entry = ids.service_users[name];
    usersByClientId.set(entry.client_id, { ...u, name, clientId: entry.client_id, loginName: `${name}@${ORG_DOMAIN}` });
  }
  const usersById = new Set([...usersByClientId.values()].map((u) => u.userId));
  const apiClients = new Map([
    [API_APP.clientId, PROJECT_ID], [BASIC_APP.clientId, PROJECT_ID], [OTHER_API_APP.clientId, OTHER_PROJECT_ID],
  ]);
  // What verifies a JWT this issuer signed: any of its published keys.
  const signingPublicKeys = jose.createLocalJWKSet({
    keys: signingJwks.map(({ kty, n, e, kid, alg, use }) => ({ kty, n, e, kid, alg, use })),
  });

  const resourceServerInfo = (user, requestedScope) => ({
    // Accept whatever scopes were asked for (ZITADEL echoes e.g.
    // "openid urn:zitadel:iam:org:project:id:<id>:aud" back).
    scope: requestedScope ?? '',
    audience: user.project, // oidc-provider keeps one audience; the response lists AUDIENCES[it]
    accessTokenFormat: user.tokenType,
    accessTokenTTL: user.ttl,
    ...(user.tokenType === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
  });

  const clients = [
    // The API app of the project, with both its keys; the other project's API app, with its own.
    keyAuthenticatedClient(API_APP, [apiKey, apiKey2]),
    keyAuthenticatedClient(OTHER_API_APP, [otherApiKey]),
    {
      // A second API app of the same project, with a client secret (client_secret_basic).
      client_id: BASIC_APP.clientId,
      client_secret: ids.basic_api_client_secret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
    ...[...usersByClientId.values()].map((u) => (u.grant === JWT_BEARER
      ? {
        // The assertion of the JWT profile grant is this client's authentication; oidc-provider
        // still wants a client, so it is a public one named by the user id (see preToken). It
        // may also redeem the refresh tokens that grant hands out.
        client_id: u.clientId,
        token_endpoint_auth_method: 'none',
        grant_types: [JWT_BEARER, 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      }
      : {
        client_id: u.clientId,
        client_secret: ids.service_users[u.name].client_secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      })),
  ];

  const provider = new Provider(issuer, {
    adapter: adapterFor,
    clients,
    jwks: { keys: signingJwks },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    clockTolerance: CLOCK_TOLERANCE,
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'],
    // RFC 7523's sub = client_id and ZITADEL's iat rule; oidc-provider calls this after its own
    // checks (signature, kid, alg, iss = client_id, aud, exp) and before the jti replay check.
    // The answer stays oidc-provider's generic 401 invalid_client; the reason is in error_detail
    // (logged with --verbose).
    assertJwtClientAuthClaimsAndHeader: async (ctx, claims, header, client) => {
      if (claims.sub !== client.clientId) throw new errors.InvalidClientAuth('sub (JWT subject) must be the client_id');
      const problem = assertionIatProblem(claims.iat);
      if (problem) throw new errors.InvalidClientAuth(problem);
    },
    routes: {
      authorization: '/oauth/v2/authorize',
      token: '/oauth/v2/token',
      introspection: '/oauth/v2/introspect',
      revocation: '/oauth/v2/revoke',
      jwks: '/oauth/v2/keys',
      userinfo: '/oidc/v1/userinfo',
      end_session: '/oidc/v1/end_session',
      device_authorization: '/oauth/v2/device_authorization',
      pushed_authorization_request: '/oauth/v2/par',
    },
    discovery: {
      introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'private_key_jwt'],
      introspection_endpoint_auth_signing_alg_values_supported: ['RS256'],
      revocation_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
      revocation_endpoint_auth_signing_alg_values_supported: ['RS256'],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // DPoP (RFC 9449), a deliberate deviation: ZITADEL has none. A client that sends a DPoP
      // proof with its token request (either grant) gets a sender-constrained token:
      // token_type "DPoP", and cnf.jkt at introspection. The tests use one to check that the
      // filter refuses such a token presented as a plain Bearer token. A request without a proof
      // gets a Bearer token as before. (oidc-provider 9 has this on by default; it is named here
      // because it is on purpose.) Proof jti replay goes through ReplayDetection, so like client
      // assertions it is only detected with --strict-assertion-reuse (see CLIENT ASSERTION REUSE).
      dPoP: { enabled: true },
      introspection: {
        enabled: true,
        // ZITADEL lets API apps introspect. With --enforce-audience it also answers active:true
        // only when the caller's client id or project id is in the token's aud.
        allowedPolicy: async (ctx, client, token) => {
          if (!apiClients.has(client.clientId)) return false;
          if (!ENFORCE_AUDIENCE) return true;
          const aud = audienceList(token.aud);
          return aud.includes(client.clientId) || aud.includes(apiClients.get(client.clientId));
        },
      },
      revocation: {
        enabled: true,
        // RFC 7009: a client revokes its own tokens.
        allowedPolicy: async (ctx, client, token) => {
          if (token.clientId !== client.clientId) {
            if (client.clientAuthMethod === 'none') return false;
            throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
          }
          return true;
        },
      },
      resourceIndicators: {
        enabled: true,
        // Every service user's token is for its project, asked for or not.
        defaultResource: async (ctx, client) => {
          const user = usersByClientId.get(client.clientId);
          return user ? resourceIndicator(user.project) : undefined;
        },
        getResourceServerInfo: async (ctx, indicator, client) => {
          const user = usersByClientId.get(client.clientId);
          if (!user || indicator !== resourceIndicator(user.project)) throw new errors.InvalidTarget();
          // A refresh without a scope parameter asks for the refresh token's scope again.
          return resourceServerInfo(user, ctx.oidc.params.scope ?? ctx.oidc.entities.RefreshToken?.scope);
        },
        // A refreshed access token is for the project again (oidc-provider's default would make
        // it a token for userinfo when the scope has openid).
        useGrantedResource: async () => true,
      },
    },
    ttl: {
      ClientCredentials: (ctx, token, client) => usersByClientId.get(client.clientId)?.ttl ?? 3600,
      AccessToken: () => 3600,
      // The key user's ID token lives as long as its access token (ZITADEL's default settings
      // give both 12 h); its refresh token 30 days, ZITADEL's default idle expiration, within a
      // grant of 90 days, ZITADEL's default absolute expiration.
      IdToken: (ctx, token, client) => usersByClientId.get(client.clientId)?.ttl ?? 3600,
      RefreshToken: () => 30 * 24 * 3600,
      Grant: () => 90 * 24 * 3600,
    },
    // The role claims ride along with the token (both formats) and come back at introspection.
    extraTokenClaims: async (ctx, token) => {
      const user = usersByClientId.get(token.clientId);
      return user ? roleClaims(user) : undefined;
    },
    formats: {
      customizers: {
        // JWT ACCESS TOKENS.
        // oidc-provider 9 cannot introspect or revoke its own JWT access tokens: it never stores
        // them (BaseModel.save only stores formats that return a payload) and both endpoints
        // answer 400 unsupported_token_type to anything that decodes as a JWT
        // ("Structured JWT Tokens cannot be introspected"). ZITADEL introspects both formats.
        // The least hacky fix found uses documented extension points (this customizer, the
        // adapter, provider.use middleware); its one rough edge is that the rewritten request
        // body reaches oidc-provider through its pre-parsed-body fallback (notice silenced above):
        //  1. here (the JWT customizer, awaited before the token is handed out) we store the
        //     same record oidc-provider stores for an opaque token, under shadowId(jti), an id
        //     only this process can derive (so the public jti is never usable as a token);
        //  2. in preIntrospectOrRevoke, a token that is a JWT signed by this issuer's key is
        //     replaced by its shadow id before oidc-provider sees the request; a JWT that does
        //     not verify, or has no jti (the key user's ID token), is replaced by an id that
        //     matches nothing (-> {"active":false}, as ZITADEL answers, instead of a 400);
        //  3. oidc-provider then authenticates the caller, looks the record up and answers as
        //     for an opaque token; revocation destroys the record by jti, and the adapter's
        //     destroy() also drops the shadow id.
        // The JWT itself is shaped like ZITADEL's: aud is the array, sub the user id, nbf = iat.
        jwt: async (ctx, token, jwt) => {
          const user = usersByClientId.get(token.clientId);
          const { payload } = jwt;
          payload.aud = audienceList(payload.aud);
          if (user) payload.sub = user.userId;
          payload.nbf = payload.iat;

          const record = { iat: payload.iat, exp: payload.exp };
          for (const key of token.constructor.IN_PAYLOAD) {
            if (record[key] === undefined && token[key] !== undefined) record[key] = token[key];
          }
          await token.adapter.upsert(shadowId(token.jti), record, payload.exp - epoch());
        },
      },
    },
    // No interactive users; the refresh_token grant looks up the key user its refresh token names.
    findAccount: async (ctx, sub) => (usersById.has(sub) ? { accountId: sub, claims: () => ({ sub }) } : undefined),
    clientBasedCORS: () => false,
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  // JWT PROFILE GRANT (RFC 7523 section 2.1), as ZITADEL implements it for service users:
  // assertion = JWT signed with the user's key, iss = sub = user id, aud = issuer, kid = key id.
  provider.registerGrantType(JWT_BEARER, async (ctx) => {
    const { client, params } = ctx.oidc;
    const user = usersByClientId.get(client.clientId);
    if (!user || user.grant !== JWT_BEARER) throw new errors.UnauthorizedClient();
    let header;
    try {
      header = jose.decodeProtectedHeader(params.assertion);
    } catch {
      throw invalidGrant('assertion is not a JWT');
    }
    if (header.kid !== userKey.file.keyId) throw invalidGrant('assertion is signed with an unknown key');
    let claims;
    try {
      ({ payload: claims } = await jose.jwtVerify(params.assertion, userKey.publicKey, {
        algorithms: ['RS256'],
        issuer: user.userId,
        subject: user.userId,
        audience: issuer,
        requiredClaims: ['exp'],
        clockTolerance: CLOCK_TOLERANCE,
      }));
    } catch (err) {
      throw invalidGrant(`invalid assertion (${err.code ?? 'error'})`);
    }
    const problem = assertionIatProblem(claims.iat);
    if (problem) throw invalidGrant(problem);

    // A DPoP proof, if sent, is checked and bound exactly as oidc-provider's client_credentials
    // grant does it (see features.dPoP).
    const dPoP = await validateDpop(provider, ctx);

    const resource = resourceIndicator(user.project);
    const scopes = new Set(params.scope?.split(' '));
    const token = new provider.ClientCredentials({ client });
    token.resourceServer = new provider.ResourceServer(resource, resourceServerInfo(user, params.scope));
    token.scope = params.scope || undefined;
    if (dPoP) {
      await checkDpopReplay(provider, ctx, dPoP, client.clientId);
      token.setThumbprint('jkt', dPoP.thumbprint);
    }
    ctx.oidc.entity('ClientCredentials', token);
    const value = await token.save();

    // ZITADEL's JWT profile grant opens an OIDC session: with offline_access in the scope it also
    // hands out a refresh token, with openid an ID token. Both are real oidc-provider tokens here
    // (the refresh token with the Grant oidc-provider looks up for it). Neither is an access
    // token, which is all ZITADEL's introspection knows: it answers {"active":false} to both
    // (see zitadelIntrospection for the refresh token, preIntrospectOrRevoke for the ID token).
    let refreshToken;
    if (scopes.has('offline_access')) {
      const grant = new provider.Grant({ accountId: user.userId, clientId: client.clientId });
      grant.addOIDCScope([...scopes].filter((s) => s === 'openid' || s === 'offline_access'));
      grant.addResourceScope(resource, params.scope);
      const rt = new provider.RefreshToken({
        accountId: user.userId,
        client,
        grantId: await grant.save(),
        gty: JWT_BEARER,
        resource,
        scope: params.scope,
        rotations: 0,
        // As oidc-provider does for a public client: bound to the access token's DPoP key.
        jkt: token.jkt,
      });
      ctx.oidc.entity('RefreshToken', rt);
      refreshToken = await rt.save();
    }
    // Shaped like ZITADEL's: iss, sub = the user id, aud = the client id (the user id here too),
    // iat, exp, auth_time (the session starts now), at_hash; no jti.
    let idToken;
    if (scopes.has('openid')) {
      const it = new provider.IdToken({ sub: user.userId }, { ctx });
      it.scope = 'openid';
      it.set('auth_time', epoch());
      it.set('at_hash', value);
      idToken = await it.issue({ use: 'idtoken' });
    }

    ctx.body = {
      access_token: value,
      token_type: token.tokenType,
      expires_in: token.expiration,
      ...(token.scope ? { scope: token.scope } : {}),
      ...(refreshToken ? { refresh_token: refreshToken } : {}),
      ...(idToken ? { id_token: idToken } : {}),
    };
  }, ['assertion', 'scope']);

  if (VERBOSE) {
    for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'jwks.error', 'discovery.error', 'userinfo.error']) {
      provider.on(event, (ctx, err) => {
        const detail = err.error_detail && err.error_detail !== err.error_description ? ` (${err.error_detail})` : '';
        process.stderr.write(`${event}: ${err.error ?? err.name}${err.error_description ? `: ${err.error_description}` : ''}${detail}\n`);
      });
    }
  }
  provider.on('server_error', (ctx, err) => {
    process.stderr.write(`server_error on ${ctx.method} ${ctx.path}: ${err.message}\n`);
  });

  return { provider, usersByClientId, signingPublicKeys };
}

// --- ZITADEL-shaped introspection response -----------------------------------------------------
// oidc-provider answers RFC 7662 with one audience string, no nbf, no sub for a token without an
// end-user, and no jti for an opaque token (its jti is the token itself). ZITADEL answers:
// active, scope, client_id, token_type, exp, iat, nbf (= iat), sub, aud (array), iss, jti,
// [username with the profile scope], then the role claims. Inactive: exactly {"active":false}.
// A DPoP-bound token (not ZITADEL's, see features.dPoP) keeps oidc-provider's token_type "DPoP"
// and its cnf member.
//
// oidc-provider answers active:true for its own refresh tokens; ZITADEL does not. Its
// introspection (internal/api/oidc/introspect.go, access_token.go) only looks tokens up as
// access tokens: a refresh token decrypts to an id that is no access token's, and ZITADEL turns
// that error, like every other, into {"active":false}.
function zitadelIntrospection(body, presentedToken, usersByClientId, isRefreshToken) {
  if (body.active !== true || isRefreshToken) return { active: false };
  const user = usersByClientId.get(body.client_id);
  const out = {
    active: true,
    scope: body.scope,
    client_id: body.client_id,
    token_type: body.token_type ?? 'Bearer',
    exp: body.exp,
    iat: body.iat,
    nbf: body.iat,
    sub: body.sub ?? user?.userId ?? body.client_id,
    aud: audienceList(body.aud),
    iss: body.iss,
    // An opaque token's record has no id of its own: derive a stable one that does not reveal it.
    jti: body.jti ?? crypto.createHash('sha256').update(presentedToken ?? '').digest('base64url').slice(0, 22),
  };
  const scopes = body.scope?.split(' ') ?? [];
  if (user && scopes.includes('profile')) out.username = user.loginName;
  // ZITADEL's reserved scope urn:zitadel:iam:user:resourceowner asks for the user's organization.
  if (user && scopes.includes('urn:zitadel:iam:user:resourceowner')) {
    out['urn:zitadel:iam:user:resourceowner:id'] = ORG_ID;
    out['urn:zitadel:iam:user:resourceowner:name'] = INSTANCE === 1 ? 'Demo' : `Instance ${INSTANCE}`;
    out['urn:zitadel:iam:user:resourceowner:primary_domain'] = ORG_DOMAIN;
  }
  for (const [key, value] of Object.entries(body)) {
    if (!(key in out) && key !== 'sid' && value !== undefined) out[key] = value;
  }
  return out;
}

// --- middleware around oidc-provider -----------------------------------------------------------
function installMiddleware(provider, { issuer, usersByClientId, signingPublicKeys }) {
  const routes = {
    jwks: '/oauth/v2/keys',
    token: '/oauth/v2/token',
    introspection: '/oauth/v2/introspect',
    revocation: '/oauth/v2/revoke',
  };
  // probe_requests: introspections of tokens named `probe-…`, the filter's check of its own
  // credentials after a configuration loads; kept out of introspect_requests, which the tests
  // compare with the calls that requests caused.
  const stats = { introspect_requests: 0, probe_requests: 0, token_requests: 0, revoke_requests: 0, keys_requests: 0 };
  let introspectDelayMs = 0;
  const counters = {
    [routes.introspection]: 'introspect_requests',
    [routes.token]: 'token_requests',
    [routes.revocation]: 'revoke_requests',
  };

  // Introspection and revocation of this issuer's JWT access tokens (see JWT ACCESS TOKENS).
  async function preIntrospectOrRevoke(ctx) {
    const form = await preReadForm(ctx);
    if (!form) return undefined;
    const tokens = form.getAll('token');
    const presented = tokens.length === 1 ? tokens[0] : undefined;
    let isJwt = false;
    try {
      isJwt = presented !== undefined && !!jose.decodeProtectedHeader(presented);
    } catch { /* not a JWT: an opaque token, left as it is */ }
    if (isJwt) {
      let replacement = 'unknown-structured-token'; // matches no record: {"active":false}
      try {
        const { payload } = await jose.jwtVerify(presented, signingPublicKeys, {
          issuer, algorithms: ['RS256'], clockTolerance: CLOCK_TOLERANCE,
        });
        if (typeof payload.jti === 'string') replacement = shadowId(payload.jti);
      } catch { /* foreign, tampered or expired: unknown */ }
      form.set('token', replacement);
    }
    ctx.req.body = form.toString();
    return presented;
  }

  // ZITADEL's JWT profile grant needs no client authentication besides the assertion itself.
  // oidc-provider always identifies a client at the token endpoint, so when the request names
  // none, the (public) client is taken from the assertion's iss; the grant handler then
  // verifies the assertion with that user's key.
  async function preToken(ctx) {
    const form = await preReadForm(ctx);
    if (!form) return;
    // RFC 8707's `resource` (which MCP clients send): ZITADEL's client_credentials and JWT
    // profile grants ignore it (its request types have no such field and unknown parameters
    // are skipped: zitadel/zitadel internal/api/oidc/token_client_credentials.go and
    // token_jwt_profile.go; zitadel/zitadel#12710), so the token's aud comes only from the
    // project's aud scope. oidc-provider would answer invalid_target: drop it as ZITADEL does.
    // (ZITADEL's token exchange refuses it with invalid_target; this issuer has no token exchange.)
    if (['client_credentials', JWT_BEARER, 'refresh_token'].includes(form.get('grant_type'))) {
      form.delete('resource');
    }
    if (form.get('grant_type') === JWT_BEARER && ctx.headers.authorization === undefined
        && !form.has('client_id') && !form.has('client_assertion')) {
      try {
        const { iss } = jose.decodeJwt(form.get('assertion') ?? '');
        if (typeof iss === 'string' && usersByClientId.get(iss)?.grant === JWT_BEARER) form.set('client_id', iss);
      } catch { /* not a JWT: the grant handler will say so */ }
    }
    ctx.req.body = form.toString();
  }

  provider.use(async (ctx, next) => {
    // Test-only endpoints (the server binds to loopback only).
    if (ctx.path === '/_test/stats' && ctx.method === 'GET') {
      ctx.body = { ...stats, tls_server_names: [...tlsServerNames].sort() };
      return;
    }
    if (ctx.path === '/_test/reset' && ctx.method === 'POST') {
      for (const key of Object.keys(stats)) stats[key] = 0;
      introspectDelayMs = 0;
      ctx.body = { ...stats };
      return;
    }
    // Makes every introspection answer N ms late, to test timeouts and request coalescing.
    if (ctx.path === '/_test/introspect-delay' && ctx.method === 'POST') {
      const ms = Number(ctx.query.ms);
      if (!Number.isInteger(ms) || ms < 0 || ms > 600_000) ctx.throw(400, 'ms must be an integer from 0 to 600000');
      introspectDelayMs = ms;
      ctx.body = { introspect_delay_ms: introspectDelayMs };
      return;
    }

    let presented;
    if (ctx.method === 'POST' && (ctx.path === routes.introspection || ctx.path === routes.revocation)) {
      presented = await preIntrospectOrRevoke(ctx);
    } else if (ctx.method === 'POST' && ctx.path === routes.token) {
      await preToken(ctx);
    }
    const probe = ctx.path === routes.introspection && presented?.startsWith('probe-');
    const keys = ctx.method === 'GET' && ctx.path === routes.jwks;
    const counter = probe ? 'probe_requests' : (keys ? 'keys_requests' : counters[ctx.path]);
    if (counter) stats[counter] += 1;
    if (ctx.method === 'POST' && ctx.path === routes.introspection && introspectDelayMs > 0) {
      await new Promise((resolve) => { setTimeout(resolve, introspectDelayMs); });
    }

    await next();

    if (ctx.path === routes.introspection && ctx.method === 'POST' && ctx.status === 200
        && ctx.body && typeof ctx.body === 'object' && !Buffer.isBuffer(ctx.body)) {
      ctx.body = zitadelIntrospection(ctx.body, presented, usersByClientId, ctx.oidc.entities.RefreshToken !== undefined);
    }
  });
}

// --- start ---------------------------------------------------------------------------------------
const server = TLS ? https.createServer(TLS) : http.createServer();
// The SNI names clients sent (tests check what Envoy's issuer cluster sends), in /_test/stats.
const tlsServerNames = new Set();
server.on('secureConnection', (socket) => { if (socket.servername) tlsServerNames.add(socket.servername); });
try {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(PORT, HOST, () => {
      server.off('error', reject);
      resolve();
    });
  });
} catch (err) {
  process.stderr.write(`cannot listen on ${HOST}:${PORT}: ${err.code ?? err.message}\n`);
  process.exit(1);
}

let ISSUER;
try {
  const port = server.address().port;
  const scheme = TLS ? 'https' : 'http';
  ISSUER = (args.issuer ?? `${scheme}://${HOST.includes(':') ? `[${HOST}]` : HOST}:${port}`).replace(/\/+$/, '');
  const url = new URL(ISSUER);
  if (url.pathname !== '/' || url.search || url.hash) throw new Error('--issuer must be scheme://host[:port], without a path');

  const state = loadState(ISSUER);
  const { provider, usersByClientId, signingPublicKeys } = buildProvider({ issuer: ISSUER, ...state });
  installMiddleware(provider, { issuer: ISSUER, usersByClientId, signingPublicKeys });
  server.on('request', provider.callback());
} catch (err) {
  process.stderr.write(`issuer failed to start: ${err.message}\n`);
  server.close();
  process.exit(1);
}

let closing = false;
function shutdown() {
  if (closing) return;
  closing = true;
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(`issuer ready ${ISSUER}\n`);
