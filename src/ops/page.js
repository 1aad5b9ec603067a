// The status page's script: polls /v1/status, a page of /v1/jobs/list and a page of
// /v1/tenants every 2 s and fills the page. Text goes in with textContent only: tenant
// names and reasons are data, not markup. The API token for the buttons that change
// something (retry, pause, resume) is asked for when needed and kept in this tab's
// sessionStorage only.
"use strict";

const REFRESH_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

function $(id) { return document.getElementById(id); }

function setText(id, value) { $(id).textContent = String(value); }

function utc(ms) { return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z"); }

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function emptyRow(tbody, columns, text) {
  const tr = document.createElement("tr");
  const td = cell(tr, text, "empty");
  td.colSpan = columns;
  tbody.appendChild(tr);
}

function drawChart(perSecond) {
  const svg = $("chart");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  // Drawn in the element's own pixel size, so bars fill the width and text is not stretched.
  const W = Math.max(svg.clientWidth || 600, 120), H = 160, top = 14, bottom = 16;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const n = Math.max(perSecond.length, 60);
  const max = Math.max(1, ...perSecond);
  const bw = W / n;
  const axis = document.createElementNS(SVG_NS, "line");
  axis.setAttribute("class", "axis");
  axis.setAttribute("x1", "0"); axis.setAttribute("x2", String(W));
  axis.setAttribute("y1", String(H - bottom)); axis.setAttribute("y2", String(H - bottom));
  svg.appendChild(axis);
  perSecond.forEach((v, i) => {
    const h = (H - top - bottom) * v / max;
    const r = document.createElementNS(SVG_NS, "rect");
    r.setAttribute("class", "bar");
    r.setAttribute("x", String((n - perSecond.length + i) * bw + 0.5));
    r.setAttribute("y", String(H - bottom - h));
    r.setAttribute("width", String(Math.max(bw - 1, 1)));
    r.setAttribute("height", String(h));
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = `${v} done, ${perSecond.length - 1 - i} s ago`;
    r.appendChild(title);
    svg.appendChild(r);
  });
  const label = (x, y, text, anchor) => {
    const t = document.createElementNS(SVG_NS, "text");
    t.setAttribute("x", String(x)); t.setAttribute("y", String(y));
    t.setAttribute("text-anchor", anchor);
    t.textContent = text;
    svg.appendChild(t);
  };
  label(2, 10, `max ${max}/s`, "start");
  label(2, H - 3, "-60 s", "start");
  label(W - 2, H - 3, "now", "end");
  if (perSecond.length === 0) label(W / 2, H / 2, "no throughput data from this backend", "middle");
}

function renderStatus(s) {
  setText("queue-name", s.queue);
  queuePaused = s.paused != null;
  const p = s.paused;
  setText("queue-state", p
    ? `PAUSED since ${utc(p.since_ms)}${p.by ? ` by ${p.by}` : ""}: ${p.reason} (no job is dispatched)`
    : "running");
  $("queue-state").className = p ? "paused" : "";
  $("queue-bar").className = "card" + (p ? " paused" : "");
  setText("queue-toggle", p ? "Resume queue" : "Pause queue");
  // Redis replication (Sentinel, --min-replicas): a banner while fewer replicas are
  // connected than asked, saying what is at risk.
  const r = s.replication;
  const degraded = r != null && r.connected < r.min_replicas;
  $("replication-banner").hidden = !degraded;
  if (degraded) {
    setText("replication-banner", r.mode === "strict"
      ? `Redis replication: ${r.connected} of ${r.min_replicas} replica(s) connected; with --replication strict no write is acknowledged and nothing is dispatched until ${r.min_replicas} are`
      : `Redis replication degraded: ${r.connected} of ${r.min_replicas} replica(s) connected; writes since ${utc(r.degraded_since_ms)} are on one node only; a second failure loses them`);
  }
  setText("updated", `updated ${utc(s.now_ms)}`);
  setText("queued", s.queued);
  setText("scheduled", s.scheduled);
  setText("running", s.running);
  setText("oldest", s.oldest_running_ms == null ? "" : `oldest lease ${(s.oldest_running_ms / 1000).toFixed(1)} s`);
  setText("done", s.done);
  // Issue 18: what the done jobs did, where the queue counts it.
  const by = s.outcomes || {};
  const named = Object.keys(by).filter(k => by[k] > 0).map(k => `${by[k]} ${k.replace("_", " ")}`);
  setText("done-outcomes", named.length ? named.join(", ") : "webhooks created");
  setText("dead-total", s.dead);
  $("dead-total").className = "value" + (s.dead > 0 ? " nonzero" : "");
  setText("throughput", s.throughput.done == null ? "n/a" : s.throughput.done);
  drawChart(s.throughput.per_second || []);

  const throttled = s.tenants.filter(t => t.state !== "ready" && t.waiting > 0);
  setText("throttled-count", `${throttled.length} of ${s.tenants.length} active`);
  const body = $("throttled");
  body.replaceChildren();
  if (throttled.length === 0) emptyRow(body, 6, "no tenant is throttled");
  for (const t of throttled.slice(0, 200)) {
    const tr = document.createElement("tr");
    tr.dataset.tenant = t.tenant;
    cell(tr, t.tenant);
    cell(tr, t.waiting, "num");
    cell(tr, `${t.calls_in_window}/${t.limit}`, "num");
    const held = t.state === "held" && t.hold;
    const until = held ? t.hold.until_ms : t.state === "quota_reached" ? t.quota_until_ms : t.paused_until_ms;
    cell(tr, held ? `held (${t.hold.kind})` : t.state === "quota_reached" ? "daily quota reached" : t.state === "paused" ? "paused" : "at its share", `state-${t.state}`);
    cell(tr, held && until == null ? "until resumed" : until == null ? "next window" : `${utc(until)} (in ${Math.max(0, (until - s.now_ms) / 1000).toFixed(1)} s)`);
    cell(tr, held ? t.hold.reason + (t.hold.by ? ` (by ${t.hold.by})` : "") : t.state === "quota_reached" ? `daily quota reached (${t.calls_today} of ${t.daily_limit}), resumes at ${utc(until)}` : t.pause_reason || (t.state === "at_limit" ? "share spent in this window" : ""), "reason");
    body.appendChild(tr);
  }

  // Every active tenant's share: the ones cut by another client's traffic first.
  const why = {
    configured: "configured limit",
    learned_limit: "learned limit",
    reserve: "reserve",
    shared: "shared with other clients",
  };
  const shares = s.tenants.slice().sort((a, b) =>
    (a.share_reason === "shared" ? 0 : 1) - (b.share_reason === "shared" ? 0 : 1) ||
    a.tenant.localeCompare(b.tenant));
  setText("shares-count", `${shares.filter(t => t.share_reason === "shared").length} shared with other clients`);
  const sharesBody = $("shares");
  sharesBody.replaceChildren();
  if (shares.length === 0) emptyRow(sharesBody, 6, "no active tenant");
  for (const t of shares.slice(0, 200)) {
    const tr = document.createElement("tr");
    tr.dataset.shareTenant = t.tenant;
    cell(tr, t.tenant);
    cell(tr, t.limit, "num");
    cell(tr, t.reserve ?? 0, "num");
    const exact = typeof t.share_calls === "number" && t.share_calls > 0 ? t.share_calls : null;
    cell(tr, exact !== null && Math.abs(exact - t.share) >= 0.05 ? exact.toFixed(1) : (t.share ?? t.limit), "num");
    const reason = why[t.share_reason] || t.share_reason || "";
    cell(tr, typeof t.other_use === "number" ? `${reason} (others about ${t.other_use.toFixed(0)} per 5 s)` : reason, "reason");
    cell(tr, t.daily_limit == null ? `${t.calls_today ?? 0}` : `${t.calls_today ?? 0} / ${t.daily_limit}`, "num");
    sharesBody.appendChild(tr);
  }
}

// Whether the queue is paused, as last read: what its button does.
let queuePaused = false;

// The tenants table shows one page at a time, as the jobs table does.
let tenantsCursor = null;
let tenantsNext = null;
let tenantsPage = 1;

function tenantsUrl(cursor, limit) {
  const q = new URLSearchParams({ sort: $("tenants-sort").value, limit: String(limit) });
  if ($("tenants-filter").value) q.set("filter", $("tenants-filter").value);
  if (cursor) q.set("cursor", cursor);
  return `/v1/tenants?${q}`;
}

// Rows of the tenants table.
const TENANTS_ROWS = 50;
// A filtered page examines at most 1,000 tenants, so a rare state can give a short page
// with a `next`: up to this many pages are read in all to fill it, each asking for the rows
// still missing (so the last one's `next` is where the table goes on).
const TENANTS_FOLLOW = 4;

async function fetchTenants() {
  const page = await getJson(tenantsUrl(tenantsCursor, TENANTS_ROWS));
  for (let n = 1; n < TENANTS_FOLLOW && page.next && page.tenants.length < TENANTS_ROWS; n++) {
    const more = await getJson(tenantsUrl(page.next, TENANTS_ROWS - page.tenants.length));
    page.tenants = page.tenants.concat(more.tenants);
    page.next = more.next;
  }
  return page;
}

function renderTenants(p) {
  setText("tenants-count", `${p.total} registered`);
  setText("tenants-page", `page ${tenantsPage}`);
  tenantsNext = p.next;
  $("tenants-next").disabled = !p.next;
  $("tenants-first").disabled = !tenantsCursor;
  const body = $("tenants");
  body.replaceChildren();
  if (p.tenants.length === 0) emptyRow(body, 9, p.next ? "none on this stretch: next page" : "no tenant");
  for (const t of p.tenants) {
    const tr = document.createElement("tr");
    tr.dataset.tenantRow = t.tenant;
    cell(tr, t.tenant);
    cell(tr, t.hold ? `held (${t.hold.kind})` : t.state, `state-${t.state}`);
    cell(tr, t.waiting, "num");
    cell(tr, t.in_flight, "num");
    cell(tr, t.done, "num");
    cell(tr, t.dead, "num");
    cell(tr, `${t.calls_in_window}/${t.share}`, "num");
    const h = t.hold;
    cell(tr, h
      ? `${h.reason} (${h.by ? `by ${h.by}, ` : ""}since ${utc(h.since_ms)}${h.until_ms != null ? `, until ${utc(h.until_ms)}` : ""})`
      : t.next_call_ms != null ? `next call at ${utc(t.next_call_ms)}`
      : t.state === "stuck" ? "dead jobs: see the jobs below" : "", "reason");
    const actions = cell(tr, "");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "tenant-toggle";
    const paused = h && h.kind === "paused";
    button.textContent = h ? "Resume" : "Pause";
    button.addEventListener("click", () => steer(
      `/v1/tenants/${encodeURIComponent(t.tenant)}/${h ? "resume" : "pause"}`,
      h ? null : pauseBody(),
      h ? `${t.tenant} resumed${paused ? "" : ` (was ${h.kind})`}` : `${t.tenant} paused`));
    actions.appendChild(button);
    body.appendChild(tr);
  }
}

// The body of a pause: the reason typed, if any.
function pauseBody() {
  const reason = $("pause-reason").value.trim();
  return reason ? { reason } : {};
}

// A POST that needs the API token: asks for it when this tab has none, forgets it when it
// is refused. Shows what happened in `resultId`; the answer's JSON, or null when it failed.
async function authorizedPost(path, body, resultId) {
  let token = sessionStorage.getItem("lsq-token");
  if (!token) {
    token = window.prompt("API token (LSQ_API_TOKEN):");
    if (!token) return null;
  }
  try {
    const r = await fetch(path, {
      method: "POST",
      headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    if (r.status === 401) {
      sessionStorage.removeItem("lsq-token");
      setText(resultId, "wrong token");
      return null;
    }
    if (!r.ok) { setText(resultId, `failed: HTTP ${r.status}`); return null; }
    sessionStorage.setItem("lsq-token", token);
    return await r.json();
  } catch (e) {
    setText(resultId, `failed: ${e.message}`);
    return null;
  }
}

// Pauses or resumes (a tenant, or the queue), then redraws at once.
async function steer(path, body, done) {
  const answer = await authorizedPost(path, body, "steer-result");
  if (answer) {
    setText("steer-result", done);
    showTenants();
  }
}

$("queue-toggle").addEventListener("click", () => queuePaused
  ? steer("/v1/resume", null, "queue resumed")
  : steer("/v1/pause", pauseBody(), "queue paused"));

async function showTenants() {
  try {
    const [s, t] = await Promise.all([getJson("/v1/status"), fetchTenants()]);
    renderStatus(s);
    renderTenants(t);
  } catch (e) {
    setText("conn", `cannot refresh: ${e.message}`);
  }
}
$("tenants-next").addEventListener("click", () => {
  if (!tenantsNext) return;
  tenantsCursor = tenantsNext;
  tenantsPage += 1;
  showTenants();
});
$("tenants-first").addEventListener("click", () => { tenantsCursor = null; tenantsPage = 1; showTenants(); });
for (const id of ["tenants-sort", "tenants-filter"]) {
  $(id).addEventListener("change", () => { tenantsCursor = null; tenantsPage = 1; showTenants(); });
}

// The jobs table shows one page at a time, from a cursor: `jobsCursor` is the cursor of
// the page shown (null: the first), `jobsNext` the cursor of the one after it.
let jobsCursor = null;
let jobsNext = null;
let jobsPage = 1;

function jobsUrl() {
  const q = new URLSearchParams({ of: $("jobs-of").value, limit: "50" });
  if (jobsCursor) q.set("cursor", jobsCursor);
  return `/v1/jobs/list?${q}`;
}

function renderJobs(p, deadTotal) {
  setText("dead-count", `${deadTotal} dead`);
  setText("jobs-page", `page ${jobsPage}`);
  $("retry-all").disabled = deadTotal === 0;
  jobsNext = p.next;
  $("jobs-next").disabled = !p.next;
  $("jobs-first").disabled = !jobsCursor;
  const body = $("jobs");
  body.replaceChildren();
  if (p.jobs.length === 0) emptyRow(body, 6, `no ${$("jobs-of").value} jobs`);
  for (const j of p.jobs) {
    const tr = document.createElement("tr");
    tr.dataset.job = j.job;
    const id = cell(tr, "", "reason");
    const link = document.createElement("a");
    link.className = "job";
    link.textContent = j.job;
    link.addEventListener("click", () => lookUp(`/v1/jobs/${encodeURIComponent(j.job)}`));
    id.appendChild(link);
    cell(tr, j.tenant);
    cell(tr, j.status);
    cell(tr, j.attempts, "num");
    cell(tr, j.status === "done" ? (j.webhook_id || "") : (j.error || ""), "reason");
    const actions = cell(tr, "");
    if (j.status === "dead") {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Retry";
      button.addEventListener("click", () => retry([j.job]));
      actions.appendChild(button);
    }
    body.appendChild(tr);
  }
}

function renderJob(v) {
  $("job-detail").hidden = false;
  setText("job-id", v.job);
  setText("job-tenant", v.tenant);
  setText("job-key", v.key);
  setText("job-state", v.status);
  setText("job-attempts", v.attempts);
  setText("job-webhook", v.webhook_id || "");
  setText("job-error", v.error || "");
  const body = $("job-history");
  body.replaceChildren();
  if (v.history.length === 0) emptyRow(body, 7, "no calls yet");
  for (const a of v.history) {
    const tr = document.createElement("tr");
    cell(tr, utc(a.at_ms));
    cell(tr, a.call);
    cell(tr, a.outcome);
    cell(tr, a.http_status ?? "", "num");
    cell(tr, a.exception_type || "", "reason");
    cell(tr, a.duration_ms, "num");
    cell(tr, a.error || "", "reason");
    body.appendChild(tr);
  }
}

async function lookUp(path) {
  try {
    const r = await fetch(path, { cache: "no-store" });
    if (r.status === 404) {
      $("job-detail").hidden = true;
      setText("lookup-result", "no such job");
      return;
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    setText("lookup-result", "");
    renderJob(await r.json());
  } catch (e) {
    setText("lookup-result", `cannot look up: ${e.message}`);
  }
}

$("lookup-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const what = $("lookup-id").value.trim();
  const tenant = $("lookup-tenant").value.trim();
  if (!what) return;
  lookUp(tenant
    ? `/v1/jobs/by-key?${new URLSearchParams({ tenant, key: what })}`
    : `/v1/jobs/${encodeURIComponent(what)}`);
});

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function refresh() {
  try {
    const [s, p, t] = await Promise.all([getJson("/v1/status"), getJson(jobsUrl()), fetchTenants()]);
    renderStatus(s);
    renderJobs(p, s.dead);
    renderTenants(t);
    setText("conn", "");
    $("conn").className = "meta";
  } catch (e) {
    setText("conn", `cannot refresh: ${e.message}`);
    $("conn").className = "meta bad";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

// Puts dead jobs back in the queue: these ids, or all of them when `ids` is null.
async function retry(ids) {
  $("retry-all").disabled = true;
  try {
    const body = await authorizedPost("/v1/dead/retry", ids ? { jobs: ids } : {}, "retry-result");
    if (body) setText("retry-result", `${body.retried} job(s) put back in the queue`);
  } finally {
    $("retry-all").disabled = false;
  }
}

$("retry-all").addEventListener("click", () => retry(null));
async function showPage() {
  try {
    const [s, p] = await Promise.all([getJson("/v1/status"), getJson(jobsUrl())]);
    renderJobs(p, s.dead);
  } catch (e) {
    setText("conn", `cannot refresh: ${e.message}`);
  }
}
$("jobs-next").addEventListener("click", () => {
  if (!jobsNext) return;
  jobsCursor = jobsNext;
  jobsPage += 1;
  showPage();
});
$("jobs-first").addEventListener("click", () => { jobsCursor = null; jobsPage = 1; showPage(); });
$("jobs-of").addEventListener("change", () => { jobsCursor = null; jobsPage = 1; showPage(); });
refresh();
