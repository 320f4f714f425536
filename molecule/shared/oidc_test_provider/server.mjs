// The test harness's OpenID provider: panva's oidc-provider (OpenID Certified), configured from
// the platform's wiring (clients, redirect URIs, audience, claims) with test users that have
// passwords and groups. It stands in for Keycloak where Keycloak's archive cannot be had; the
// protocol work (discovery, authorization code + PKCE, tokens, JWKS, end session) is the
// library's, not ours. Only the login form and the user store are written here.
//
// Configuration: a JSON file named by $CONFIG (systemd passes it as a credential):
//   issuer, listen {host, port}, trusted_proxies [nginx's addresses], cookie_keys [..], groups_claim, username_claim,
//   clients [{client_id, client_secret, redirect_uris, post_logout_redirect_uris, resource}],
//   resources {indicator: {audience, ttl}}, users [{username, password, email, name, groups}]
// State (the signing key, generated on first start): $STATE_DIRECTORY/jwks.json

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import Provider, { errors } from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.env.CONFIG, 'utf8'));
const stateDir = process.env.STATE_DIRECTORY || '/var/lib/test-oidc-provider';
const usersByName = new Map(cfg.users.map((u) => [u.username, u]));
const usernameClaim = cfg.username_claim || 'preferred_username';
const groupsClaim = cfg.groups_claim || 'groups';

function signingKeys() {
  const file = path.join(stateDir, 'jwks.json');
  if (!fs.existsSync(file)) {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
    fs.writeFileSync(file, JSON.stringify({ keys: [jwk] }), { mode: 0o600 });
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function userClaims(user) {
  return {
    sub: user.username,
    [usernameClaim]: user.username,
    name: user.name || user.username,
    email: user.email || `${user.username}@example.org`,
    email_verified: true,
    [groupsClaim]: user.groups || [],
  };
}

function checkPassword(user, given) {
  const a = crypto.createHash('sha256').update(String(given)).digest();
  const b = crypto.createHash('sha256').update(String(user.password)).digest();
  return crypto.timingSafeEqual(a, b);
}

const clientResource = new Map(cfg.clients.filter((c) => c.resource).map((c) => [c.client_id, c.resource]));

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris || [],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: c.token_endpoint_auth_method || 'client_secret_basic',
  })),
  jwks: signingKeys(),
  cookies: { keys: cfg.cookie_keys },
  claims: {
    openid: ['sub'],
    profile: ['name', usernameClaim],
    email: ['email', 'email_verified'],
    groups: [groupsClaim],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  responseTypes: ['code'],
  // Scope claims in the ID token too, as Keycloak does: consumers read username and groups there.
  conformIdTokenClaims: false,
  pkce: { methods: ['S256'], required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // A client that is also a resource server (the exec API) gets JWT access tokens for it.
      defaultResource: (ctx, client) => clientResource.get(client.clientId),
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        const rs = cfg.resources[indicator];
        if (!rs) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
        return {
          scope: 'api',
          audience: rs.audience,
          accessTokenTTL: rs.ttl || 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // JWT access tokens carry the username and groups, as Keycloak's do.
  extraTokenClaims: (ctx, token) => {
    const user = token.kind === 'AccessToken' && usersByName.get(token.accountId);
    return user ? { [usernameClaim]: user.username, [groupsClaim]: user.groups || [] } : undefined;
  },
  findAccount: (ctx, id) => {
    const user = usersByName.get(id);
    return user && { accountId: id, claims: () => userClaims(user) };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { Session: 8 * 3600, Interaction: 600, Grant: 8 * 3600, AuthorizationCode: 60, IdToken: 3600 },
  renderError: (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Error', `<p id="error">${esc(out.error)}: ${esc(out.error_description || '')}</p>`);
  },
});
// Behind nginx, which overwrites X-Forwarded-* with its own values: Koa believes them (proxy),
// but only from nginx's addresses. From any other peer (root on this host, the playbook's health
// waits) they are dropped before Koa reads them, so nobody else can pose as https or another host.
// Who may connect at all is the kernel's business: see ../oidc_test_provider.yml (nftables).
provider.proxy = true;
const trustedProxies = new Set((cfg.trusted_proxies || []).map(String));
const peerAddress = (req) => String(req.socket.remoteAddress || '').replace(/^::ffff:/, '');
function dropForwardedUnlessFromProxy(req) {
  if (trustedProxies.has(peerAddress(req))) return;
  for (const name of Object.keys(req.headers)) {
    if (name.startsWith('x-forwarded-') || name === 'forwarded' || name === 'x-real-ip') delete req.headers[name];
  }
}

const esc = (s) => String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;

function loginForm(uid, clientId, error) {
  return page('Sign in', `<p>to ${esc(clientId)}</p>${error ? `<p id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label>Username <input name="username" id="username" required></label>
<label>Password <input name="password" id="password" type="password" required></label>
<button type="submit" id="sign-in">Sign in</button></form>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10000) throw new Error('form too large');
  }
  return Object.fromEntries(new URLSearchParams(body));
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

// The first-party clients of the platform are consented to on the user's behalf, as Keycloak
// does for clients without "consent required".
async function consent(details) {
  const { prompt: { details: missing }, params, session, grantId } = details;
  const grant = grantId ? await provider.Grant.find(grantId) : new provider.Grant({
    accountId: session.accountId, clientId: params.client_id,
  });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return { consent: { grantId: await grant.save() } };
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Error', '<p id="error">stale login form</p>'));
  const clientId = details.params.client_id;
  if (details.prompt.name === 'login') {
    if (req.method === 'GET' && !action) return send(res, 200, loginForm(uid, clientId));
    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req);
      const user = usersByName.get(form.username || '');
      if (!user || !checkPassword(user, form.password || '')) {
        console.log(`login refused for ${JSON.stringify(form.username || '')}`);
        return send(res, 401, loginForm(uid, clientId, 'Invalid username or password.'));
      }
      console.log(`login of ${user.username} for ${clientId}`);
      return provider.interactionFinished(req, res, { login: { accountId: user.username } }, { mergeWithLastSubmission: false });
    }
  } else if (details.prompt.name === 'consent') {
    return provider.interactionFinished(req, res, await consent(details), { mergeWithLastSubmission: true });
  }
  return send(res, 400, page('Error', '<p id="error">unexpected request</p>'));
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  dropForwardedUnlessFromProxy(req);
  const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?$/.exec(new URL(req.url, 'http://x').pathname);
  if (!m) return callback(req, res);
  interaction(req, res, m[1], m[2]).catch((err) => {
    console.error(`interaction: ${err}`);
    if (!res.headersSent) send(res, 400, page('Error', `<p id="error">${esc(err.message)}</p>`));
  });
});
server.listen(cfg.listen.port, cfg.listen.host, () => {
  console.log(`oidc-provider ${cfg.issuer} listening on ${cfg.listen.host}:${cfg.listen.port}`);
});
