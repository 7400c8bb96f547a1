// tokenkeys assistant client (ES module), served by the assistant at /v1/client.js.
//
//   import { Assistant } from "http://127.0.0.1:8765/v1/client.js";
//   const assistant = new Assistant();            // http://127.0.0.1:8765 by default
//   const state = await assistant.status();       // {ready, version, paired, ...}
//   await assistant.startPairing();               // the assistant shows a 6-digit code
//   await assistant.confirmPairing(code);         // keeps the bearer token (localStorage)
//   const keys = await assistant.keys("achats");
//   const session = await assistant.openSession({consultation: "2026-AO-001", count: 12});
//   const result = await session.open(envelopeBytes);   // {ok, bytes} or {ok: false, error}
//   await session.close();
//
// Every failure is an AssistantError with the assistant's error type (the CLI's --json
// types: PinIncorrect, ApprovalRefused, NotPaired, ...), its message and HTTP status.
// The page never sees a PIN: the user types it in the assistant's own window.

export const DEFAULT_URL = "http://127.0.0.1:8765";

export class AssistantError extends Error {
  constructor(status, error) {
    super(error.message);
    this.name = "AssistantError";
    this.status = status;
    this.type = error.type;
    this.details = error;
  }
}

export class Assistant {
  constructor(url = DEFAULT_URL, { storage = globalThis.localStorage } = {}) {
    this.url = url.replace(/\/$/, "");
    this.storage = storage;
    this.storageKey = `tokenkeys-assistant-token:${this.url}`;
  }

  get token() { return this.storage ? this.storage.getItem(this.storageKey) : null; }
  set token(value) {
    if (!this.storage) return;
    if (value) this.storage.setItem(this.storageKey, value);
    else this.storage.removeItem(this.storageKey);
  }

  async request(method, path, { json, body, type, raw = false } = {}) {
    const headers = { "X-Tokenkeys-Client": "1" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (body !== undefined) {
      headers["Content-Type"] = type || "application/octet-stream";
    }
    let response;
    try {
      response = await fetch(this.url + path, { method, headers, body, mode: "cors",
                                                credentials: "omit", cache: "no-store",
                                                targetAddressSpace: "loopback" });
    } catch (e) {
      throw new AssistantError(0, { type: "Unreachable",
                                    message: "the assistant is not running on this computer" });
    }
    if (!response.ok) {
      let error = { type: "HttpError", message: `HTTP ${response.status}` };
      try { error = (await response.json()).error || error; } catch (e) { /* not JSON */ }
      if (response.status === 401) this.token = null;
      throw new AssistantError(response.status, error);
    }
    return raw ? response : response.json();
  }

  // Detection: works before pairing (no token needed).
  async status() {
    try {
      return await this.request("GET", "/v1/status");
    } catch (e) {
      if (e.status === 0) return { ready: false, paired: false };
      throw e;
    }
  }

  startPairing() { return this.request("POST", "/v1/pairing/start", { json: {} }); }

  async confirmPairing(code) {
    const done = await this.request("POST", "/v1/pairing/confirm", { json: { code } });
    this.token = done.token;
    return { paired: true, origin: done.origin };
  }

  forget() { this.token = null; }

  tokens() { return this.request("GET", "/v1/tokens"); }

  keys(service) {
    const query = service ? `?service=${encodeURIComponent(service)}` : "";
    return this.request("GET", `/v1/keys${query}`);
  }

  // {designation, cn, algorithm, days, backup, service, token}: waits for the user's
  // approval and PIN in the assistant; returns the certificate or the public key.
  generateKey(spec) { return this.request("POST", "/v1/keys", { json: spec }); }

  importCertificate(designation, certificatePem, { chainPem, service, token } = {}) {
    return this.request("POST", `/v1/keys/${encodeURIComponent(designation)}/certificate`,
                        { json: { certificate_pem: certificatePem, chain_pem: chainPem,
                                  service, token } });
  }

  recipients(reference, service) {
    const query = service ? `?service=${encodeURIComponent(service)}` : "";
    return this.request("GET",
      `/v1/consultations/${encodeURIComponent(reference)}/recipients${query}`);
  }

  createConsultation(spec) { return this.request("POST", "/v1/consultations", { json: spec }); }

  closeConsultation(reference, service) {
    return this.request("POST", `/v1/consultations/${encodeURIComponent(reference)}/close`,
                        { json: service ? { service } : {} });
  }

  // {consultation, count, minutes, service, token}: one approval and one PIN for the whole
  // session, bounded by count and minutes.
  async openSession(spec) {
    const facts = await this.request("POST", "/v1/openings", { json: spec });
    return new OpeningSession(this, facts);
  }
}

export class OpeningSession {
  constructor(assistant, facts) {
    this.assistant = assistant;
    this.facts = facts;
    this.id = facts.session;
  }

  // One envelope (Blob, ArrayBuffer or Uint8Array). Resolves to
  // {ok: true, bytes: Uint8Array, recipient} or {ok: false, error} for this envelope;
  // rejects when the session itself cannot go on (device failure, session over).
  async open(envelope) {
    try {
      const response = await this.assistant.request(
        "POST", `/v1/openings/${this.id}/envelopes`, { body: envelope, raw: true });
      const bytes = new Uint8Array(await response.arrayBuffer());
      return { ok: true, bytes,
               recipient: decodeURIComponent(response.headers.get("X-Tokenkeys-Recipient") || ""),
               remaining: Number(response.headers.get("X-Tokenkeys-Remaining")) };
    } catch (e) {
      if (e instanceof AssistantError && [409, 422].includes(e.status)) {
        return { ok: false, error: e.details };
      }
      throw e;
    }
  }

  state() { return this.assistant.request("GET", `/v1/openings/${this.id}`); }

  close() { return this.assistant.request("DELETE", `/v1/openings/${this.id}`, { json: {} }); }
}
