// The assistant's own window. The launch secret comes from this page's address
// fragment (#...), printed by `tokenkeys assistant`; every call carries it.
const secret = location.hash.slice(1);
const text = {
  ready: "{{t:The assistant is running and ready.}}",
  noSecret: "{{t:Open this window from the address the assistant printed when it started (it ends with #…).}}",
  lost: "{{t:The assistant does not answer: is it still running?}}",
  noCodes: "{{t:No page is waiting for a pairing code.}}",
  noApprovals: "{{t:Nothing is waiting for your approval.}}",
  noSessions: "{{t:No opening session is running.}}",
  noLocked: "{{t:No origin is locked.}}",
  noPairings: "{{t:No origin is paired.}}",
  approve: "{{t:Approve}}",
  refuse: "{{t:Refuse}}",
  unlock: "{{t:Unlock}}",
  pin: "{{t:PIN of {token}}}",
  pinpad: "{{t:Type the PIN on the reader's PIN pad after approving.}}",
  session: "{{t:{origin}: consultation {consultation}, {opened} opened, {failed} failed, {remaining} left, {expires} s left}}",
  codeFor: "{origin}",
};
const fill = (template, values) => template.replace(/\{(\w+)\}/g, (_, k) => values[k] ?? "");

async function call(path, body = {}) {
  const response = await fetch(path, {
    method: "POST", cache: "no-store",
    headers: { "Content-Type": "application/json", "X-Tokenkeys-Client": "1",
               "X-Tokenkeys-Secret": secret },
    body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ? data.error.message : response.status);
  return data;
}

function list(id, items, empty, render) {
  const ul = document.getElementById(id);
  ul.replaceChildren();
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = empty;
    ul.append(li);
  }
  for (const item of items) ul.append(render(item));
}

const shown = new Set();

function approvalBox(request) {
  const box = document.createElement("div");
  box.className = "approval";
  box.dataset.id = request.id;
  const p = document.createElement("p");
  p.className = "text";
  p.textContent = request.text;
  box.append(p);
  let pin = null;
  if (request.needs_pin) {
    const label = document.createElement("label");
    label.textContent = fill(text.pin, { token: request.token }) + " ";
    pin = document.createElement("input");
    pin.type = "password";
    pin.autocomplete = "off";
    pin.className = "pin";
    label.append(pin);
    box.append(label, document.createElement("br"));
  } else {
    const hint = document.createElement("p");
    hint.textContent = text.pinpad;
    box.append(hint);
  }
  const error = document.createElement("p");
  error.className = "error";
  const yes = document.createElement("button");
  yes.textContent = text.approve;
  yes.className = "approve";
  const no = document.createElement("button");
  no.textContent = text.refuse;
  no.className = "refuse";
  const send = async (approve) => {
    try {
      await call("/ui/api/answer", { id: request.id, approve, pin: approve && pin ? pin.value : null });
      box.remove();
    } catch (e) { error.textContent = e.message; }
  };
  yes.onclick = () => send(true);
  no.onclick = () => send(false);
  box.append(yes, no, error);
  return box;
}

async function refresh() {
  const state = document.getElementById("state");
  if (!secret) { state.textContent = text.noSecret; return; }
  let data;
  try { data = await call("/ui/api/state"); } catch (e) { state.textContent = text.lost; return; }
  state.textContent = text.ready;
  list("codes", data.codes, text.noCodes, (c) => {
    const li = document.createElement("li");
    li.textContent = fill(text.codeFor, c) + " ";
    const code = document.createElement("span");
    code.className = "code";
    code.textContent = c.code;
    li.append(code);
    return li;
  });
  const approvals = document.getElementById("approvals");
  const waiting = new Set(data.approvals.map((r) => r.id));
  for (const box of approvals.querySelectorAll(".approval")) {
    if (!waiting.has(box.dataset.id)) box.remove();
  }
  for (const request of data.approvals) {
    if (!approvals.querySelector(`[data-id="${request.id}"]`)) approvals.append(approvalBox(request));
  }
  const none = approvals.querySelector(".none");
  if (data.approvals.length && none) none.remove();
  if (!data.approvals.length && !none) {
    const p = document.createElement("p");
    p.className = "none";
    p.textContent = text.noApprovals;
    approvals.append(p);
  }
  list("sessions", data.sessions, text.noSessions, (s) => {
    const li = document.createElement("li");
    li.textContent = fill(text.session, { ...s, expires: s.expires_in });
    return li;
  });
  list("locked", data.locked, text.noLocked, (origin) => {
    const li = document.createElement("li");
    li.textContent = origin + " ";
    const button = document.createElement("button");
    button.textContent = text.unlock;
    button.onclick = () => call("/ui/api/unlock", { origin }).then(refresh);
    li.append(button);
    return li;
  });
  list("pairings", data.pairings, text.noPairings, (p) => {
    const li = document.createElement("li");
    li.textContent = `${p.origin} (${p.created_at})`;
    return li;
  });
}

refresh();
setInterval(refresh, 700);
