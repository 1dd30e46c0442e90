// headrace dashboard: one WebSocket, updates drawn at most once per animation frame.
(function () {
  "use strict";

  var body = document.body;
  var conn = document.getElementById("conn");
  var jobCard = document.getElementById("job");
  var watched = jobCard ? jobCard.getAttribute("data-job") : null;
  var jobBase = document.getElementById("job-base");
  var socket = null;
  var retryDelay = 500;
  var pending = null;

  function setConn(state, text) {
    conn.setAttribute("data-state", state);
    conn.textContent = text;
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return (seconds * 1000).toFixed(0) + " ms";
    if (seconds < 90) return seconds.toFixed(1) + " s";
    if (seconds < 5400) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function when(epoch) {
    if (!epoch) return "—";
    return new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 23) + " UTC";
  }

  function fillRows(table, rows, emptyText, columns) {
    var tbody = table.tBodies[0];
    var fresh = document.createElement("tbody");
    if (!rows.length) {
      fresh.appendChild(el("tr", { "class": "empty" }, [el("td", { colspan: String(columns), text: emptyText })]));
    }
    rows.forEach(function (row) { fresh.appendChild(row); });
    table.replaceChild(fresh, tbody);
  }

  function cell(text, cls) { return el("td", cls ? { text: text, "class": cls } : { text: text }); }

  function drawQueues(data) {
    var table = document.getElementById("queues");
    if (!table) return;
    fillRows(table, data.queues.map(function (q) {
      var name = data.queues.some(function (o) { return o.backend !== q.backend; }) ? q.backend + " / " + q.name : q.name;
      return el("tr", { "data-queue": q.name }, [
        cell(name), cell(String(q.ready), "num ready"), cell(String(q.delayed), "num delayed"),
        cell(String(q.running), "num running"), cell(String(q.dead), "num dead" + (q.dead ? " bad" : "")),
        cell(ago(q.oldest_ready_age), "num oldest")
      ]);
    }), "no queues", 6);
    var totals = document.getElementById("totals");
    totals.textContent = ["enqueued", "succeeded", "failed", "retried", "cancelled", "redelivered", "dead"].map(function (k) {
      return k + " " + data.totals[k];
    }).join(" · ");
  }

  function drawChart(points) {
    var ok = document.getElementById("chart-ok");
    if (!ok) return;
    var ko = document.getElementById("chart-ko");
    var end = points.length ? points[points.length - 1][0] : 0;
    // The x axis spans the history there is (10 s at least, 5 minutes at most).
    var span = points.length ? Math.max(10, Math.min(300, end - points[0][0])) : 300;
    var start = end - span;
    var top = 1;
    points.forEach(function (p) { top = Math.max(top, p[1], p[2]); });
    document.getElementById("chart-span").textContent = span >= 120 ? Math.round(span / 60) + " minutes" : Math.round(span) + " s";
    document.getElementById("chart-peak").textContent = top.toFixed(top < 10 ? 1 : 0);
    function line(index) {
      return points.map(function (p) {
        var x = Math.max(0, (p[0] - start) / span * 600);
        var y = 116 - p[index] / top * 110;
        return x.toFixed(1) + "," + y.toFixed(1);
      }).join(" ");
    }
    ok.setAttribute("points", line(1));
    ko.setAttribute("points", line(2));
    document.getElementById("chart").setAttribute("data-peak", top.toFixed(1));
  }

  function drawWorkers(data, now) {
    var table = document.getElementById("workers");
    if (!table) return;
    fillRows(table, data.workers.map(function (w) {
      return el("tr", { "data-worker": w.id, "class": w.up ? "up" : "down" }, [
        el("td", { title: w.id }, [
          el("span", { "class": "dot", title: w.up ? "up" : "down" }),
          document.createTextNode(" " + w.id.slice(0, 8) + (w.up ? "" : " (down)")),
          el("small", { text: w.queues.join(", ") })
        ]),
        cell(w.host + " / " + w.pid),
        cell(w.in_hand + " / " + w.concurrency, "num"),
        cell(now - w.last_heartbeat < 1 ? "now" : ago(now - w.last_heartbeat) + " ago", "num")
      ]);
    }), "no workers", 4);
  }

  function drawRealtime(rt) {
    var facts = document.getElementById("realtime");
    if (!facts) return;
    var items = [["WebSockets open (this process)", rt.websockets], ["SSE streams open", rt.sse]];
    Object.keys(rt.layers).forEach(function (alias) {
      var s = rt.layers[alias];
      items.push(["Layer " + alias + ": sent / received", s.sent + " / " + s.received]);
      items.push(["Dropped (full) / expired", s.dropped_full + " / " + s.expired]);
      items.push(["Delayed messages pending", s.delayed_pending]);
      items.push(["Channels / groups", s.channels + " / " + s.groups]);
    });
    var fresh = document.createElement("dl");
    fresh.className = "facts";
    fresh.id = "realtime";
    items.forEach(function (item) {
      fresh.appendChild(el("dt", { text: item[0] }));
      fresh.appendChild(el("dd", { text: String(item[1]) }));
    });
    facts.parentNode.replaceChild(fresh, facts);
    fillRows(document.getElementById("groups"), rt.groups.map(function (g) {
      return el("tr", {}, [cell(g.group), cell(String(g.members), "num")]);
    }), "no groups", 2);
  }

  function jobHref(id) {
    return jobBase.getAttribute("data-href").replace("JOB_ID", encodeURIComponent(id));
  }

  function drawJobs(jobs, now) {
    var table = document.getElementById("jobs");
    if (!table) return;
    document.getElementById("jobs-count").textContent = "(" + jobs.rows.length + " of " + jobs.total + ")";
    fillRows(table, jobs.rows.map(function (j) {
      var runtime = j.started_at ? ((j.finished_at || now) - j.started_at) : null;
      var progress = j.total ? Math.round(100 * j.done / j.total) + "%" : "—";
      return el("tr", { "data-job": j.id, "data-state": j.state }, [
        el("td", {}, [el("a", { href: jobHref(j.id), text: j.id.slice(0, 12) })]),
        cell(j.task), cell(j.queue),
        el("td", {}, [el("span", { "class": "state", "data-state": j.state, text: j.state.toLowerCase() })]),
        cell(String(j.attempts), "num"), cell(progress, "num"),
        cell(when(j.enqueued_at)), cell(ago(runtime), "num")
      ]);
    }), "no jobs match", 8);
  }

  function drawJob(job) {
    if (!jobCard || !job) return;
    if (!job.task) {
      var gone = document.getElementById("job-state");
      gone.setAttribute("data-state", "GONE");
      gone.textContent = "gone (purged or expired)";
      return;
    }
    var state = document.getElementById("job-state");
    state.setAttribute("data-state", job.state);
    state.textContent = job.state.toLowerCase();
    document.getElementById("job-attempts").textContent = String(job.attempts);
    document.getElementById("job-progress").textContent = job.progress ? (job.progress.done + " / " + job.progress.total) : "—";
    document.getElementById("job-result").textContent = job.state === "SUCCESSFUL" ? JSON.stringify(job.return_value) : "—";
    [["job-started", job.started_at], ["job-finished", job.finished_at], ["job-due", job.due_at], ["job-enqueued", job.enqueued_at]].forEach(function (pair) {
      var node = document.getElementById(pair[0]);
      node.setAttribute("data-time", pair[1] || "");
      node.textContent = when(pair[1]);
    });
    document.getElementById("retry").disabled = !job.finished;
    document.getElementById("purge").disabled = !job.finished;
    document.getElementById("cancel").disabled = job.finished;
    var errors = document.getElementById("job-errors");
    if (errors.getAttribute("data-count") !== String(job.errors.length)) {
      errors.setAttribute("data-count", String(job.errors.length));
      errors.textContent = "";
      if (!job.errors.length) errors.appendChild(el("p", { "class": "muted", text: "none" }));
      job.errors.forEach(function (error, i) {
        var details = el("details", { "class": "error", open: "" }, [
          el("summary", {}, [document.createTextNode("Attempt " + (i + 1) + ": "), el("code", { text: error.exception_class })]),
          el("pre", { "class": "traceback", text: error.traceback })
        ]);
        errors.appendChild(details);
      });
    }
  }

  function draw() {
    var data = pending;
    pending = null;
    if (!data) return;
    drawQueues(data);
    drawChart(data.throughput);
    drawWorkers(data, data.at);
    drawRealtime(data.realtime);
    drawJobs(data.jobs, data.at);
    drawJob(data.job);
    body.setAttribute("data-updates", String(Number(body.getAttribute("data-updates") || 0) + 1));
  }

  function sendQuery() {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    var form = document.getElementById("job-filter");
    if (form) {
      socket.send(JSON.stringify({
        type: "query",
        state: form.elements.state.value,
        task: form.elements.task.value,
        search: form.elements.search.value
      }));
    }
    if (watched) socket.send(JSON.stringify({ type: "watch", id: watched }));
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + body.getAttribute("data-ws-path"));
    socket.onopen = function () {
      retryDelay = 500;
      setConn("live", "live");
      sendQuery();
    };
    socket.onmessage = function (event) {
      var data = JSON.parse(event.data);
      if (data.type === "update") {
        var first = pending === null;
        pending = data;
        if (first) window.requestAnimationFrame(draw);
      } else if (data.type === "error") {
        setConn("live", "live — " + data.error);
      }
    };
    socket.onclose = function (event) {
      if (event.code === 4403) {
        setConn("refused", "not allowed");
        return;
      }
      setConn("offline", "reconnecting…");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    };
  }

  document.querySelectorAll(".time").forEach(function (node) {
    node.textContent = when(Number(node.getAttribute("data-time")));
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
  var filter = document.getElementById("job-filter");
  if (filter) {
    filter.addEventListener("input", sendQuery);
    filter.addEventListener("submit", function (event) { event.preventDefault(); sendQuery(); });
  }
  connect();
})();
