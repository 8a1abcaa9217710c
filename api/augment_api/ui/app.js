// The dashboard: a few views over the REST API, called with the user's API key.
// Everything the server sends is written with textContent or attributes, never as
// HTML, and the Content-Security-Policy allows no inline script.
"use strict";

(() => {
  const KEY_STORAGE = "augment-api-key";
  // Relative to /ui/, so the dashboard works behind a path prefix too.
  const API = "../v1/augmentation";
  const POLL_MS = 2000;
  // A job's Events are read from Kubernetes, not from the API's cache: ask when its status
  // changes (Events come with phase changes), else at most this often.
  const EVENTS_MS = 10000;
  const TERMINAL = new Set(["Succeeded", "Failed", "Cancelled"]);
  const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  const $ = (id) => document.getElementById(id);

  // ---- the API ----
  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function apiKey() {
    return sessionStorage.getItem(KEY_STORAGE);
  }

  async function call(path, method = "GET", key = apiKey()) {
    const response = await fetch(API + path, {
      method,
      headers: { "X-Api-Key": key || "", Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail || detail;
      } catch (_) {
        // not JSON: keep the status text
      }
      throw new ApiError(response.status, String(detail));
    }
    return response;
  }

  async function getJson(path, method = "GET") {
    return (await call(path, method)).json();
  }

  // ---- small DOM helpers (text only) ----
  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function replaceRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function show(section) {
    for (const id of ["login", "jobs", "job"]) $(id).hidden = id !== section;
    $("logout").hidden = section === "login";
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function announce(message) {
    $("live").textContent = message;
  }

  // ---- formatting ----
  function age(timestamp, now = Date.now()) {
    if (!timestamp) return "";
    const seconds = Math.max(0, Math.round((now - Date.parse(timestamp)) / 1000));
    if (seconds < 60) return `${seconds}s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
    return `${Math.floor(seconds / 86400)}d`;
  }

  function timeCell(timestamp) {
    const cell = el("td");
    if (timestamp) {
      const time = el("time", age(timestamp));
      time.dateTime = timestamp;
      time.title = new Date(timestamp).toLocaleString();
      cell.append(time);
    }
    return cell;
  }

  function progressText(job) {
    const p = job.progress;
    if (!p.episodes_total) return TERMINAL.has(job.status) ? "" : "starting";
    return `${p.episodes_done} / ${p.episodes_total} episodes (${p.percent}%)`;
  }

  function phaseBadge(job, node = el("span")) {
    node.textContent = job.cancel_requested && !TERMINAL.has(job.status)
      ? `${job.status} (cancelling)` : job.status;
    node.className = `phase phase-${job.status.toLowerCase()}`;
    return node;
  }

  function progressCell(job) {
    const cell = el("td", null, "progress-cell");
    const bar = el("progress");
    bar.max = 100;
    bar.value = job.progress.percent;
    const text = el("span", progressText(job), "progress-text");
    bar.setAttribute("aria-label", `Progress of ${jobTitle(job)}`);
    cell.append(bar, text);
    return cell;
  }

  function jobTitle(job) {
    return (job.spec && job.spec.name) || job.name;
  }

  function datasetOf(job) {
    return job.spec ? job.spec.dataset_id : "";
  }

  // ---- polling: one timer for the page in view ----
  let timer = null;
  let generation = 0; // bumped on every route change: late answers of a left page are dropped

  function stopPolling() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }

  function poll(refresh) {
    const mine = generation;
    const tick = async () => {
      if (mine !== generation) return;
      try {
        if (!document.hidden) await refresh(mine);
        if (mine === generation) showError("");
      } catch (error) {
        if (!handle(error)) return;
      }
      if (mine === generation) timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  // An error of a call: false when it ended the session (the key was refused).
  function handle(error) {
    if (error instanceof ApiError && error.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      route();
      showLoginError("The API did not accept this key: " + error.message);
      return false;
    }
    showError(error instanceof ApiError ? error.message : `Cannot reach the API (${error.message}); retrying.`);
    return true;
  }

  // ---- login ----
  function showLoginError(message) {
    const box = $("login-error");
    box.textContent = message;
    box.hidden = !message;
  }

  async function signIn(event) {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) {
      showLoginError("Enter your API key.");
      return;
    }
    $("login-submit").disabled = true;
    try {
      await call("?limit=1", "GET", key); // only to check the key
      sessionStorage.setItem(KEY_STORAGE, key);
      $("api-key").value = "";
      showLoginError("");
      route();
    } catch (error) {
      showLoginError(error instanceof ApiError ? `Sign-in failed: ${error.message}`
        : `Cannot reach the API: ${error.message}`);
    } finally {
      $("login-submit").disabled = false;
    }
  }

  function signOut() {
    sessionStorage.removeItem(KEY_STORAGE);
    location.hash = "#/";
    route();
  }

  // ---- the jobs list ----
  function jobRow(job) {
    const row = el("tr");
    row.dataset.jobId = job.job_id;
    const nameCell = el("td");
    const link = el("a", jobTitle(job));
    link.href = `#/jobs/${job.job_id}`;
    nameCell.append(link);
    if (jobTitle(job) !== job.name) nameCell.append(el("div", job.name, "muted small"));
    const phaseCell = el("td");
    phaseCell.append(phaseBadge(job));
    row.append(nameCell, phaseCell, progressCell(job), el("td", datasetOf(job)),
      timeCell(job.created_at));
    return row;
  }

  async function refreshJobs(mine) {
    const list = await getJson("?limit=100");
    if (mine !== generation) return;
    replaceRows(document.querySelector("#jobs-table tbody"), list.items.map(jobRow));
    const running = list.items.filter((j) => !TERMINAL.has(j.status)).length;
    const jobs = (n) => `${n} job${n === 1 ? "" : "s"}`;
    $("jobs-summary").textContent = list.total > list.items.length
      ? `The newest ${list.items.length} of ${jobs(list.total)}, ${running} of them unfinished.`
      : `${jobs(list.total)}, ${running} unfinished.`;
    $("jobs-empty").hidden = list.items.length > 0;
    $("jobs-table").hidden = list.items.length === 0;
  }

  // ---- one job ----
  let current = null; // the job on view, as last read
  let previewState = { jobId: null, phase: null, url: null };
  let events = { key: null, at: 0 };

  function detail(list, term, value) {
    if (value === null || value === undefined || value === "") return;
    list.append(el("dt", term), el("dd", value));
  }

  function timeDetail(list, term, timestamp) {
    if (!timestamp) return;
    const time = el("time", new Date(timestamp).toLocaleString());
    time.dateTime = timestamp;
    const dd = el("dd");
    dd.append(time);
    list.append(el("dt", term), dd);
  }

  function renderDetails(job) {
    const list = $("job-details");
    list.replaceChildren();
    detail(list, "Job id", job.job_id);
    detail(list, "Resource", `${job.namespace}/${job.name}`);
    detail(list, "Project", job.project_id);
    detail(list, "Dataset", datasetOf(job));
    detail(list, "Output dataset", job.output_dataset_id);
    if (job.shards) {
      const s = job.shards;
      detail(list, "Shards", `${s.done} done, ${s.running} running, ${s.failed} failed of ${s.total}`);
    }
    timeDetail(list, "Created", job.created_at);
    timeDetail(list, "Started", job.started_at);
    timeDetail(list, "Completed", job.completed_at);
  }

  function paramValue(value) {
    if (value === null || value === undefined) return "—";
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function renderParams(job) {
    const rows = Object.entries(job.spec || {}).map(([name, value]) => {
      const row = el("tr");
      const th = el("th", name);
      th.scope = "row";
      row.append(th, el("td", paramValue(value), "mono"));
      return row;
    });
    replaceRows(document.querySelector("#job-params tbody"), rows);
  }

  function renderJob(job) {
    document.title = `${jobTitle(job)} · Augmentation jobs`;
    $("job-title").textContent = jobTitle(job);
    phaseBadge(job, $("job-phase"));
    $("job-message").textContent = job.message || "";
    $("job-progress").value = job.progress.percent;
    $("job-progress-text").textContent = progressText(job) || `${job.progress.percent}%`;
    $("cancel").hidden = TERMINAL.has(job.status) || job.cancel_requested;
    renderDetails(job);
    renderParams(job);
  }

  // Repeats of one event in a row (the same type, reason and message) as one row with
  // their count, as kubectl aggregates them.
  function collapse(items) {
    const rows = [];
    for (const e of items) {
      const last = rows[rows.length - 1];
      if (last && last.type === e.type && last.reason === e.reason && last.message === e.message) {
        last.count += e.count;
        last.last_seen = e.last_seen || last.last_seen;
      } else {
        rows.push({ ...e });
      }
    }
    return rows;
  }

  async function refreshEvents(job) {
    const key = `${job.job_id} ${job.status} ${job.message} ${job.cancel_requested}`;
    if (key === events.key && Date.now() - events.at < EVENTS_MS) return;
    const list = await getJson(`/${job.job_id}/events`);
    events = { key, at: Date.now() };
    const rows = collapse(list.items).map((e) => {
      const row = el("tr", null, e.type === "Warning" ? "warning" : "");
      const when = timeCell(e.last_seen);
      const count = e.count > 1 ? ` (×${e.count})` : "";
      row.append(when, el("td", e.type), el("td", e.reason), el("td", e.message + count));
      return row;
    });
    replaceRows(document.querySelector("#job-events tbody"), rows);
    $("events-empty").hidden = rows.length > 0;
  }

  function clearPreview() {
    if (previewState.url) URL.revokeObjectURL(previewState.url);
    previewState = { jobId: null, phase: null, url: null };
    $("preview-img").hidden = true;
    $("preview-img").removeAttribute("src");
  }

  // The contact sheet is written with the output dataset: look again when the phase
  // changes until there is one.
  async function refreshPreview(job) {
    if (previewState.jobId === job.job_id &&
        (previewState.url || previewState.phase === job.status)) return;
    if (previewState.jobId !== job.job_id) clearPreview();
    previewState.jobId = job.job_id;
    previewState.phase = job.status;
    const caption = $("preview-caption");
    let response;
    try {
      response = await call(`/${job.job_id}/preview`);
    } catch (error) {
      // 409: the output is not published yet; 404: it has no sheet (or the API serves none).
      if (!(error instanceof ApiError) || ![404, 409].includes(error.status)) throw error;
      caption.textContent = TERMINAL.has(job.status)
        ? `No preview yet (${error.message.replace(/\.$/, "")}).`
        : "No preview yet: the contact sheet comes with the job's output.";
      return;
    }
    const blob = await response.blob();
    if (previewState.jobId !== job.job_id) return;
    previewState.url = URL.createObjectURL(blob);
    const img = $("preview-img");
    img.src = previewState.url;
    img.hidden = false;
    caption.textContent =
      "Top row: frames of the first source episode. Each row below: the same frames of one augmented copy.";
  }

  async function refreshJob(mine, jobId) {
    const job = await getJson(`/${jobId}`);
    if (mine !== generation) return;
    const before = current;
    current = job;
    renderJob(job);
    if (before && before.status !== job.status) announce(`Job is now ${job.status}.`);
    await Promise.all([refreshEvents(job), refreshPreview(job)]);
  }

  // ---- cancel ----
  function askCancel() {
    if (!current) return;
    $("confirm-text").textContent =
      `“${jobTitle(current)}” will be stopped. This cannot be undone.`;
    $("confirm-cancel").showModal();
    $("confirm-no").focus();
  }

  async function confirmCancel() {
    $("confirm-cancel").close();
    if (!current) return;
    const job = current;
    $("cancel").disabled = true;
    try {
      renderJob(await getJson(`/${job.job_id}`, "DELETE"));
      announce("Cancel requested.");
      route(false); // poll again: the operator now stops the job
    } catch (error) {
      handle(error);
    } finally {
      $("cancel").disabled = false;
    }
  }

  // ---- routing ----
  function focusHeading(id) {
    $(id).focus({ preventScroll: true });
  }

  // Shows the view the address names and starts its polling; `focus` moves the focus to
  // its heading, as a page load would (not when the same view is only refreshed).
  function route(focus = true) {
    generation += 1;
    stopPolling();
    showError("");
    if (!apiKey()) {
      show("login");
      if (focus) $("api-key").focus();
      return;
    }
    const match = /^#\/jobs\/([^/]+)$/.exec(location.hash);
    if (match && JOB_ID.test(match[1])) {
      const jobId = match[1].toLowerCase();
      if (!current || current.job_id !== jobId) {
        current = null;
        events = { key: null, at: 0 };
        clearPreview();
        $("job-title").textContent = "Loading…";
      }
      show("job");
      if (focus) focusHeading("job-title");
      poll((mine) => refreshJob(mine, jobId));
    } else {
      current = null;
      document.title = "Augmentation jobs";
      show("jobs");
      if (focus) focusHeading("jobs-title");
      poll(refreshJobs);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("logout").addEventListener("click", signOut);
    $("cancel").addEventListener("click", askCancel);
    $("confirm-no").addEventListener("click", () => $("confirm-cancel").close());
    $("confirm-yes").addEventListener("click", confirmCancel);
    window.addEventListener("hashchange", () => route());
    // Back in view: refresh at once rather than at the next tick.
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && apiKey()) route(false);
    });
    route();
  });
})();
