// Shared by lookloop's pages: API calls with the bearer token, error bodies turned into readable messages,
// sign-in and where the token is kept. An ES module, served with the pages from /pages/.

export const $ = (id) => document.getElementById(id);

/** An error answer from the API; its message is the body's `detail` when the body says one. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** Thrown once the server refuses the page's token; the page has been told already (onSignedOut). */
export class SignedOut extends Error {
  constructor() {
    super("signed out");
    this.name = "SignedOut";
  }
}

/** The readable message of an error response: the API's `detail`, else `fallback`, else the status text. */
export async function errorMessage(resp, fallback = "") {
  let detail = null;
  try { detail = (await resp.json()).detail; } catch (_) { /* not JSON */ }
  if (typeof detail === "string" && detail) return detail;
  return fallback || resp.statusText || `HTTP ${resp.status}`;
}

/**
 * The API as one page sees it. The token lives in `storage` under `tokenKey` (the tab's sessionStorage unless the
 * page keeps it longer). With `onSignedOut`, a 401 forgets the token and calls it with a message for the sign-in
 * form; without, a 401 is an ordinary ApiError (a device token typed into the simulator stays until changed).
 */
export function apiClient({ tokenKey, storage = window.sessionStorage, onSignedOut = null }) {
  const client = {
    get token() { return storage.getItem(tokenKey) || ""; },
    set token(value) {
      if (value) storage.setItem(tokenKey, value);
      else storage.removeItem(tokenKey);
    },

    /** `headers` with the Authorization header added when there is a token. */
    headers(headers = {}) {
      const token = client.token;
      return token ? { ...headers, Authorization: `Bearer ${token}` } : { ...headers };
    },

    /** fetch with the token; `json` is sent as a JSON body. The raw Response, whatever its status. */
    request(path, { json, headers = {}, ...init } = {}) {
      if (json !== undefined) {
        init.body = JSON.stringify(json);
        headers = { ...headers, "Content-Type": "application/json" };
      }
      return fetch(path, { ...init, headers: client.headers(headers) });
    },

    /** request(), then the body: JSON parsed, other content as a Blob, null for 204. Throws ApiError or SignedOut. */
    async api(path, options = {}) {
      const resp = await client.request(path, options);
      if (resp.status === 401 && onSignedOut) {
        client.token = "";
        onSignedOut("Your session ended: sign in again.");
        throw new SignedOut();
      }
      if (!resp.ok) throw new ApiError(await errorMessage(resp), resp.status);
      if (resp.status === 204) return null;
      const type = resp.headers.get("content-type") || "";
      return type.includes("json") ? resp.json() : resp.blob();
    },

    post(path, json) {
      return client.api(path, { method: "POST", json });
    },

    /** Signs in and keeps the token; with `roles`, an account of another role is refused with a clear message. */
    async signIn(username, password, roles = null) {
      const resp = await fetch("/v1/auth/login", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username, password }),
      });
      if (!resp.ok) throw new ApiError(await errorMessage(resp, "sign-in failed"), resp.status);
      const account = await resp.json();
      if (roles && !roles.includes(account.role)) {
        logout(account.token);
        throw new ApiError(`this page is for ${roles.join(" and ")}s; you are signed in as ${account.role}`, 403);
      }
      client.token = account.token;
      return account;
    },

    /** Forgets the token now and ends its session on the server (best effort: the page signs out anyway). */
    signOut() {
      const token = client.token;
      client.token = "";
      return token ? logout(token) : Promise.resolve();
    },
  };
  return client;
}

function logout(token) {
  return fetch("/v1/auth/logout", { method: "POST", keepalive: true, headers: { Authorization: `Bearer ${token}` } })
    .catch(() => {});
}

/** Wires the page's sign-in form (#login-form, #username, #password, #login-error) to `client`. */
export function signInForm(client, { roles = null, onSignedIn }) {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const account = await client.signIn($("username").value.trim(), $("password").value, roles);
      $("password").value = "";
      onSignedIn(account);
    } catch (err) {
      $("login-error").textContent = err.message;
    }
  });
}
