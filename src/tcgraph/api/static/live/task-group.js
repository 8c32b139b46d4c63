// The live task-group page: one taskGroupChanges subscription (docs/subscriptions.md).
//
// Changes are collected as they arrive (the latest per task) and drawn once per
// animation frame: a row is created once and updated in place, new rows are
// added in one fragment, and the counts are recomputed from the changed rows
// only. So a snapshot of 10,000 tasks, or a burst of thousands of changes, is a
// few frames of work, never a reflow of the whole table per change.
"use strict";

(function () {
  const STATES = ["unscheduled", "pending", "running", "completed", "failed", "exception"];
  const RETRY_MS = 1000;
  const groupId = decodeURIComponent(window.location.pathname.split("/").pop());
  const socketUrl = new URL("../graphql", window.location.href);
  socketUrl.protocol = socketUrl.protocol === "https:" ? "wss:" : "ws:";
  const QUERY = `subscription ($g: ID!, $after: String) {
    taskGroupChanges(taskGroupId: $g, after: $after) {
      cursor taskId
      task { label status { state runs { state scheduled started resolved } } }
    }
  }`;

  const tbody = document.getElementById("tasks");
  const feed = document.getElementById("feed");
  const countCells = {};
  for (const cell of document.querySelectorAll("#counts [data-state]")) {
    countCells[cell.dataset.state] = cell.querySelector(".n");
  }
  document.getElementById("group").textContent = groupId;
  document.title = "tcgraph · task group " + groupId;

  const rows = new Map(); // taskId -> {tr, cells, state}
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  let pending = new Map(); // taskId -> latest change not drawn yet
  let frame = 0;
  let lastCursor = null;
  let received = 0;

  function setFeed(state, text) {
    feed.dataset.feed = state;
    feed.textContent = text;
  }

  function lastChange(runs) {
    let latest = "";
    for (const run of runs) {
      for (const time of [run.scheduled, run.started, run.resolved]) {
        if (time && time > latest) latest = time;
      }
    }
    return latest;
  }

  function newRow(taskId) {
    const tr = document.createElement("tr");
    tr.dataset.taskId = taskId;
    const cells = {};
    for (const name of ["label", "state", "runs", "changed"]) {
      const td = document.createElement("td");
      td.className = name;
      tr.appendChild(td);
      cells[name] = td;
    }
    return { tr, cells, state: null };
  }

  function draw() {
    frame = 0;
    const changes = pending;
    pending = new Map();
    const added = document.createDocumentFragment();
    for (const [taskId, change] of changes) {
      let row = rows.get(taskId);
      if (change.task === null) { // no longer stored (expired)
        if (row) {
          if (row.state) counts[row.state] -= 1;
          row.tr.remove();
          rows.delete(taskId);
        }
        continue;
      }
      if (!row) {
        row = newRow(taskId);
        rows.set(taskId, row);
        added.appendChild(row.tr);
      }
      const status = change.task.status;
      const state = status.state.toLowerCase();
      if (row.state !== state) {
        if (row.state) counts[row.state] -= 1;
        counts[state] += 1;
        row.state = state;
        row.tr.dataset.state = state;
        row.cells.state.textContent = state;
      }
      const label = change.task.label || taskId;
      if (row.cells.label.textContent !== label) row.cells.label.textContent = label;
      row.cells.runs.textContent = String(status.runs.length);
      row.cells.changed.textContent = lastChange(status.runs);
    }
    tbody.appendChild(added);
    for (const state of STATES) countCells[state].textContent = String(counts[state]);
    countCells.all.textContent = String(rows.size);
  }

  function onChange(change) {
    received += 1;
    lastCursor = change.cursor;
    pending.set(change.taskId, change);
    if (!frame) frame = window.requestAnimationFrame(draw);
  }

  const client = graphqlWs.createClient({ url: socketUrl.href, lazy: true, retryAttempts: 0 });

  function subscribe() {
    setFeed("connecting", lastCursor ? "reconnecting…" : "connecting…");
    client.subscribe(
      { query: QUERY, variables: { g: groupId, after: lastCursor } },
      {
        next(message) {
          if (message.errors) {
            fail(message.errors);
            return;
          }
          if (feed.dataset.feed !== "live") setFeed("live", "live");
          onChange(message.data.taskGroupChanges);
        },
        error(error) { fail(error); },
        complete() { window.setTimeout(subscribe, RETRY_MS); },
      },
    );
  }

  function fail(error) {
    const errors = Array.isArray(error) ? error : [error];
    const codes = errors.map((e) => (e && e.extensions && e.extensions.code) || "");
    if (codes.includes("CURSOR_EXPIRED")) {
      // Away longer than the server keeps changes: start over from a fresh snapshot.
      lastCursor = null;
      pending = new Map();
      rows.clear();
      tbody.textContent = "";
      for (const state of STATES) counts[state] = 0;
    }
    const reason = errors.map((e) => (e && (e.message || e.reason)) || String(e)).join("; ");
    setFeed("error", "disconnected (" + reason + "); retrying…");
    window.setTimeout(subscribe, RETRY_MS);
  }

  // For tests and the curious: how many changes arrived, and the last cursor.
  window.tcgraphLive = { received: () => received, cursor: () => lastCursor };
  subscribe();
})();
