// The demo platform's pages: they only use the assistant's client module.
const base = document.querySelector('meta[name="assistant"]').content;
const { Assistant } = await import(`${base}/v1/client.js`);
const assistant = new Assistant(base);
const $ = (id) => document.getElementById(id);
const text = {
  ready: "{{t:The assistant is running on this computer and ready to use.}}",
  notPaired: "{{t:The assistant is running on this computer; pair this page with it to use it.}}",
  absent: "{{t:The assistant is not running on this computer. Start it with: tokenkeys assistant}}",
  typeCode: "{{t:Type the code the assistant shows.}}",
  generated: "{{t:Key pair {designation} created ({status}).}}",
  opened: "{{t:opened ({bytes} bytes)}}",
  failed: "{{t:{type}: {message}}}",
  noKeys: "{{t:No key pair in this service.}}",
  yes: "{{t:yes}}",
  no: "{{t:no}}",
  present: "{{t:present}}",
  awaiting: "{{t:awaiting certificate}}",
};
const fill = (t, v) => t.replace(/\{(\w+)\}/g, (_, k) => v[k] ?? "");
const say = (message) => { $("message").textContent = message; };

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  row.append(td);
  return td;
}

async function detect() {
  const state = await assistant.status();
  const paired = state.ready && state.paired && assistant.token;
  $("assistant-state").textContent = !state.ready ? text.absent : paired ? text.ready : text.notPaired;
  $("assistant-state").dataset.state = !state.ready ? "absent" : paired ? "ready" : "unpaired";
  if ($("pairing")) $("pairing").hidden = !state.ready || paired;
  if (paired) {
    await loadTokens();
    if (document.body.dataset.screen === "admin") await loadKeys();
  }
  return paired;
}

async function loadTokens() {
  const { tokens } = await assistant.tokens();
  const select = $("token");
  select.replaceChildren();
  for (const t of tokens) {
    const option = document.createElement("option");
    option.value = t.uri;
    option.textContent = t.label;
    if (t.default) option.selected = true;
    select.append(option);
  }
}

async function loadKeys() {
  const { keys } = await assistant.keys($("service").value);
  const body = $("keys").querySelector("tbody");
  body.replaceChildren();
  if (!keys.length) {
    const row = body.insertRow();
    cell(row, text.noKeys).colSpan = 6;
  }
  for (const k of keys) {
    const row = body.insertRow();
    row.dataset.designation = k.designation;
    cell(row, k.designation);
    cell(row, k.cn || "");
    cell(row, k.algorithm);
    cell(row, k.expiry);
    cell(row, k.backup ? text.yes : text.no);
    const pem = cell(row, k.certificate_pem ? text.present : text.awaiting, "certificate");
    if (k.certificate_pem) pem.title = k.certificate_pem;
    row.dataset.certificate = k.certificate_pem || "";
  }
}

function setupAdmin() {
  $("pair-start").onclick = async () => {
    try {
      await assistant.startPairing();
      $("pair-form").hidden = false;
      say(text.typeCode);
    } catch (e) { say(fill(text.failed, e)); }
  };
  $("pair-confirm").onclick = async () => {
    try {
      await assistant.confirmPairing($("pair-code").value.trim());
      say("");
      await detect();
    } catch (e) { say(fill(text.failed, e)); }
  };
  $("service").onchange = () => loadKeys().catch((e) => say(fill(text.failed, e)));
  $("generate").onclick = async () => {
    $("generate-result").textContent = "";
    try {
      const done = await assistant.generateKey({
        designation: $("designation").value, cn: $("cn").value || undefined,
        days: Number($("days").value), algorithm: $("algorithm").value,
        backup: $("backup").checked, service: $("service").value, token: $("token").value });
      $("generate-result").textContent = fill(text.generated, { ...done.key, status: done.status });
      await loadKeys();
    } catch (e) { say(fill(text.failed, e)); }
  };
}

function setupOpening() {
  $("open").onclick = async () => {
    const files = [...$("envelopes").files];
    const body = $("results").querySelector("tbody");
    body.replaceChildren();
    say("");
    let session;
    try {
      session = await assistant.openSession({ consultation: $("consultation").value,
        service: $("service").value, token: $("token").value, count: files.length });
    } catch (e) { say(fill(text.failed, e)); return; }
    try {
      for (const file of files) {
        const row = body.insertRow();
        row.dataset.file = file.name;
        cell(row, file.name);
        const result = await session.open(file);
        if (result.ok) {
          cell(row, fill(text.opened, { bytes: result.bytes.length }), "status");
          cell(row, new TextDecoder().decode(result.bytes.slice(0, 200)), "content");
          row.dataset.status = "opened";
        } else {
          cell(row, fill(text.failed, result.error), "status");
          cell(row, "", "content");
          row.dataset.status = "failed";
        }
      }
    } catch (e) { say(fill(text.failed, e)); }
    finally { await session.close().catch(() => {}); }
  };
}

if (document.body.dataset.screen === "admin") setupAdmin(); else setupOpening();
detect().catch((e) => say(fill(text.failed, e)));
