// Herald console: one page that reads and steers Herald through its /v1 API.
//
// Safety rules this file keeps (the page's Content-Security-Policy backs them up):
// - every value from the API reaches the page as text (textContent, createElement, setAttribute
//   of a known attribute): never innerHTML or any other HTML parser on data;
// - a notification's HTML content is shown only in <iframe sandbox="" srcdoc=...>, a frame with
//   no sandbox token at all (no script, no forms, no navigation of the page, unique origin);
// - the API key lives in sessionStorage (this tab only) and travels in the Authorization header
//   from script: no cookie, so nothing another site could make the browser send for it.

const KEY_STORAGE = "herald.console.key";
const POLL_MS = 3000;
const PAGE_SIZE = 50;
const CHANNELS = ["email", "sms", "push"];
const LANES = ["high", "normal", "low"];
const STATUSES = ["scheduled", "queued", "sending", "retrying", "sent", "failed", "canceled"];
const CANCELABLE = new Set(["scheduled", "queued", "retrying"]);
const FINAL = new Set(["sent", "failed", "canceled"]);
const MAX_LOOPS = 10000; // requests per bulk action at most: a server bug never loops us forever
const UNFINISHED_CAMPAIGN = new Set(["pending", "processing", "paused"]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const state = {
  key: null, // the API key, as typed
  me: null, // GET /v1/me
  page: null, // the current page's context (timers, pending requests)
  path: null, // the current route's path, to tell a new page from a new query
  flash: null, // a notice to show after the next navigation
};

// --- DOM helpers --------------------------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);

const FORBIDDEN_ATTRIBUTE = /^(on|style$|srcdoc$)/i;
const PROPERTIES = new Set(["value", "checked", "indeterminate", "disabled", "selected"]);

/** An element: h("a", {href: "#/x", class: "link", testid: "t"}, "text", child, [more]).
 * Strings become text nodes; attributes are set one by one (never an event-handler attribute,
 * never a style attribute: listeners go in `on`, styles in console.css). */
function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") {
      element.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (name === "testid") {
      element.dataset.testid = value;
    } else if (name === "data") {
      for (const [key, item] of Object.entries(value)) {
        if (item !== undefined && item !== null) element.dataset[key] = String(item);
      }
    } else if (name === "on") {
      for (const [event, listener] of Object.entries(value))
        element.addEventListener(event, listener);
    } else if (PROPERTIES.has(name)) {
      element[name] = value;
    } else if (FORBIDDEN_ATTRIBUTE.test(name)) {
      throw new Error(`attribute ${name} is not set from data`);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** A link to a route of the console: every part percent-encoded. */
function route(...parts) {
  let query = "";
  const last = parts[parts.length - 1];
  if (last && typeof last === "object") {
    parts = parts.slice(0, -1);
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(last)) {
      if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
    }
    const text = params.toString();
    if (text) query = `?${text}`;
  }
  return `#/${parts.map((p) => encodeURIComponent(String(p))).join("/")}${query}`;
}

function link(href, text, props = {}) {
  return h("a", { ...props, href }, text);
}

function button(text, onClick, props = {}) {
  const { variant, ...rest } = props;
  return h(
    "button",
    {
      type: "button",
      ...rest,
      class: ["button", variant && `button-${variant}`, rest.class],
      on: { click: onClick },
    },
    text,
  );
}

// --- formatting ---------------------------------------------------------------------------------

const integer = new Intl.NumberFormat("en-US");
const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

function fmtInt(value) {
  return value === null || value === undefined ? "—" : integer.format(value);
}

function pad(value, width = 2) {
  return String(value).padStart(width, "0");
}

/** A timestamp in local time, as YYYY-MM-DD HH:MM:SS, in a <time> carrying the exact instant. */
function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const text =
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return h("time", { datetime: iso, title: iso }, text);
}

function clock(date = new Date()) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 90) return `${decimal.format(seconds)} s`;
  if (seconds < 5400) return `${decimal.format(seconds / 60)} min`;
  return `${decimal.format(seconds / 3600)} h`;
}

function between(startIso, endIso) {
  if (!startIso || !endIso) return null;
  return (new Date(endIso).getTime() - new Date(startIso).getTime()) / 1000;
}

function plural(count, one, many = `${one}s`) {
  return `${fmtInt(count)} ${count === 1 ? one : many}`;
}

function recipientText(to) {
  if (to === null || to === undefined) return "(redacted)";
  if (typeof to === "string") return to;
  if (typeof to === "object") {
    const target = to.token ?? to.subscription?.endpoint ?? JSON.stringify(to);
    return to.provider ? `${to.provider}: ${target}` : String(target);
  }
  return String(to);
}

function summaryText(notification) {
  const content = notification.content || {};
  return content.subject ?? content.title ?? content.text ?? content.body ?? "";
}

function shortId(id) {
  return String(id).slice(0, 8);
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

// --- badges -------------------------------------------------------------------------------------

const TONES = {
  sent: "success",
  completed: "success",
  closed: "success",
  running: "success",
  redriven: "success",
  failed: "danger",
  open: "danger",
  paused: "warning",
  retrying: "warning",
  half_open: "warning",
  completed_with_failures: "warning",
  queued: "info",
  sending: "info",
  processing: "info",
  pending: "neutral",
  scheduled: "neutral",
  canceled: "neutral",
  discarded: "neutral",
};

const NAMES = { sms: "SMS", smtp: "SMTP", fcm: "FCM" };

function label(value) {
  if (Object.hasOwn(NAMES, value)) return NAMES[value];
  const text = String(value).replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A status as colour AND text: the colour is only a second cue. */
function badge(value, props = {}) {
  const tone = props.tone || TONES[value] || "neutral";
  const { tone: _, text, ...rest } = props;
  return h(
    "span",
    {
      testid: "status",
      ...rest,
      class: ["badge", `badge-${tone}`, rest.class],
      data: { status: value },
    },
    text ?? label(value),
  );
}

// --- messages -----------------------------------------------------------------------------------

function clearMessages() {
  const alert = $("#alert");
  alert.replaceChildren();
  alert.hidden = true;
  const notice = $("#notice");
  notice.replaceChildren();
  notice.hidden = true;
}

function dismissible(region, ...content) {
  region.replaceChildren(
    h("div", { class: "message-body" }, ...content),
    button(
      "Dismiss",
      () => {
        region.replaceChildren();
        region.hidden = true;
      },
      { variant: "quiet", class: "message-close", "aria-label": "Dismiss message" },
    ),
  );
  region.hidden = false;
}

function notice(text) {
  dismissible($("#notice"), h("p", {}, text));
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

class SignedOut extends Error {}

function isQuiet(error) {
  return error instanceof SignedOut || error?.name === "AbortError";
}

/** Show what went wrong: the API's problem details (title, status, detail, each field). */
function showError(error, what) {
  if (isQuiet(error)) return;
  const problem =
    error instanceof ApiError ? error.problem : { title: String(error?.message || error) };
  const status = error instanceof ApiError ? error.status : null;
  const heading = [what, problem.title || "Error"].filter(Boolean).join(": ");
  const fields = Array.isArray(problem.errors) ? problem.errors : [];
  dismissible(
    $("#alert"),
    h(
      "p",
      { class: "message-title" },
      heading,
      status ? h("span", { class: "muted" }, ` (HTTP ${status})`) : null,
    ),
    problem.detail ? h("p", { testid: "alert-detail" }, problem.detail) : null,
    fields.length
      ? h(
          "ul",
          { class: "field-errors" },
          fields.map((f) => h("li", {}, h("code", {}, f.field), ": ", f.reason)),
        )
      : null,
  );
  if (!(error instanceof ApiError)) console.error(error);
}

// --- the API ------------------------------------------------------------------------------------

async function api(path, { method = "GET", query, body, signal, key } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "")
      url.searchParams.set(name, String(value));
  }
  const secret = key ?? state.key;
  const headers = { Accept: "application/json", Authorization: `Bearer ${secret}` };
  const init = {
    method,
    headers,
    signal,
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
  };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    throw new ApiError(0, {
      title: "The API did not answer",
      detail: String(error?.message || error),
    });
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const problem =
      data && typeof data === "object"
        ? data
        : { title: response.statusText || "Error", status: response.status };
    if (response.status === 401 && key === undefined && state.key) {
      signOut();
      showError(new ApiError(401, problem), "Signed out");
      throw new SignedOut();
    }
    throw new ApiError(response.status, problem);
  }
  return data;
}

function can(scope) {
  return Boolean(state.me?.scopes?.includes(scope));
}

// --- page lifecycle -----------------------------------------------------------------------------

/** What a page started: its timers and requests, all stopped when the page is left. */
class PageContext {
  constructor() {
    this.controller = new AbortController();
    this.timers = new Set();
    this.disposed = false;
    this.refresh = null; // a live page's own reload, for actions that change what it shows
  }

  get signal() {
    return this.controller.signal;
  }

  api(path, options = {}) {
    return api(path, { ...options, signal: this.signal });
  }

  /** Run `task` now and every `ms` after it finishes, while the page is shown. */
  poll(task, ms = POLL_MS) {
    const tick = async () => {
      if (this.disposed) return;
      if (!document.hidden) {
        try {
          await task();
        } catch (error) {
          if (!this.disposed) showError(error);
        }
      }
      if (!this.disposed) this.later(tick, ms);
    };
    return tick();
  }

  later(task, ms) {
    const timer = window.setTimeout(() => {
      this.timers.delete(timer);
      task();
    }, ms);
    this.timers.add(timer);
  }

  dispose() {
    this.disposed = true;
    this.controller.abort();
    for (const timer of this.timers) window.clearTimeout(timer);
    this.timers.clear();
  }
}

