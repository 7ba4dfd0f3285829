// A real OpenID Connect provider for tests/oidc.rs: the certified `oidc-provider` library (npm,
// installed under $NBGATE_TEST_NODE by tests/run.sh), on a free loopback port, plain HTTP
// (nbgate allows http:// issuers on loopback only).
//
// Environment:
//   NBGATE_TEST_NODE      where node_modules lives (required)
//   OIDC_REDIRECT_URIS    comma-separated redirect URIs registered for the clients
//   OIDC_CLIENT_SECRET    the secret of client `nbgate` (client `other-app` has its own)
//   OIDC_MODE             normal (default) | tampered | expired | wrong_audience
//   OIDC_PORT             the loopback port to listen on (default: any free one)
//   OIDC_TLS_CERT, OIDC_TLS_KEY  PEM files: serve HTTPS with them (issuer https://127.0.0.1:PORT)
//
// Prints `ready <issuer>` on stdout once it listens.
//
// Clients: `nbgate` and `other-app` (a second application at the same provider), both
// confidential (client_secret_basic), code flow, PKCE required. Keys: one RSA key made at start
// and given to the provider as its static JWKS (no dev keys). Accounts (the login form takes a
// name, no password):
//   alice    alice@example.com, verified, groups [jupyter-users]
//   bob      bob@other.test, verified, groups [jupyter-users]
//   mallory  mallory@evil.test, verified, no groups
//   eve      eve@example.com, NOT verified, no groups
// Claims go into the ID token (conformIdTokenClaims: false), as Google, Keycloak and authentik
// put e-mail and groups there.
//
// OIDC_MODE other than `normal` alters the token endpoint's answer. This is a mock, on purpose:
// a correct provider never issues a tampered, expired or other-audience ID token, so those
// failures cannot be provoked otherwise; everything else (discovery, keys, the code, PKCE, the
// signature of the re-signed tokens) stays the real provider's.
//   tampered        the ID token's payload changed (e-mail), its signature kept
//   expired         re-signed with the provider's key, `exp` an hour ago
//   wrong_audience  re-signed with the provider's key for `aud` = `other-app`

import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const nodeDir = process.env.NBGATE_TEST_NODE;
if (!nodeDir) {
  console.error('NBGATE_TEST_NODE is not set');
  process.exit(2);
}

// Imports an ES module package from $NBGATE_TEST_NODE/node_modules (this script lives outside it).
async function importPackage(name) {
  const dir = path.join(nodeDir, 'node_modules', name);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  let entry = pkg.exports?.['.'] ?? pkg.main ?? 'index.js';
  while (typeof entry === 'object') entry = entry.import ?? entry.default;
  return import(pathToFileURL(path.join(dir, entry)).href);
}

const { default: Provider } = await importPackage('oidc-provider');
const jose = await importPackage('jose');

const mode = process.env.OIDC_MODE || 'normal';
const redirectUris = (process.env.OIDC_REDIRECT_URIS || '').split(',').filter(Boolean);
const clientSecret = process.env.OIDC_CLIENT_SECRET || 'nbgate-test-client-secret';

const accounts = {
  alice: { email: 'alice@example.com', email_verified: true, groups: ['jupyter-users'] },
  bob: { email: 'bob@other.test', email_verified: true, groups: ['jupyter-users'] },
  mallory: { email: 'mallory@evil.test', email_verified: true, groups: [] },
  eve: { email: 'eve@example.com', email_verified: false, groups: [] },
};

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const kid = 'nbgate-test-key';
const jwk = { ...(await jose.exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };

const tls = process.env.OIDC_TLS_CERT
  ? { cert: fs.readFileSync(process.env.OIDC_TLS_CERT), key: fs.readFileSync(process.env.OIDC_TLS_KEY) }
  : null;
const server = tls ? https.createServer(tls) : http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.OIDC_PORT || 0), '127.0.0.1', resolve));
const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'nbgate',
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'other-app',
      client_secret: 'other-app-secret',
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [jwk] },
  findAccount: async (ctx, id) =>
    accounts[id] && {
      accountId: id,
      claims: async () => ({ sub: id, preferred_username: id, name: id, ...accounts[id] }),
    },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
  cookies: { keys: ['nbgate-test-provider-cookie-key'] },
});

provider.use(async (ctx, next) => {
  await next();
  if (mode === 'normal' || ctx.path !== '/token' || ctx.status !== 200 || !ctx.body?.id_token) {
    return;
  }
  const token = ctx.body.id_token;
  if (mode === 'tampered') {
    const [header, payload, signature] = token.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    claims.email = 'mallory@example.com';
    ctx.body.id_token = [header, Buffer.from(JSON.stringify(claims)).toString('base64url'), signature].join('.');
    return;
  }
  const claims = jose.decodeJwt(token);
  const now = Math.floor(Date.now() / 1000);
  if (mode === 'expired') {
    claims.iat = now - 7200;
    claims.exp = now - 3600;
  } else if (mode === 'wrong_audience') {
    claims.aud = 'other-app';
    delete claims.azp;
  }
  ctx.body.id_token = await new jose.SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
    .sign(privateKey);
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(res, uid, message) {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Test provider: sign in</title></head>
<body><h1>Test provider</h1>${message ? `<p id="message">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label for="login">Account</label> <input id="login" name="login" autocomplete="off">
<button id="sign-in" type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${escape(uid)}/abort">
<button id="cancel" type="submit">Cancel</button>
</form>
</body></html>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

// The login interaction: a name, no password; the grant covers what was asked.
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (req.method === 'GET') return loginPage(res, uid);
  if (action === 'abort') {
    return provider.interactionFinished(
      req,
      res,
      { error: 'access_denied', error_description: 'the user cancelled' },
      { mergeWithLastSubmission: false },
    );
  }
  const login = (await readForm(req)).get('login') || '';
  if (!accounts[login]) return loginPage(res, uid, `no account ${login}`);
  const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  return provider.interactionFinished(
    req,
    res,
    { login: { accountId: login }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  const m = /^\/interaction\/([^/?]+)(?:\/(login|abort))?(?:\?|$)/.exec(req.url);
  if (!m) return callback(req, res);
  try {
    await interaction(req, res, m[1], m[2]);
  } catch (e) {
    console.error(`interaction failed: ${e}`);
    if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`interaction failed: ${e.message}\n`);
  }
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(`ready ${issuer}`);
