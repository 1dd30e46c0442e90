/* headrace demo: the ProgRock page. Talks to /ws/progress/ (progress/consumers.py).
 *
 * The ids of this browser's jobs live in localStorage, so that after a reload (or a
 * reconnect) the page asks the server to "watch" them again and every bar resumes.
 *
 * "Run as a task" jobs (kind "task") are durable tasks: /ws/progress/ only starts them; each
 * one's bar follows its own socket, /ws/tasks/<id>/ (headrace's TaskProgressConsumer), which
 * sends the task's state first (so a reload resumes), then its progress, then how it ended.
 */
(function () {
  "use strict";

  var root = document.getElementById("progress");
  var list = document.getElementById("jobs");
  var goButton = document.getElementById("go-button");
  var taskButton = document.getElementById("task-button"); // only for signed-in visitors
  var clearButton = document.getElementById("clear-button");
  var noJobs = document.getElementById("no-jobs");
  var hint = document.getElementById("hint");

  var JOBS_KEY = "headrace-demo:jobs";
  var KEEP = 12;
  var jobs = loadJobs(); // [{id, started, progress, complete}], oldest first
  var rows = {};
  var quiet = {}; // job id -> when the page last heard of it
  var QUIET_MS = 3000;
  var taskSockets = {}; // task id -> its open WebSocket

  function loadJobs() {
    try {
      var saved = JSON.parse(window.localStorage.getItem(JOBS_KEY) || "[]");
      return Array.isArray(saved) ? saved.filter(function (j) { return j && j.id; }) : [];
    } catch (error) {
      return [];
    }
  }

  function saveJobs() {
    jobs = jobs.slice(-KEEP);
    window.localStorage.setItem(JOBS_KEY, JSON.stringify(jobs));
  }

  function find(id) {
    for (var i = 0; i < jobs.length; i++) if (jobs[i].id === id) return jobs[i];
    return null;
  }

  function row(job) {
    var existing = rows[job.id];
    if (existing) return existing;
    var item = live.el("li", "job");
    item.dataset.job = job.id;
    var head = live.el("div", "job-head");
    var label = (job.kind === "task" ? "Task " : "Job ") + job.id.slice(0, 6);
    var name = live.el("span", "job-name", label);
    if (job.kind === "task") item.classList.add("task");
    var status = live.el("span", "job-status", "queued");
    head.appendChild(name);
    head.appendChild(status);
    var bar = live.el("div", "bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-label", label);
    var fill = live.el("div", "bar-fill");
    bar.appendChild(fill);
    var value = live.el("span", "job-value", "0%");
    item.appendChild(head);
    item.appendChild(bar);
    item.appendChild(value);
    list.insertBefore(item, list.firstChild);
    rows[job.id] = { item: item, fill: fill, bar: bar, value: value, status: status };
    noJobs.hidden = true;
    return rows[job.id];
  }

  function paint(job) {
    var r = row(job);
    var pct = Math.max(0, Math.min(100, job.progress || 0));
    r.fill.style.width = pct + "%";
    r.bar.setAttribute("aria-valuenow", String(pct));
    r.value.textContent = pct + "%";
    r.item.classList.toggle("done", Boolean(job.complete));
    if (job.kind === "task") {
      r.status.textContent = job.status || "queued";
      r.item.classList.toggle("failed", job.status === "failed" || job.status === "cancelled");
    } else {
      r.status.textContent = job.complete ? "complete" : pct > 0 ? "rocking" : "starting";
    }
    clearButton.hidden = !jobs.some(function (j) { return j.complete; });
  }

  // -- durable tasks: one socket per running task --------------------------------------------

  function taskPercent(data) {
    if (typeof data.done !== "number" || typeof data.total !== "number" || data.total <= 0) {
      return null;
    }
    return Math.round((100 * data.done) / data.total);
  }

  var TASK_STATUS = { READY: "queued", RUNNING: "running", SUCCESSFUL: "finished", FAILED: "failed" };

  function onTaskMessage(job, data) {
    var pct = taskPercent(data);
    if (pct !== null) job.progress = Math.max(job.progress || 0, pct);
    switch (data.type) {
      case "task.state":
        job.status = TASK_STATUS[data.status] || job.status;
        break;
      case "task.progress":
        job.status = "running";
        break;
      case "task.finished":
        job.progress = 100;
        job.status = "finished";
        job.complete = true;
        break;
      case "task.failed":
        job.status = "failed";
        job.complete = true;
        break;
      case "task.cancelled":
        job.status = "cancelled";
        job.complete = true;
        break;
    }
    saveJobs();
    paint(job);
  }

  function watchTask(job) {
    if (job.complete || taskSockets[job.id]) return;
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + window.location.host + "/ws/tasks/" + job.id + "/");
    taskSockets[job.id] = ws;
    ws.onmessage = function (event) {
      try {
        onTaskMessage(job, JSON.parse(event.data));
      } catch (error) {
        /* not JSON: ignore */
      }
    };
    ws.onclose = function (event) {
      delete taskSockets[job.id];
      if (event.code === 4404) {
        // The in-memory task backend forgets its jobs when the server stops.
        job.status = "lost";
        job.complete = true;
      } else if (event.code === 4403) {
        job.status = "not yours";
        job.complete = true;
      }
      saveJobs();
      paint(job);
      // Any other close before the end: the page socket's next "open" watches it again.
    };
  }

  function watchTasks() {
    jobs.forEach(function (j) {
      if (j.kind === "task") watchTask(j);
    });
  }

  function forget(id) {
    jobs = jobs.filter(function (j) { return j.id !== id; });
    saveJobs();
    if (rows[id]) {
      rows[id].item.remove();
      delete rows[id];
    }
    noJobs.hidden = jobs.length > 0;
  }

  function onMessage(data) {
    var job;
    switch (data.type) {
      case "started":
        job = { id: data.job, started: Date.now(), progress: 0, complete: false };
        jobs.push(job);
        quiet[job.id] = Date.now();
        saveJobs();
        paint(job);
        break;
      case "progress":
        job = find(data.job);
        if (!job) return;
        // Steps may cross a reconnect: never move a bar backwards.
        job.progress = Math.max(job.progress || 0, data.progress);
        job.complete = job.complete || data.complete;
        quiet[job.id] = Date.now();
        saveJobs();
        paint(job);
        break;
      case "task_started":
        job = { id: data.task, kind: "task", started: Date.now(), progress: 0, complete: false };
        jobs.push(job);
        saveJobs();
        paint(job);
        watchTask(job);
        break;
      case "gone":
        forget(data.job);
        break;
      case "error":
        hint.textContent = data.error;
        break;
    }
  }

  var socket = live.connect(root.dataset.socket, {
    open: function (s) {
      goButton.disabled = false;
      if (taskButton) taskButton.disabled = false;
      watchTasks();
      var mine = jobs.filter(function (j) { return j.kind !== "task"; }).map(function (j) {
        return j.id;
      });
      mine.forEach(function (id) { quiet[id] = Date.now(); });
      if (mine.length) s.send({ action: "watch", jobs: mine });
    },
    close: function () {
      goButton.disabled = true;
      if (taskButton) taskButton.disabled = true;
    },
    message: onMessage,
  });

  // A running job that has gone quiet may have lost its next step (a server restart drops the
  // in-memory layer's delayed messages): ask about it again; the server resumes it if so.
  window.setInterval(function () {
    var now = Date.now();
    var stale = jobs.filter(function (j) {
      return j.kind !== "task" && !j.complete && now - (quiet[j.id] || 0) > QUIET_MS;
    });
    if (!stale.length || !socket.isOpen()) return;
    stale.forEach(function (j) { quiet[j.id] = now; });
    socket.send({ action: "watch", jobs: stale.map(function (j) { return j.id; }) });
  }, 1000);

  goButton.addEventListener("click", function () {
    if (!socket.send({ action: "start" })) hint.textContent = "Not connected: try again in a moment.";
  });

  if (taskButton) {
    taskButton.addEventListener("click", function () {
      if (!socket.send({ action: "start_task" })) {
        hint.textContent = "Not connected: try again in a moment.";
      }
    });
  }

  clearButton.addEventListener("click", function () {
    jobs.filter(function (j) { return j.complete; }).forEach(function (j) { forget(j.id); });
    clearButton.hidden = true;
  });

  jobs.forEach(paint);
  noJobs.hidden = jobs.length > 0;
})();