/** Replace `container`'s children, keeping the keyboard focus on the element of the same
 * data-focus-key (a live page re-renders under the user's cursor). */
function rerender(container, ...children) {
  const active = document.activeElement;
  const focusKey = active && container.contains(active) ? active.dataset.focusKey : null;
  container.replaceChildren(...children.flat(Infinity).filter(Boolean));
  if (focusKey) {
    const again = container.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}

/** Whether `data` differs from what the last call with this `memo` saw (compared as JSON text):
 * a poll that fetched the same as before re-renders nothing, so nothing moves under the user. */
function changed(memo, data) {
  const text = JSON.stringify(data);
  if (memo.seen === text) return false;
  memo.seen = text;
  return true;
}

function focusAgain(element) {
  if (!element) return;
  if (element.isConnected) {
    element.focus();
    return;
  }
  const key = element.dataset?.focusKey;
  const again = key ? document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`) : null;
  (again || $("#view")).focus();
}

// --- the confirmation dialog --------------------------------------------------------------------

/** Ask before acting, in a real modal <dialog>: resolves true when confirmed. Escape, Cancel and
 * a click outside the box cancel; focus goes back to where it was. */
function confirmDialog({ title, text = "", confirm = "Confirm", danger = false }) {
  const dialog = $("#confirm");
  const ok = $("#confirm-ok");
  const cancel = $("#confirm-cancel");
  const opener = document.activeElement;
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  ok.textContent = confirm;
  ok.classList.toggle("button-danger", danger);
  ok.classList.toggle("button-primary", !danger);
  return new Promise((resolve) => {
    let confirmed = false;
    const onOk = () => {
      confirmed = true;
      dialog.close();
    };
    const onCancel = () => dialog.close();
    const onBackdrop = (event) => {
      if (event.target === dialog) dialog.close();
    };
    const onClose = () => {
      ok.removeEventListener("click", onOk);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("click", onBackdrop);
      dialog.removeEventListener("close", onClose);
      focusAgain(opener);
      resolve(confirmed);
    };
    ok.addEventListener("click", onOk);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("click", onBackdrop);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    cancel.focus();
  });
}

/** Disable `element` while `task` runs (no double submission), and show its error if any. */
async function busy(element, task, what) {
  const wasDisabled = element?.disabled;
  if (element) {
    element.disabled = true;
    element.setAttribute("aria-busy", "true");
  }
  try {
    return await task();
  } catch (error) {
    showError(error, what);
    return undefined;
  } finally {
    if (element) {
      element.disabled = wasDisabled;
      element.removeAttribute("aria-busy");
    }
  }
}

// --- shared page parts --------------------------------------------------------------------------

function pageHeader(title, { subtitle, actions = [], testid } = {}) {
  return h(
    "div",
    { class: "page-header" },
    h(
      "div",
      { class: "page-title" },
      h("h1", { tabindex: "-1", id: "page-title", testid: testid || "page-title" }, title),
      subtitle ? h("p", { class: "muted subtitle" }, subtitle) : null,
    ),
    actions.length ? h("div", { class: "page-actions" }, actions) : null,
  );
}

function card(title, content, props = {}) {
  return h(
    "section",
    { ...props, class: ["card", props.class] },
    title ? h("h2", { class: "card-title" }, title) : null,
    content,
  );
}

function table(headings, rows, props = {}) {
  return h(
    "div",
    {
      class: "table-wrap",
      tabindex: "0",
      role: "region",
      "aria-label": props.label || "Table",
      data: { focusKey: props.focusKey || `table-${props.testid || props.label || "table"}` },
    },
    h(
      "table",
      { class: ["table", props.class], testid: props.testid },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          headings.map((heading) =>
            heading instanceof Node ? heading : h("th", { scope: "col" }, heading),
          ),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

function th(text, className) {
  return h("th", { scope: "col", class: className }, text);
}

function num(value, props = {}) {
  return h("td", { ...props, class: ["num", props.class] }, fmtInt(value));
}

function emptyRow(columns, text) {
  return h("tr", { class: "empty" }, h("td", { colspan: String(columns) }, text));
}

function details(pairs, props = {}) {
  return h(
    "dl",
    { ...props, class: ["details", props.class] },
    pairs
      .filter(Boolean)
      .map(([term, value, testid]) =>
        h(
          "div",
          { class: "detail" },
          h("dt", {}, term),
          h("dd", { testid }, value ?? h("span", { class: "muted" }, "—")),
        ),
      ),
  );
}

function loading(text = "Loading…") {
  return h("p", { class: "muted loading", role: "status" }, text);
}

function lacks(scope) {
  return card(
    null,
    h(
      "p",
      { testid: "lacks-scope" },
      `This API key lacks the ${scope} scope, which this page needs.`,
    ),
  );
}

// --- routing ------------------------------------------------------------------------------------

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "");
  if (!raw.startsWith("/")) return null;
  const at = raw.indexOf("?");
  const path = at < 0 ? raw : raw.slice(0, at);
  const params = new URLSearchParams(at < 0 ? "" : raw.slice(at + 1));
  const parts = path
    .split("/")
    .filter(Boolean)
    .map((part) => {
      try {
        return decodeURIComponent(part);
      } catch {
        return part;
      }
    });
  return { path, parts, params };
}

const NAV = [
  { id: "overview", text: "Overview", allowed: () => can("read") || can("admin") },
  { id: "notifications", text: "Notifications", allowed: () => can("read") },
  { id: "dead-letters", text: "Dead letters", allowed: () => can("admin") },
  { id: "campaigns", text: "Campaigns", allowed: () => can("read") },
  { id: "channels", text: "Channels", allowed: () => can("admin") },
];

function renderNav(current) {
  const list = $("#nav-list");
  list.replaceChildren(
    ...NAV.filter((item) => item.allowed()).map((item) =>
      h(
        "li",
        {},
        h(
          "a",
          {
            href: route(item.id),
            testid: `nav-${item.id}`,
            "aria-current": item.id === current ? "page" : undefined,
          },
          item.text,
        ),
      ),
    ),
  );
}

function render() {
  if (!state.key || !state.me) return;
  const target = parseHash();
  if (!target) {
    window.location.replace(route("overview"));
    return;
  }
  if (state.page) state.page.dispose();
  const context = new PageContext();
  state.page = context;
  clearMessages();
  if (state.flash) {
    notice(state.flash);
    state.flash = null;
  }
  const [section = "overview", id, ...rest] = target.parts;
  renderNav(section);
  const container = $("#page");
  container.replaceChildren();
  const newPath = target.path !== state.path;
  state.path = target.path;
  // An id from the URL reaches the API only when it is a UUID: "..", "groups" or any other
  // text would name another endpoint (or none) and is not found here instead.
  const byId = (page) => () =>
    UUID.test(id) ? page(context, container, id) : notFoundPage(container);
  const pages = {
    overview: () => overviewPage(context, container),
    notifications:
      id === undefined
        ? () => notificationsPage(context, container, target.params)
        : byId(notificationPage),
    "dead-letters":
      id === undefined
        ? () => deadLettersPage(context, container, target.params)
        : byId(deadLetterPage),
    campaigns: () => campaignsPage(context, container),
    channels: () => channelsPage(context, container),
  };
  const show =
    rest.length === 0 && Object.hasOwn(pages, section)
      ? pages[section]
      : () => notFoundPage(container);
  show();
  if (newPath) {
    const title = $("#page-title");
    if (title) title.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
  document.title = `${$("#page-title")?.textContent || "Herald"} · Herald console`;
}

function notFoundPage(container) {
  container.append(
    pageHeader("Page not found"),
    card(
      null,
      h(
        "p",
        { testid: "not-found" },
        "Nothing here. ",
        link(route("overview"), "Go to the overview"),
        ".",
      ),
    ),
  );
}

// --- overview -----------------------------------------------------------------------------------

function overviewPage(context, container) {
  const updated = h("span", { class: "muted", testid: "updated-at" }, "Loading…");
  container.append(
    pageHeader("Overview", {
      subtitle: h("span", {}, "Last hour, per channel and lane; live (every 3 seconds). ", updated),
    }),
  );
  if (!can("read") && !can("admin")) {
    container.append(lacks("read"));
    return;
  }
  const body = h("div", { class: "stack", testid: "overview" }, loading());
  container.append(body);
  const memo = {};
  context.poll(async () => {
    const [stats, queues] = await Promise.allSettled([
      can("read") ? context.api("/v1/stats") : Promise.resolve(null),
      can("admin") ? context.api("/v1/queues") : Promise.resolve(null),
    ]);
    if (context.disposed) return;
    for (const result of [stats, queues])
      if (result.status === "rejected") showError(result.reason);
    const statsValue = stats.status === "fulfilled" ? stats.value : null;
    const queuesValue = queues.status === "fulfilled" ? queues.value : null;
    if (!statsValue && !queuesValue) return;
    if (changed(memo, [statsValue, queuesValue]))
      rerender(body, overviewContent(statsValue, queuesValue));
    updated.textContent = `Updated ${clock()}.`;
  });
}

function overviewContent(stats, queues) {
  const statsBy = new Map((stats?.channels || []).map((c) => [c.channel, c]));
  const queuesBy = new Map((queues?.channels || []).map((c) => [c.channel, c]));
  const names = [...new Set([...CHANNELS, ...statsBy.keys(), ...queuesBy.keys()])].filter(
    (name) => statsBy.has(name) || queuesBy.has(name),
  );
  const sum = (field) => [...statsBy.values()].reduce((total, c) => total + (c[field] || 0), 0);
  const tiles = [];
  if (stats) {
    tiles.push(
      tile("Accepted", fmtInt(sum("accepted")), "last hour", "total-accepted"),
      tile("Delivered", fmtInt(sum("sent")), "last hour", "total-sent"),
      tile(
        "Failed",
        fmtInt(sum("failed")),
        "last hour",
        "total-failed",
        sum("failed") > 0 ? "danger" : null,
      ),
    );
  }
  if (queues) {
    const outbox = queues.outbox || {};
    const depth = [...queuesBy.values()].reduce((total, c) => total + laneDepth(c.lanes), 0);
    const dead = [...queuesBy.values()].reduce((total, c) => total + (c.dead_letters || 0), 0);
    tiles.push(
      tile("Queued", fmtInt(depth), "ready in the work queues", "total-depth"),
      tile(
        "Outbox lag",
        outbox.oldest_age_seconds === null || outbox.oldest_age_seconds === undefined
          ? "none"
          : duration(outbox.oldest_age_seconds),
        `${plural(outbox.backlog ?? 0, "row")} waiting to be published`,
        "outbox",
        outbox.oldest_age_seconds > 30 ? "warning" : null,
      ),
      tile(
        "Open dead letters",
        fmtInt(dead),
        can("admin")
          ? link(route("dead-letters"), "Review them", {
              testid: "review-dead-letters",
              data: { focusKey: "review-dead-letters" },
            })
          : "",
        "total-dead",
        dead > 0 ? "warning" : null,
      ),
    );
  }
  return [
    h("div", { class: "tiles" }, tiles),
    names.length
      ? h(
          "div",
          { class: ["channel-list", !queues && "compact"] },
          names.map((name) =>
            channelCard(
              name,
              statsBy.get(name),
              queuesBy.get(name),
              Boolean(stats),
              Boolean(queues),
            ),
          ),
        )
      : card(null, h("p", { class: "muted" }, "No channel reported anything yet.")),
  ];
}

function tile(title, value, note, testid, tone) {
  return h(
    "div",
    { class: ["tile", tone && `tile-${tone}`], testid },
    h("div", { class: "tile-label" }, title),
    h("div", { class: "tile-value", testid: `${testid}-value` }, value),
    note ? h("div", { class: "tile-note muted" }, note) : null,
  );
}

function laneDepth(lanes) {
  return (lanes || []).reduce((total, lane) => total + (lane.depth || 0), 0);
}

function channelCard(name, stats, queues, withStats, withQueues) {
  const statLanes = new Map((stats?.lanes || []).map((lane) => [lane.lane, lane]));
  const queueLanes = new Map();
  for (const lane of queues?.lanes || []) {
    if (!queueLanes.has(lane.lane)) queueLanes.set(lane.lane, []);
    queueLanes.get(lane.lane).push(lane);
  }
  const headings = [th("Lane")];
  if (withStats) headings.push(th("Accepted", "num"), th("Delivered", "num"), th("Failed", "num"));
  if (withQueues) headings.push(th("Queue depth", "num"), th("Consumers", "num"));
  const cells = (laneName, statsRow, queueRows, total) => {
    const row = [
      h(total ? "th" : "td", total ? { scope: "row" } : {}, total ? "All lanes" : label(laneName)),
    ];
    if (withStats) {
      row.push(
        num(statsRow?.accepted ?? 0, { testid: `accepted-${name}-${laneName}` }),
        num(statsRow?.sent ?? 0, { testid: `sent-${name}-${laneName}` }),
        num(statsRow?.failed ?? 0, {
          testid: `failed-${name}-${laneName}`,
          class: statsRow?.failed ? "text-danger" : null,
        }),
      );
    }
    if (withQueues) {
      // Null: the broker did not answer for any of the lane's queues.
      const unknown = queueRows.length > 0 && queueRows.every((q) => q.depth == null);
      const depth = unknown ? null : queueRows.reduce((t, q) => t + (q.depth || 0), 0);
      row.push(num(depth, { testid: `depth-${name}-${laneName}` }));
      if (total) {
        row.push(h("td", {})); // a consumer total would mean little: each lane has its own
      } else if (queueRows.length <= 1) {
        row.push(num(queueRows[0]?.consumers ?? null, { testid: `consumers-${name}-${laneName}` }));
      } else {
        row.push(
          h(
            "td",
            { class: "num", testid: `consumers-${name}-${laneName}` },
            queueRows
              .map(
                (q) =>
                  `${q.key.startsWith(`${name}.`) ? q.key.slice(name.length + 1) : q.key} ${fmtInt(q.consumers)}`,
              )
              .join(" · "),
          ),
        );
      }
    }
    return row;
  };
  const rows = LANES.map((lane) =>
    h(
      "tr",
      { testid: `lane-${name}-${lane}` },
      cells(lane, statLanes.get(lane), queueLanes.get(lane) || [], false),
    ),
  );
  const totalsRow = h(
    "tr",
    { class: "total", testid: `lane-${name}-all` },
    cells("all", stats, queues?.lanes || [], true),
  );

  const badges = [];
  if (queues) badges.push(channelState(queues));
  const facts = [];
  if (queues) {
    facts.push(
      [
        "Instances",
        `${fmtInt(queues.instances)}${queues.paused_instances ? ` (${fmtInt(queues.paused_instances)} paused)` : ""}`,
        `instances-${name}`,
      ],
      ["In flight", fmtInt(queues.in_flight), `in-flight-${name}`],
      ["Delivered / s", decimal.format(queues.delivered_per_second || 0), `rate-${name}`],
      [
        "Waiting to retry",
        fmtInt((queues.retry_tiers || []).reduce((t, r) => t + (r.depth || 0), 0)),
        `retrying-${name}`,
      ],
      [
        "Open dead letters",
        queues.dead_letters
          ? link(route("dead-letters", { channel: name }), fmtInt(queues.dead_letters), {
              testid: `dead-link-${name}`,
              data: { focusKey: `dead-letters-${name}` },
              "aria-label": `${plural(queues.dead_letters, "open dead letter")} of ${label(name)}`,
            })
          : "0",
        `dead-${name}`,
      ],
    );
  }
  const side = facts.length
    ? h(
        "div",
        { class: "channel-side" },
        details(facts, { class: "facts" }),
        breakers(name, queues.breakers),
      )
    : null;
  return h(
    "section",
    {
      class: "card channel-card",
      testid: `channel-${name}`,
      "aria-labelledby": `channel-title-${name}`,
    },
    h(
      "div",
      { class: "card-head" },
      h("h2", { class: "card-title", id: `channel-title-${name}` }, label(name)),
      h("div", { class: "badges" }, badges),
    ),
    h(
      "div",
      { class: ["channel-body", side && "with-side"] },
      table(headings, [...rows, totalsRow], {
        label: `${label(name)} lanes`,
        testid: `lanes-${name}`,
        focusKey: `lanes-${name}`,
      }),
      side,
    ),
  );
}

function breakers(channel, list) {
  const items = (list || []).map((breaker) => {
    const states = [];
    if (breaker.open) states.push(badge("open", { text: `${fmtInt(breaker.open)} open` }));
    if (breaker.half_open)
      states.push(badge("half_open", { text: `${fmtInt(breaker.half_open)} half-open` }));
    if (breaker.closed) states.push(badge("closed", { text: `${fmtInt(breaker.closed)} closed` }));
    if (!states.length) states.push(badge("unknown", { text: "no instance", tone: "neutral" }));
    return h(
      "li",
      { testid: `breaker-${channel}-${breaker.provider}` },
      h("span", { class: "provider" }, breaker.provider),
      states,
    );
  });
  return h(
    "div",
    { class: "breakers" },
    h("h3", { class: "subheading" }, "Provider breakers"),
    items.length
      ? h("ul", { class: "breaker-list" }, items)
      : h("p", { class: "muted" }, "No instance reported its breakers."),
  );
}

/** A channel's operator state: paused, or running (or nothing to run: no live instance). */
function channelState(c) {
  if (c.paused) return badge("paused", { text: "Paused", testid: `state-${c.channel}` });
  if (!c.instances)
    return badge("idle", { text: "No instance", tone: "neutral", testid: `state-${c.channel}` });
  return badge("running", { text: "Running", testid: `state-${c.channel}` });
}

// --- notifications ------------------------------------------------------------------------------

const SEARCH_FIELDS = ["to", "status", "channel", "campaign", "created_after", "created_before"];

function toLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function fromLocalInput(value) {
  if (!value) return "";
  const date = new Date(value); // a datetime-local value is local time
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

function field(labelText, input, hint) {
  return h(
    "div",
    { class: "field" },
    h("label", { for: input.id }, labelText),
    input,
    hint ? h("p", { class: "hint muted" }, hint) : null,
  );
}

function select(id, options, value, testid) {
  const element = h(
    "select",
    { id, name: id, testid },
    h("option", { value: "" }, "Any"),
    options.map((option) => h("option", { value: option }, label(option))),
  );
  element.value = options.includes(value) ? value : "";
  return element;
}

function notificationsPage(context, container, params) {
  container.append(
    pageHeader("Notifications", {
      subtitle: "Newest first. Search by id, recipient, status, channel, campaign or time.",
    }),
  );
  if (!can("read")) {
    container.append(lacks("read"));
    return;
  }
  const inputs = {
    id: h("input", {
      id: "search-id",
      name: "id",
      type: "search",
      testid: "search-id",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "Notification id",
    }),
    to: h("input", {
      id: "search-to",
      name: "to",
      type: "search",
      testid: "search-to",
      autocomplete: "off",
      spellcheck: "false",
      value: params.get("to") || "",
      placeholder: "Exact address, number or token",
    }),
    status: select("search-status", STATUSES, params.get("status"), "search-status"),
    channel: select("search-channel", CHANNELS, params.get("channel"), "search-channel"),
    campaign: h("input", {
      id: "search-campaign",
      name: "campaign",
      type: "search",
      testid: "search-campaign",
      autocomplete: "off",
      spellcheck: "false",
      value: params.get("campaign") || "",
      placeholder: "Campaign id",
    }),
    created_after: h("input", {
      id: "search-after",
      name: "created_after",
      type: "datetime-local",
      testid: "search-created-after",
      value: toLocalInput(params.get("created_after")),
    }),
    created_before: h("input", {
      id: "search-before",
      name: "created_before",
      type: "datetime-local",
      testid: "search-created-before",
      value: toLocalInput(params.get("created_before")),
    }),
  };
  const form = h(
    "form",
    {
      class: "search",
      testid: "search-form",
      role: "search",
      "aria-label": "Search notifications",
      novalidate: true,
    },
    h(
      "div",
      { class: "search-grid" },
      field("Notification id", inputs.id),
      field("Recipient", inputs.to),
      field("Status", inputs.status),
      field("Channel", inputs.channel),
      field("Campaign", inputs.campaign),
      field("Created after", inputs.created_after),
      field("Created before", inputs.created_before),
    ),
    h(
      "div",
      { class: "form-actions" },
      h(
        "button",
        { type: "submit", class: "button button-primary", testid: "search-submit" },
        "Search",
      ),
      button(
        "Clear",
        () => {
          window.location.hash = route("notifications");
        },
        { testid: "search-clear" },
      ),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = inputs.id.value.trim();
    if (id) {
      window.location.hash = route("notifications", id);
      return;
    }
    const query = {
      to: inputs.to.value.trim(),
      status: inputs.status.value,
      channel: inputs.channel.value,
      campaign: inputs.campaign.value.trim(),
      created_after: fromLocalInput(inputs.created_after.value),
      created_before: fromLocalInput(inputs.created_before.value),
    };
    const target = route("notifications", query);
    if (window.location.hash === target) render();
    else window.location.hash = target;
  });
  container.append(card(null, form, { class: "search-card" }));

  const query = {};
  for (const name of SEARCH_FIELDS) if (params.get(name)) query[name] = params.get(name);
  const rows = h("tbody", {});
  const summary = h("p", { class: "muted", testid: "results-summary", role: "status" }, "Loading…");
  const more = button("Load more", () => load(more), { testid: "load-more", hidden: true });
  let cursor = null;
  let shown = 0;
  const results = h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Notifications found" },
    h(
      "table",
      { class: "table", testid: "notifications-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          th("Id"),
          th("Status"),
          th("Recipient"),
          th("Subject or text"),
          th("Channel"),
          th("Attempts", "num"),
          th("Created"),
        ),
      ),
      rows,
    ),
  );
  container.append(card(null, [summary, results, h("div", { class: "load-more" }, more)]));

  async function load(trigger) {
    await busy(
      trigger,
      async () => {
        const page = await context.api("/v1/notifications", {
          query: { ...query, limit: PAGE_SIZE, cursor },
        });
        if (context.disposed) return;
        for (const item of page.items) rows.append(notificationRow(item));
        shown += page.items.length;
        cursor = page.next_cursor;
        more.hidden = !cursor;
        summary.textContent =
          shown === 0
            ? "No notification matches."
            : `${plural(shown, "notification")} shown${cursor ? "; there are more" : ""}.`;
      },
      "Searching notifications",
    );
  }
  load(null);
}

function notificationRow(item) {
  const summary = summaryText(item);
  return h(
    "tr",
    { testid: "notification-row", data: { id: item.id, status: item.status } },
    h(
      "td",
      {},
      link(route("notifications", item.id), shortId(item.id), {
        class: "mono",
        title: item.id,
        "aria-label": `Notification ${item.id}`,
        testid: "notification-link",
      }),
    ),
    h("td", {}, badge(item.status)),
    h(
      "td",
      { class: "truncate", title: recipientText(item.to), testid: "notification-to" },
      recipientText(item.to),
    ),
    h("td", { class: "truncate", title: summary, testid: "notification-summary" }, summary),
    h("td", {}, label(item.channel)),
    num(item.attempt_count),
    h("td", { class: "nowrap" }, when(item.created_at)),
  );
}

function notificationPage(context, container, id) {
  container.append(
    pageHeader("Notification", { subtitle: h("code", { testid: "notification-id" }, id) }),
  );
  if (!can("read")) {
    container.append(lacks("read"));
    return;
  }
  const body = h("div", { class: "stack", testid: "notification-detail" }, loading());
  container.append(body);
  const memo = {};
  context.poll(async () => {
    let detail;
    try {
      detail = await context.api(`/v1/notifications/${encodeURIComponent(id)}`);
    } catch (error) {
      if (
        error instanceof ApiError &&
        (error.status === 404 || error.status === 422 || error.status === 400)
      ) {
        rerender(
          body,
          card(
            null,
            h("p", { testid: "not-found" }, "No such notification in what this key may see."),
          ),
        );
        context.dispose();
        showError(error, "Notification");
        return;
      }
      throw error;
    }
    if (context.disposed) return;
    if (changed(memo, detail)) rerender(body, notificationDetail(context, detail));
    if (FINAL.has(detail.status) && detail.status !== "failed") context.dispose(); // nothing will change
  });
}

function notificationDetail(context, n) {
  const actions = [];
  if (can("send") && CANCELABLE.has(n.status)) {
    actions.push(
      button(
        "Cancel notification",
        async (event) => {
          const trigger = event.currentTarget;
          if (
            !(await confirmDialog({
              title: "Cancel 1 notification?",
              text: "It ends canceled and is never sent.",
              confirm: "Cancel notification",
              danger: true,
            }))
          )
            return;
          await busy(
            trigger,
            async () => {
              await api(`/v1/notifications/${encodeURIComponent(n.id)}`, { method: "DELETE" });
              state.flash = "Notification canceled.";
              render();
            },
            "Cancel",
          );
        },
        {
          variant: "danger",
          testid: "cancel-notification",
          data: { focusKey: "cancel-notification" },
        },
      ),
    );
  }
  const template = n.template
    ? `${n.template.name} (${n.template.locale}, v${n.template.version}${n.template.builtin ? ", built-in" : ""})`
    : null;
  const summary = card(
    null,
    [
      h(
        "div",
        { class: "card-head" },
        h(
          "div",
          { class: "badges" },
          badge(n.status, { testid: "notification-status" }),
          badge(n.channel, { tone: "outline", text: label(n.channel) }),
          badge(n.priority, { tone: "outline", text: `${label(n.priority)} priority` }),
        ),
        actions.length ? h("div", { class: "page-actions" }, actions) : null,
      ),
      details([
        ["Recipient", recipientText(n.to), "detail-to"],
        ["Project", n.project, "detail-project"],
        [
          "Correlation id",
          n.correlation_id ? h("code", {}, n.correlation_id) : null,
          "correlation-id",
        ],
        ["Created", when(n.created_at)],
        ["Updated", when(n.updated_at)],
        n.send_at ? ["Send at", when(n.send_at)] : null,
        ["Sent", when(n.sent_at), "detail-sent-at"],
        n.next_attempt_at ? ["Next attempt", when(n.next_attempt_at)] : null,
        ["Attempts", fmtInt(n.attempt_count), "detail-attempt-count"],
        ["Provider", n.provider],
        [
          "Provider message id",
          n.provider_message_id ? h("code", {}, n.provider_message_id) : null,
        ],
        n.failure_reason ? ["Failure reason", n.failure_reason, "detail-failure-reason"] : null,
        n.last_error
          ? ["Last error", h("span", { class: "error-text" }, n.last_error), "detail-last-error"]
          : null,
        n.campaign_id
          ? [
              "Campaign",
              link(route("notifications", { campaign: n.campaign_id }), shortId(n.campaign_id), {
                class: "mono",
                title: `Notifications of campaign ${n.campaign_id}`,
                data: { focusKey: "campaign-link" },
              }),
            ]
          : null,
        template ? ["Template", template] : null,
        n.redacted_at ? ["Redacted", when(n.redacted_at)] : null,
      ]),
    ],
    { "aria-label": "Summary" },
  );
  return [
    summary,
    card("Attempts", attemptTimeline(n.attempts), { testid: "attempts" }),
    card("Content", contentView(n), { testid: "content" }),
    n.dead_letters.length
      ? card("Dead letters", notificationDeadLetters(n.dead_letters), {
          testid: "notification-dead-letters",
        })
      : null,
    Object.keys(n.metadata || {}).length
      ? card("Metadata", h("pre", { class: "code", testid: "metadata" }, json(n.metadata)))
      : null,
  ];
}

function attemptTimeline(attempts) {
  if (!attempts.length) return h("p", { class: "muted", testid: "no-attempts" }, "No attempt yet.");
  return h(
    "ol",
    { class: "timeline" },
    attempts.map((a) =>
      h(
        "li",
        {
          class: ["timeline-item", a.result && `timeline-${TONES[a.result] || "neutral"}`],
          testid: "attempt",
          data: { result: a.result || "pending" },
        },
        h(
          "div",
          { class: "timeline-head" },
          h("strong", {}, `Attempt ${a.attempt}`),
          h(
            "span",
            { testid: "attempt-provider" },
            a.provider ? `via ${a.provider}` : "no provider",
          ),
          a.result
            ? badge(a.result, { testid: "attempt-result" })
            : badge("sending", { text: "In progress", testid: "attempt-result" }),
          a.possible_duplicate
            ? badge("possible_duplicate", {
                tone: "warning",
                text: "Possible duplicate",
                testid: "possible-duplicate",
              })
            : null,
        ),
        h(
          "p",
          { class: "muted small" },
          when(a.started_at),
          a.finished_at ? ` · took ${duration(between(a.started_at, a.finished_at))}` : "",
          a.segments ? ` · ${plural(a.segments, "segment")}` : "",
        ),
        a.error ? h("p", { class: "error-text", testid: "attempt-error" }, a.error) : null,
        a.provider_message_id
          ? h("p", { class: "small" }, "Provider message id ", h("code", {}, a.provider_message_id))
          : null,
        a.provider_hops?.length
          ? h(
              "div",
              { class: "hops" },
              h("p", { class: "small" }, "Providers tried before:"),
              h(
                "ul",
                { testid: "provider-hops" },
                a.provider_hops.map((hop) =>
                  h("li", {}, h("strong", {}, hop.provider), ": ", hop.error),
                ),
              ),
            )
          : null,
      ),
    ),
  );
}

function contentView(n) {
  const content = n.content || {};
  if (!Object.keys(content).length)
    return h("p", { class: "muted" }, n.redacted_at ? "Redacted." : "No content.");
  const parts = [];
  const known = new Set();
  const text = (name, title, testid, pre = false) => {
    if (content[name] === undefined || content[name] === null) return;
    known.add(name);
    const value = typeof content[name] === "string" ? content[name] : json(content[name]);
    parts.push(
      h(
        "div",
        { class: "content-part" },
        h("h3", { class: "subheading" }, title),
        h(pre ? "pre" : "p", { class: pre ? "content-text" : "content-line", testid }, value),
      ),
    );
  };
  if (n.channel === "email") {
    text("subject", "Subject", "content-subject");
    text("text", "Text", "content-text", true);
    if (typeof content.html === "string") {
      known.add("html");
      // The HTML runs nowhere: a frame with an empty sandbox (no scripts, no forms, no popups, a
      // unique origin) and the page's policy (no remote images or styles) over it.
      const frame = document.createElement("iframe");
      frame.setAttribute("sandbox", "");
      frame.setAttribute("title", "HTML content (sandboxed)");
      frame.setAttribute("referrerpolicy", "no-referrer");
      frame.className = "content-frame";
      frame.dataset.testid = "content-html";
      frame.dataset.focusKey = "content-html";
      frame.srcdoc = content.html;
      parts.push(
        h(
          "div",
          { class: "content-part" },
          h(
            "h3",
            { class: "subheading" },
            "HTML ",
            h(
              "span",
              { class: "muted small" },
              "(shown in a sandbox: no scripts, no remote images)",
            ),
          ),
          frame,
        ),
      );
    }
  } else if (n.channel === "sms") {
    text("text", "Text", "content-text", true);
  } else {
    text("title", "Title", "content-title");
    text("body", "Body", "content-body", true);
  }
  const rest = Object.fromEntries(Object.entries(content).filter(([name]) => !known.has(name)));
  if (Object.keys(rest).length) {
    parts.push(
      h(
        "div",
        { class: "content-part" },
        h("h3", { class: "subheading" }, "Other fields"),
        h("pre", { class: "code", testid: "content-other" }, json(rest)),
      ),
    );
  }
  return parts;
}

function notificationDeadLetters(list) {
  return table(
    [th("Dead-lettered"), th("Reason"), th("Last error"), th("Resolution")],
    list.map((d) =>
      h(
        "tr",
        { testid: "notification-dead-letter", data: { id: d.id } },
        h(
          "td",
          { class: "nowrap" },
          can("admin")
            ? link(route("dead-letters", d.id), when(d.dead_lettered_at), {
                data: { focusKey: `dead-letter-${d.id}` },
              })
            : when(d.dead_lettered_at),
        ),
        h("td", {}, d.reason),
        h("td", { class: "error-text" }, d.last_error || "—"),
        h(
          "td",
          {},
          d.resolution
            ? [badge(d.resolution), " ", when(d.resolved_at)]
            : badge("open", { text: "Open", tone: "warning" }),
        ),
      ),
    ),
    { label: "Dead letters of this notification" },
  );
}

// --- dead letters -------------------------------------------------------------------------------

function deadLetterCount(count, capped = false) {
  return `${capped ? "at least " : ""}${fmtInt(count)} dead letter${count === 1 && !capped ? "" : "s"}`;
}

/** Redrive or discard every open dead letter the filter matches, a page of the API at a time.
 * The filter carries `until`: the instant the group was counted at, so that a dead letter that
 * arrives meanwhile (a redriven notification failing again, say) is not acted on unseen. */
async function wholeGroup(kind, filter) {
  const path = kind === "redrive" ? "/v1/dead-letters/redrive" : "/v1/dead-letters/discard";
  let done = 0;
  let skipped = 0;
  let cursor = null;
  for (let loops = 0; loops < MAX_LOOPS; loops += 1) {
    const result = await api(path, {
      method: "POST",
      body: cursor ? { ...filter, cursor } : { ...filter },
    });
    done += (kind === "redrive" ? result.redriven : result.discarded) || 0;
    skipped += result.skipped || 0;
    cursor = result.next_cursor;
    if (!cursor) break;
  }
  return { done, skipped };
}

/** Redrive or discard the given dead letters one by one. */
async function eachOne(kind, ids) {
  let done = 0;
  const failures = [];
  for (const id of ids) {
    try {
      if (kind === "redrive")
        await api(`/v1/dead-letters/${encodeURIComponent(id)}/redrive`, { method: "POST" });
      else await api(`/v1/dead-letters/${encodeURIComponent(id)}`, { method: "DELETE" });
      done += 1;
    } catch (error) {
      if (isQuiet(error)) throw error;
      failures.push([id, error]);
    }
  }
  return { done, failures };
}

function resultText(kind, done, skipped = 0) {
  const verb = kind === "redrive" ? "Redrove" : "Discarded";
  let text = `${verb} ${deadLetterCount(done)}.`;
  if (skipped && kind === "redrive")
    text += ` ${deadLetterCount(skipped)} skipped: their notification is no longer failed (discard them).`;
  else if (skipped)
    text += ` ${deadLetterCount(skipped)} skipped: another request held them at that moment; they are left open.`;
  return text;
}

function confirmText(kind) {
  return kind === "redrive"
    ? "Their notifications are queued again and delivered anew."
    : "They are marked discarded and their notifications stay failed. This cannot be undone.";
}

async function actOnMany(kind, ids, trigger) {
  const verb = kind === "redrive" ? "Redrive" : "Discard";
  if (
    !(await confirmDialog({
      title: `${verb} ${deadLetterCount(ids.length)}?`,
      text: confirmText(kind),
      confirm: verb,
      danger: kind === "discard",
    }))
  )
    return false;
  const result = await busy(trigger, () => eachOne(kind, ids), verb);
  if (!result) return false;
  state.flash = resultText(kind, result.done);
  render();
  if (result.failures.length) {
    const [id, error] = result.failures[0];
    showError(
      error,
      `${verb}: ${plural(result.failures.length, "dead letter")} refused, e.g. ${shortId(id)}`,
    );
  }
  return true;
}

function countedAt(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : clock(date);
}

/** Redrive or discard a whole group, as counted: `count` (a lower bound when `capped`) from the
 * groups response of `asOf`, the database's clock when it counted. Only dead letters from before
 * that instant are acted on. A redrive never takes a malformed message (nothing to redrive). */
async function actOnGroup(kind, { filter, count, capped, asOf }, trigger) {
  const verb = kind === "redrive" ? "Redrive" : "Discard";
  if (
    !(await confirmDialog({
      title: `${verb} ${deadLetterCount(count, capped)}?`,
      text: `${confirmText(kind)} Only those dead-lettered before ${countedAt(asOf)}, when they were counted: later ones are left open.`,
      confirm: verb,
      danger: kind === "discard",
    }))
  )
    return false;
  const body = { ...filter, until: asOf };
  if (kind === "redrive") delete body.malformed;
  const result = await busy(trigger, () => wholeGroup(kind, body), verb);
  if (!result) return false;
  state.flash = resultText(kind, result.done, result.skipped);
  render();
  return true;
}

function groupFilter(params) {
  const filter = {};
  for (const name of ["channel", "reason", "project"])
    if (params.get(name)) filter[name] = params.get(name);
  return filter;
}

function deadLettersPage(context, container, params) {
  if (!can("admin")) {
    container.append(pageHeader("Dead letters"), lacks("admin"));
    return;
  }
  const filter = groupFilter(params);
  if (Object.keys(filter).length) {
    deadLetterGroupPage(context, container, filter);
    return;
  }
  container.append(
    pageHeader("Dead letters", {
      subtitle: "Open dead letters, grouped by channel and reason, biggest first.",
      actions: [button("Refresh", () => render(), { testid: "refresh" })],
    }),
  );
  const body = h("div", { class: "stack" }, loading());
  container.append(body);
  (async () => {
    try {
      const { groups, capped, as_of: asOf } = await context.api("/v1/dead-letters/groups");
      if (context.disposed) return;
      const rows = groups.map((group) => {
        const groupKey = `${group.channel}-${group.reason}-${group.malformed ? "malformed" : "parsed"}`;
        const filterOf = { channel: group.channel, reason: group.reason };
        const size = deadLetterCount(group.count, capped);
        const what = `${group.channel} ${group.reason}${group.malformed ? " (did not parse)" : ""}`;
        const scope = (extra = {}) => ({
          filter: { ...filterOf, ...extra },
          count: group.count,
          capped,
          asOf,
        });
        return h(
          "tr",
          {
            testid: "dead-letter-group",
            data: {
              channel: group.channel,
              reason: group.reason,
              count: group.count,
              malformed: group.malformed ? "true" : "false",
            },
          },
          h("td", {}, label(group.channel)),
          h(
            "td",
            {},
            h("code", {}, group.reason),
            group.malformed
              ? [
                  " ",
                  badge("malformed", {
                    tone: "neutral",
                    text: "Did not parse",
                    testid: "group-malformed",
                    title: "Messages that did not parse: no notification to redrive.",
                  }),
                ]
              : null,
          ),
          num(group.count, { testid: "group-count" }),
          h(
            "td",
            { class: "actions" },
            link(route("dead-letters", filterOf), "Open", {
              class: "button button-small",
              testid: "open-group",
              "aria-label": `Open ${group.channel} ${group.reason}`,
              data: { focusKey: `open-${groupKey}` },
            }),
            group.malformed
              ? null
              : button(
                  "Redrive all",
                  (event) => actOnGroup("redrive", scope(), event.currentTarget),
                  {
                    class: "button-small",
                    testid: "redrive-group",
                    disabled: !asOf,
                    data: { focusKey: `redrive-${groupKey}` },
                    "aria-label": `Redrive all ${size} of ${what}`,
                  },
                ),
            button(
              "Discard all",
              (event) =>
                actOnGroup(
                  "discard",
                  scope({ malformed: Boolean(group.malformed) }),
                  event.currentTarget,
                ),
              {
                class: "button-small",
                variant: "danger-quiet",
                testid: "discard-group",
                disabled: !asOf,
                data: { focusKey: `discard-${groupKey}` },
                "aria-label": `Discard all ${size} of ${what}`,
              },
            ),
          ),
        );
      });
      rerender(
        body,
        card(null, [
          table(
            [th("Channel"), th("Reason"), th("Open", "num"), th("Actions")],
            rows.length
              ? rows
              : [emptyRow(4, "No open dead letters. Everything was delivered or resolved.")],
            {
              label: "Dead-letter groups",
              testid: "dead-letter-groups",
            },
          ),
          capped
            ? h(
                "p",
                { class: "muted small", testid: "groups-capped" },
                "Counted up to a limit: there may be more.",
              )
            : null,
        ]),
      );
    } catch (error) {
      rerender(body);
      showError(error, "Dead letters");
    }
  })();
}

function deadLetterGroupPage(context, container, filter) {
  const title = [
    filter.channel && label(filter.channel),
    filter.reason,
    filter.project && `project ${filter.project}`,
  ]
    .filter(Boolean)
    .join(" · ");
  const groupCount = h("span", { testid: "group-total" }, "");
  container.append(
    h(
      "p",
      { class: "breadcrumb" },
      link(route("dead-letters"), "← All groups", { testid: "back-to-groups" }),
    ),
    pageHeader(`Dead letters: ${title}`, {
      subtitle: h("span", {}, "Open dead letters of this group, newest first. ", groupCount),
    }),
  );
  const selected = new Set();
  const items = new Map();
  const malformedIds = new Set(); // shown dead letters of messages that did not parse
  // The group's size, from the groups' counts (with the page's project, if any): null until
  // counted, or when counting failed (then no whole-group action: the rows shown are no count).
  let counts = null;
  let uncounted = false; // the groups request failed
  const redrivable = () => [...selected].filter((id) => !malformedIds.has(id));
  const selectAll = h("input", {
    type: "checkbox",
    id: "select-all",
    testid: "select-all",
    "aria-label": "Select all shown",
  });
  const redriveSelected = button(
    "Redrive selected",
    (event) => actOnMany("redrive", redrivable(), event.currentTarget),
    { testid: "redrive-selected", disabled: true, data: { focusKey: "redrive-selected" } },
  );
  const discardSelected = button(
    "Discard selected",
    (event) => actOnMany("discard", [...selected], event.currentTarget),
    {
      testid: "discard-selected",
      variant: "danger-quiet",
      disabled: true,
      data: { focusKey: "discard-selected" },
    },
  );
  const redriveAll = button(
    "Redrive group",
    (event) =>
      actOnGroup(
        "redrive",
        { filter, count: counts.wellFormed, capped: counts.capped, asOf: counts.asOf },
        event.currentTarget,
      ),
    { testid: "redrive-group", disabled: true },
  );
  const discardAll = button(
    "Discard group",
    (event) =>
      actOnGroup(
        "discard",
        { filter, count: counts.total, capped: counts.capped, asOf: counts.asOf },
        event.currentTarget,
      ),
    { testid: "discard-group", variant: "danger-quiet", disabled: true },
  );
  const rows = h("tbody", {});
  const summary = h("p", { class: "muted", role: "status", testid: "results-summary" }, "Loading…");
  const more = button("Load more", () => load(more), { testid: "load-more", hidden: true });
  let cursor = null;

  const sync = () => {
    const count = selected.size;
    const redrive = redrivable().length;
    redriveSelected.textContent = redrive
      ? `Redrive selected (${fmtInt(redrive)})`
      : "Redrive selected";
    discardSelected.textContent = count
      ? `Discard selected (${fmtInt(count)})`
      : "Discard selected";
    redriveSelected.disabled = redrive === 0;
    discardSelected.disabled = count === 0;
    selectAll.checked = count > 0 && count === items.size;
    selectAll.indeterminate = count > 0 && count < items.size;
    if (counts) {
      const atLeast = counts.capped ? "at least " : "";
      redriveAll.textContent = `Redrive group (${atLeast}${fmtInt(counts.wellFormed)})`;
      discardAll.textContent = `Discard group (${atLeast}${fmtInt(counts.total)})`;
      redriveAll.disabled = counts.wellFormed === 0;
      discardAll.disabled = counts.total === 0;
      // Only messages that did not parse: nothing to redrive.
      redriveAll.hidden = counts.wellFormed === 0 && counts.total > 0;
      groupCount.textContent = `${deadLetterCount(counts.total, counts.capped)} open in this group.`;
    } else {
      redriveAll.textContent = "Redrive group";
      discardAll.textContent = "Discard group";
      redriveAll.disabled = discardAll.disabled = true;
      groupCount.textContent = uncounted ? "Not counted: the whole-group actions are off." : "";
    }
  };
  selectAll.addEventListener("change", () => {
    for (const [id, row] of items) {
      row.checkbox.checked = selectAll.checked;
      if (selectAll.checked) selected.add(id);
      else selected.delete(id);
    }
    sync();
  });

  container.append(
    card(null, [
      h(
        "div",
        { class: "toolbar", role: "group", "aria-label": "Actions" },
        redriveSelected,
        discardSelected,
        h("span", { class: "toolbar-gap" }),
        redriveAll,
        discardAll,
      ),
      summary,
      h(
        "div",
        {
          class: "table-wrap",
          tabindex: "0",
          role: "region",
          "aria-label": "Dead letters of this group",
        },
        h(
          "table",
          { class: "table", testid: "dead-letters-table" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              h("th", { scope: "col", class: "check" }, selectAll),
              th("Dead-lettered"),
              th("Dead letter"),
              th("Notification"),
              th("Project"),
              th("Attempts", "num"),
              th("Last error"),
              th("Actions"),
            ),
          ),
          rows,
        ),
      ),
      h("div", { class: "load-more" }, more),
    ]),
  );

  function row(d) {
    const checkbox = h("input", {
      type: "checkbox",
      testid: "select-dead-letter",
      "aria-label": `Select dead letter ${d.id}`,
      data: { focusKey: `select-${d.id}` },
    });
    checkbox.addEventListener("change", () => {
      if (checkbox.checked) selected.add(d.id);
      else selected.delete(d.id);
      sync();
    });
    items.set(d.id, { checkbox });
    if (!d.notification_id) malformedIds.add(d.id);
    return h(
      "tr",
      { testid: "dead-letter-row", data: { id: d.id, notificationId: d.notification_id } },
      h("td", { class: "check" }, checkbox),
      h("td", { class: "nowrap" }, when(d.dead_lettered_at)),
      h(
        "td",
        {},
        link(route("dead-letters", d.id), shortId(d.id), {
          class: "mono",
          title: d.id,
          "aria-label": `Inspect dead letter ${d.id}`,
          testid: "dead-letter-link",
        }),
      ),
      h(
        "td",
        {},
        d.notification_id
          ? link(route("notifications", d.notification_id), shortId(d.notification_id), {
              class: "mono",
              title: d.notification_id,
              "aria-label": `Notification ${d.notification_id}`,
            })
          : h("span", { class: "muted" }, "none (did not parse)"),
      ),
      h("td", {}, d.project ?? "—"),
      num(d.attempts),
      h("td", { class: "error-text truncate", title: d.last_error || "" }, d.last_error || "—"),
      h(
        "td",
        { class: "actions" },
        d.notification_id
          ? button("Redrive", (event) => actOnMany("redrive", [d.id], event.currentTarget), {
              class: "button-small",
              testid: "redrive-one",
              "aria-label": `Redrive dead letter ${d.id}`,
            })
          : null,
        button("Discard", (event) => actOnMany("discard", [d.id], event.currentTarget), {
          class: "button-small",
          variant: "danger-quiet",
          testid: "discard-one",
          "aria-label": `Discard dead letter ${d.id}`,
        }),
      ),
    );
  }

  async function load(trigger) {
    await busy(
      trigger,
      async () => {
        const page = await context.api("/v1/dead-letters", {
          query: { ...filter, limit: PAGE_SIZE, cursor },
        });
        if (context.disposed) return;
        for (const item of page.items) rows.append(row(item));
        cursor = page.next_cursor;
        more.hidden = !cursor;
        summary.textContent = items.size
          ? `${deadLetterCount(items.size)} shown${cursor ? "; there are more" : ""}.`
          : "No open dead letter in this group.";
        sync();
      },
      "Dead letters",
    );
  }

  (async () => {
    try {
      const {
        groups,
        capped,
        as_of: asOf,
      } = await context.api("/v1/dead-letters/groups", { query: { project: filter.project } });
      if (context.disposed) return;
      const matching = groups.filter(
        (g) =>
          (!filter.channel || g.channel === filter.channel) &&
          (!filter.reason || g.reason === filter.reason),
      );
      const sum = (list) => list.reduce((total, g) => total + g.count, 0);
      // No instant to bound the action by: no whole-group action.
      if (asOf)
        counts = {
          total: sum(matching),
          wellFormed: sum(matching.filter((g) => !g.malformed)),
          capped: Boolean(capped),
          asOf,
        };
    } catch (error) {
      if (isQuiet(error)) return;
      uncounted = true;
      showError(error, "Dead-letter groups");
    }
    if (!counts) uncounted = true;
    sync();
    await load(null);
  })();
}

function deadLetterPage(context, container, id) {
  container.append(
    h(
      "p",
      { class: "breadcrumb" },
      link(route("dead-letters"), "← All groups", { testid: "back-to-groups" }),
    ),
    pageHeader("Dead letter", { subtitle: h("code", { testid: "dead-letter-id" }, id) }),
  );
  if (!can("admin")) {
    container.append(lacks("admin"));
    return;
  }
  const body = h("div", { class: "stack", testid: "dead-letter-detail" }, loading());
  container.append(body);
  (async () => {
    let d;
    try {
      d = await context.api(`/v1/dead-letters/${encodeURIComponent(id)}`);
    } catch (error) {
      rerender(body);
      showError(error, "Dead letter");
      return;
    }
    if (context.disposed) return;
    const act = (kind) => async (event) => {
      const verb = kind === "redrive" ? "Redrive" : "Discard";
      const trigger = event.currentTarget;
      if (
        !(await confirmDialog({
          title: `${verb} 1 dead letter?`,
          text: confirmText(kind),
          confirm: verb,
          danger: kind === "discard",
        }))
      )
        return;
      await busy(
        trigger,
        async () => {
          if (kind === "redrive")
            await api(`/v1/dead-letters/${encodeURIComponent(d.id)}/redrive`, { method: "POST" });
          else await api(`/v1/dead-letters/${encodeURIComponent(d.id)}`, { method: "DELETE" });
          state.flash = resultText(kind, 1);
          render();
        },
        verb,
      );
    };
    const open = !d.resolved_at;
    rerender(
      body,
      card(null, [
        h(
          "div",
          { class: "card-head" },
          h(
            "div",
            { class: "badges" },
            open
              ? badge("open", { text: "Open", tone: "warning", testid: "dead-letter-state" })
              : badge(d.resolution, { testid: "dead-letter-state" }),
            badge(d.channel, { tone: "outline", text: label(d.channel) }),
          ),
          open
            ? h(
                "div",
                { class: "page-actions" },
                // A message that did not parse has no notification to deliver again.
                d.notification_id
                  ? button("Redrive", act("redrive"), { variant: "primary", testid: "redrive-one" })
                  : null,
                button("Discard", act("discard"), {
                  variant: "danger-quiet",
                  testid: "discard-one",
                }),
              )
            : null,
        ),
        details([
          ["Reason", h("code", {}, d.reason), "dead-letter-reason"],
          [
            "Notification",
            d.notification_id
              ? link(route("notifications", d.notification_id), d.notification_id, {
                  class: "mono",
                  testid: "dead-letter-notification",
                })
              : "none (the message did not parse)",
          ],
          ["Project", d.project],
          ["Attempts", fmtInt(d.attempts)],
          ["Dead-lettered", when(d.dead_lettered_at)],
          ["Resolved", d.resolved_at ? [label(d.resolution), " · ", when(d.resolved_at)] : null],
        ]),
        h("h3", { class: "subheading" }, "Last error"),
        h("pre", { class: "code error-text", testid: "dead-letter-error" }, d.last_error || "—"),
      ]),
    );
  })();
}

// --- campaigns ----------------------------------------------------------------------------------

const CAMPAIGN_COUNTS = [
  "pending",
  "scheduled",
  "queued",
  "sending",
  "retrying",
  "sent",
  "failed",
  "canceled",
];

function campaignsPage(context, container) {
  container.append(
    pageHeader("Campaigns", {
      subtitle: "Newest first; the progress of unfinished ones is live (every 3 seconds).",
      actions: can("read") ? [button("Refresh", () => render(), { testid: "refresh" })] : [],
    }),
  );
  if (!can("read")) {
    container.append(lacks("read"));
    return;
  }
  // The list is read once (and a page more on "Load more"); then only the campaigns shown that
  // are not finished are polled, one at a time, each by id: a finished campaign's counts no
  // longer change, and counting them every few seconds would cost the database for nothing.
  const list = h("div", { class: "stack", testid: "campaigns" }, loading());
  const more = button("Load more", () => loadPage(more), { testid: "load-more", hidden: true });
  container.append(list, h("div", { class: "load-more" }, more));
  const shown = new Map(); // id -> {campaign, element, memo}
  let cursor = null;
  let polling = false;

  const unfinished = () =>
    [...shown.values()].filter((entry) => UNFINISHED_CAMPAIGN.has(entry.campaign.status));

  const update = (campaign) => {
    const entry = shown.get(campaign.id);
    if (!entry || !changed(entry.memo, campaign)) return;
    const element = campaignCard(campaign);
    swap(entry.element, element);
    entry.campaign = campaign;
    entry.element = element;
  };

  const fetchOne = async (id) => {
    const campaign = await context.api(`/v1/campaigns/${encodeURIComponent(id)}`);
    if (!context.disposed) update(campaign);
  };

  const tick = async () => {
    if (context.disposed) return;
    if (!document.hidden) {
      for (const entry of unfinished()) {
        if (context.disposed) return;
        try {
          await fetchOne(entry.campaign.id);
        } catch (error) {
          if (context.disposed) return;
          showError(error, "Campaign");
        }
      }
    }
    if (!context.disposed && unfinished().length) context.later(tick, POLL_MS);
    else polling = false;
  };

  const startPolling = () => {
    if (polling || context.disposed || !unfinished().length) return;
    polling = true;
    context.later(tick, POLL_MS);
  };

  async function loadPage(trigger) {
    await busy(
      trigger,
      async () => {
        const page = await context.api("/v1/campaigns", { query: { limit: PAGE_SIZE, cursor } });
        if (context.disposed) return;
        if (!shown.size) list.replaceChildren();
        for (const campaign of page.items) {
          if (shown.has(campaign.id)) continue;
          const element = campaignCard(campaign);
          const memo = {};
          changed(memo, campaign);
          shown.set(campaign.id, { campaign, element, memo });
          list.append(element);
        }
        if (!shown.size)
          list.replaceChildren(card(null, h("p", { class: "muted" }, "No campaign yet.")));
        cursor = page.next_cursor;
        more.hidden = !cursor;
        startPolling();
      },
      "Campaigns",
    );
  }

  // After an action on one campaign: read it again, and poll it if it runs again.
  context.refresh = async (id) => {
    if (id) await fetchOne(id);
    startPolling();
  };
  loadPage(null);
}

/** Replace `element` by `replacement`, keeping the keyboard focus on the element of the same
 * data-focus-key if it was inside. */
function swap(element, replacement) {
  const active = document.activeElement;
  const focusKey = active && element.contains(active) ? active.dataset.focusKey : null;
  element.replaceWith(replacement);
  if (focusKey) {
    const again = replacement.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}

function campaignCard(c) {
  const counts = c.counts || {};
  const finished = (counts.sent || 0) + (counts.failed || 0) + (counts.canceled || 0);
  const percent = c.recipients ? Math.floor((finished * 100) / c.recipients) : 0;
  const bar = h("div", {
    class: "progress",
    role: "progressbar",
    "aria-valuemin": "0",
    "aria-valuemax": "100",
    "aria-valuenow": String(percent),
    "aria-label": `Progress of ${c.name}`,
    testid: "campaign-progress",
  });
  for (const part of ["sent", "failed", "canceled"]) {
    const segment = h("span", { class: `progress-${part}` });
    // CSSOM, not a style attribute: the page's policy allows no inline styles.
    segment.style.width = `${c.recipients ? ((counts[part] || 0) * 100) / c.recipients : 0}%`;
    bar.append(segment);
  }
  const actions = [];
  if (can("send")) {
    if (c.status === "pending" || c.status === "processing") {
      actions.push(
        button("Pause", (event) => steerCampaign(c, "pause", event.currentTarget), {
          class: "button-small",
          testid: "campaign-pause",
          data: { focusKey: `pause-${c.id}` },
        }),
      );
    }
    if (c.status === "paused") {
      actions.push(
        button("Resume", (event) => steerCampaign(c, "resume", event.currentTarget), {
          class: "button-small",
          variant: "primary",
          testid: "campaign-resume",
          data: { focusKey: `resume-${c.id}` },
        }),
      );
    }
    if (["pending", "processing", "paused"].includes(c.status)) {
      actions.push(
        button("Cancel", (event) => steerCampaign(c, "cancel", event.currentTarget), {
          class: "button-small",
          variant: "danger-quiet",
          testid: "campaign-cancel",
          data: { focusKey: `cancel-${c.id}` },
        }),
      );
    }
  }
  actions.push(
    link(route("notifications", { campaign: c.id }), "Notifications", {
      class: "button button-small button-quiet",
      testid: "campaign-notifications",
      data: { focusKey: `notifications-${c.id}` },
    }),
  );
  const timing = [];
  if (c.throughput) timing.push(`${decimal.format(c.throughput)} / s`);
  if (c.estimated_finish_at)
    timing.push(h("span", {}, "finishes about ", when(c.estimated_finish_at)));
  if (c.finished_at) timing.push(h("span", {}, "finished ", when(c.finished_at)));
  else if (c.started_at) timing.push(h("span", {}, "started ", when(c.started_at)));
  else if (c.send_at) timing.push(h("span", {}, "starts ", when(c.send_at)));
  return h(
    "article",
    {
      class: "card campaign",
      testid: "campaign-row",
      data: { id: c.id, status: c.status },
      "aria-labelledby": `campaign-${c.id}`,
    },
    h(
      "div",
      { class: "card-head" },
      h(
        "div",
        { class: "campaign-title" },
        h("h2", { class: "card-title", id: `campaign-${c.id}` }, c.name),
        h(
          "div",
          { class: "badges" },
          badge(c.status, { testid: "campaign-status" }),
          badge(c.channel, { tone: "outline", text: label(c.channel) }),
          c.priority !== "normal"
            ? badge(c.priority, { tone: "outline", text: `${label(c.priority)} priority` })
            : null,
        ),
      ),
      h("div", { class: "page-actions" }, actions),
    ),
    h(
      "div",
      { class: "progress-line" },
      bar,
      h("span", { class: "progress-text", testid: "campaign-percent" }, `${percent}%`),
    ),
    h(
      "p",
      { class: "small muted" },
      `${fmtInt(finished)} of ${plural(c.recipients, "recipient")} done`,
      c.skipped ? ` · ${fmtInt(c.skipped)} rows skipped at upload` : "",
      " · created ",
      when(c.created_at),
      timing.length ? [" · ", timing.flatMap((t, i) => (i ? [" · ", t] : [t]))] : "",
    ),
    h(
      "ul",
      { class: "breakdown", testid: "campaign-counts", "aria-label": "Recipients by status" },
      CAMPAIGN_COUNTS.map((name) =>
        h(
          "li",
          {
            class: ["breakdown-item", !counts[name] && "zero"],
            data: { status: name },
            testid: `count-${name}`,
          },
          h("span", { class: `dot dot-${TONES[name] || "neutral"}`, "aria-hidden": "true" }),
          `${label(name)} `,
          h("strong", {}, fmtInt(counts[name] || 0)),
        ),
      ),
    ),
  );
}

async function steerCampaign(c, action, trigger) {
  if (action === "cancel") {
    const left =
      c.recipients - ((c.counts?.sent || 0) + (c.counts?.failed || 0) + (c.counts?.canceled || 0));
    const ok = await confirmDialog({
      title: `Cancel the campaign "${c.name}"?`,
      text: `Nothing more is sent: up to ${plural(Math.max(left, 0), "recipient")} not yet sent to end canceled. This cannot be undone.`,
      confirm: "Cancel campaign",
      danger: true,
    });
    if (!ok) return;
  }
  await busy(
    trigger,
    async () => {
      await api(`/v1/campaigns/${encodeURIComponent(c.id)}/${action}`, { method: "POST" });
      notice(
        `Campaign "${c.name}" ${action === "pause" ? "paused" : action === "resume" ? "resumed" : "canceled"}.`,
      );
      if (state.page?.refresh) await state.page.refresh(c.id);
    },
    `${label(action)} campaign`,
  );
}

// --- channels -----------------------------------------------------------------------------------

function channelsPage(context, container) {
  container.append(
    pageHeader("Channels", {
      subtitle:
        "Pause a channel to hold its deliveries in the queue; resume to drain it. Live (every 3 seconds).",
    }),
  );
  if (!can("admin")) {
    container.append(lacks("admin"));
    return;
  }
  const body = h("div", { class: "stack" }, loading());
  container.append(body);
  const memo = {};
  const refresh = async () => {
    const queues = await context.api("/v1/queues");
    if (context.disposed || !changed(memo, queues)) return;
    const rows = queues.channels.map((c) =>
      h(
        "tr",
        { testid: `channel-row-${c.channel}`, data: { channel: c.channel, paused: c.paused } },
        h("th", { scope: "row" }, label(c.channel)),
        h("td", {}, channelState(c)),
        h(
          "td",
          { class: "actions" },
          c.paused
            ? button(
                "Resume",
                (event) => steerChannel(c.channel, "resume", event.currentTarget, refresh),
                {
                  variant: "primary",
                  class: "button-small",
                  testid: `resume-${c.channel}`,
                  data: { focusKey: `resume-${c.channel}` },
                  "aria-label": `Resume the ${c.channel} channel`,
                },
              )
            : button(
                "Pause",
                (event) => steerChannel(c.channel, "pause", event.currentTarget, refresh),
                {
                  class: "button-small",
                  testid: `pause-${c.channel}`,
                  data: { focusKey: `pause-${c.channel}` },
                  "aria-label": `Pause the ${c.channel} channel`,
                },
              ),
        ),
        h(
          "td",
          { class: "num", testid: `instances-${c.channel}` },
          `${fmtInt(c.instances)}${c.paused_instances ? ` (${fmtInt(c.paused_instances)} paused)` : ""}`,
        ),
        num(laneDepth(c.lanes), { testid: `depth-${c.channel}` }),
        num(c.in_flight, { testid: `in-flight-${c.channel}` }),
        h("td", { class: "num" }, decimal.format(c.delivered_per_second || 0)),
        num(c.dead_letters),
      ),
    );
    rerender(
      body,
      card(
        null,
        table(
          [
            th("Channel"),
            th("State"),
            th("Action"),
            th("Instances", "num"),
            th("Queue depth", "num"),
            th("In flight", "num"),
            th("Delivered / s", "num"),
            th("Open dead letters", "num"),
          ],
          rows,
          { label: "Channels", testid: "channels-table" },
        ),
      ),
    );
  };
  context.poll(refresh);
}

async function steerChannel(channel, action, trigger, refresh) {
  const ok = await confirmDialog(
    action === "pause"
      ? {
          title: `Pause the ${channel} channel?`,
          text: "Every instance stops taking deliveries; new notifications wait in the queue until you resume.",
          confirm: "Pause channel",
          danger: true,
        }
      : {
          title: `Resume ${channel}?`,
          text: "Its queued messages will be delivered.",
          confirm: "Resume channel",
        },
  );
  if (!ok) return;
  await busy(
    trigger,
    async () => {
      const result = await api(`/v1/channels/${encodeURIComponent(channel)}/${action}`, {
        method: "POST",
      });
      const suffix = result.delivered ? "" : " Some instances take it within a heartbeat.";
      notice(`The ${channel} channel is ${result.paused ? "paused" : "running again"}.${suffix}`);
      await refresh();
      // The button pressed is gone (Pause became Resume): the keyboard goes on from its successor.
      if (!document.activeElement || document.activeElement === document.body) {
        const next = action === "pause" ? "resume" : "pause";
        document.querySelector(`[data-focus-key="${CSS.escape(`${next}-${channel}`)}"]`)?.focus();
      }
    },
    `${label(action)} ${channel}`,
  );
}

// --- signing in and out ---------------------------------------------------------------------------

function showSignedIn() {
  const me = state.me;
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  $("#session").hidden = false;
  $("#whoami").replaceChildren(
    h("span", { class: "whoami-name", testid: "key-name", title: "API key" }, me.name || "API key"),
    h(
      "span",
      { class: "whoami-line" },
      h("span", { class: "whoami-project", testid: "key-project", title: "Project" }, me.project),
      h(
        "span",
        { class: "whoami-scopes", testid: "key-scopes", title: "Scopes" },
        (me.scopes || []).map((scope) => h("span", { class: "scope", data: { scope } }, scope)),
      ),
    ),
  );
}

function showSignIn() {
  if (state.page) state.page.dispose();
  state.page = null;
  state.path = null;
  $("#page").replaceChildren();
  $("#nav").hidden = true;
  $("#session").hidden = true;
  $("#whoami").replaceChildren();
  $("#sign-in").hidden = false;
  document.title = "Sign in · Herald console";
  $("#api-key").focus();
}

function signOut() {
  state.key = null;
  state.me = null;
  window.sessionStorage.removeItem(KEY_STORAGE);
  showSignIn();
}

async function signIn(key) {
  const me = await api("/v1/me", { key });
  state.key = key;
  state.me = me;
  window.sessionStorage.setItem(KEY_STORAGE, key);
  showSignedIn();
  state.path = null;
  if (!parseHash()) window.location.replace(route("overview"));
  render();
}

function start() {
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#api-key");
    const key = input.value.trim();
    clearMessages();
    if (!key) {
      showError(new ApiError(0, { title: "Enter an API key" }));
      input.focus();
      return;
    }
    await busy(
      event.submitter,
      async () => {
        try {
          await signIn(key);
          input.value = "";
        } catch (error) {
          input.focus();
          if (error instanceof ApiError && error.status === 401) {
            throw new ApiError(401, { ...error.problem, title: "That API key was refused" });
          }
          throw error;
        }
      },
      "Sign in",
    );
  });
  $("#sign-out").addEventListener("click", () => {
    signOut();
    clearMessages();
    notice("Signed out. The key is forgotten in this tab.");
  });
  $("#skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    const title = $("#page-title") || $("#view");
    title.focus();
  });
  window.addEventListener("hashchange", render);

  const saved = window.sessionStorage.getItem(KEY_STORAGE);
  if (!saved) {
    showSignIn();
    return;
  }
  signIn(saved).catch((error) => {
    if (error instanceof ApiError && error.status === 401) {
      signOut();
      showError(error, "Signed out");
    } else {
      // The API did not answer: keep the key (a reload tries again), offer the form meanwhile.
      showSignIn();
      showError(error, "Sign in");
    }
  });
}

start();
