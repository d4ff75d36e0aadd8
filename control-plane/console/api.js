// The console's client of the /v1 API: the session (token and who the user
// is), calls with the token, and the permission check behind every button.

const KEY = 'smartsolar.console.session';

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** {token, user: {username, permissions, user_product_visibility, entity_id}} or null. */
export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

function remember(s) {
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
}

let settings = {levels: [], permissions: {}, tile_url: null};

/** Loads /console/config.json (tiles, the level each action route needs). */
export async function loadSettings() {
  const r = await fetch('/console/config.json');
  settings = await r.json();
  return settings;
}

export function consoleSettings() {
  return settings;
}

function messageOf(body, status) {
  if (body && typeof body === 'object') {
    const parts = [body.message, body.validation_errors && JSON.stringify(body.validation_errors)];
    const text = parts.filter((p) => p && typeof p !== 'object').join(' ');
    if (text) return text;
    if (body.message) return JSON.stringify(body.message);
  }
  return typeof body === 'string' && body ? body : `HTTP ${status}`;
}

/** Calls /v1`path`; answers the parsed JSON; throws ApiError on a non-2xx. */
export async function api(method, path, body) {
  const s = session();
  const headers = {};
  if (s) headers.Authorization = `Token token=${s.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(`/v1${path}`, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  const text = await r.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch { /* not JSON: keep the text */ }
  if (r.status === 401 && s) {
    remember(null);
    location.hash = '#/login';
  }
  if (!r.ok) throw new ApiError(r.status, messageOf(parsed, r.status), parsed);
  return parsed;
}

/** `path?q=<json>&k=v` for the generic list routes and dashboard2. */
export function withQuery(path, q, params = {}) {
  const search = new URLSearchParams();
  if (q) search.set('q', JSON.stringify(q));
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') search.set(k, v);
  const s = search.toString();
  return s ? `${path}?${s}` : path;
}

/** Logs in; keeps the token and the user's level and scope (from /v1/whoami). */
export async function login(username, password) {
  const body = await api('POST', '/auth/login', {username, password});
  const token = body.message.login_successful.API_token;
  remember({token, user: null});
  const me = await api('GET', '/whoami');
  remember({token, user: me.data});
  return me.data;
}

export function logout() {
  remember(null);
}

/**
 * Whether the logged-in user may call `method path` (path as the API
 * documents it, e.g. '/products/{product_imei}/enable'), by the level the
 * server's route list names. `global` also needs GLOBAL visibility.
 */
export function can(method, path, {global = false} = {}) {
  const user = session()?.user;
  const needed = settings.permissions[`${method.toUpperCase()} ${path}`];
  if (!user || !needed) return false;
  if (global && user.user_product_visibility !== 'GLOBAL') return false;
  if (needed === 'none') return true;
  return settings.levels.indexOf(user.permissions) >= settings.levels.indexOf(needed);
}

/** Every object of a generic list (pages of `per` until done, at most `max`). */
export async function listAll(path, q, {per = 100, max = 1000} = {}) {
  const out = [];
  for (let page = 1; out.length < max; page++) {
    const body = await api('GET', withQuery(path, q, {page, results_per_page: per}));
    out.push(...body.objects);
    if (page >= (body.total_pages || 1) || !body.objects.length) break;
  }
  return out;
}
