/*
 * headrace demo: a WebSocket that comes back.
 *
 * live.connect(path, handlers) opens ws(s)://<this host><path> and keeps it open: when the
 * connection drops (a server restart, a network blip) it tries again after 0.5 s, then 1, 2,
 * 4 and at most 8 s, with a little jitter so that a hundred pages do not knock at once. The
 * pill in the top bar (#conn) always says where things stand: connecting, live, or
 * reconnecting in N s (click it to try at once).
 *
 * handlers: open(socket), message(data) with the decoded JSON frame, close(event), and
 * url() returning the path to use for the next attempt (to pass state such as ?after=).
 * Frames are JSON both ways; send(obj) returns false when the socket is not open.
 *
 * User text is only ever put in the page with textContent (see live.el): no innerHTML.
 */
(function () {
  "use strict";

  var BACKOFF_FIRST_MS = 500;
  var BACKOFF_MAX_MS = 8000;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function timeOf(iso) {
    var when = new Date(iso);
    if (isNaN(when.getTime())) return "";
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function Pill(node) {
    this.node = node;
  }
  Pill.prototype.show = function (state, text, title) {
    if (!this.node) return;
    this.node.dataset.state = state;
    this.node.querySelector(".conn-text").textContent = text;
    this.node.title = title || "";
  };

  function LiveSocket(path, handlers) {
    this.path = path;
    this.handlers = handlers || {};
    this.socket = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.tickTimer = null;
    this.stopped = false;
    this.everOpened = false;
    this.pill = new Pill(document.getElementById("conn"));
    var self = this;
    if (this.pill.node) {
      this.pill.node.addEventListener("click", function () {
        if (self.retryTimer) self.retryNow();
      });
    }
    window.addEventListener("online", function () {
      if (self.retryTimer) self.retryNow();
    });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && self.retryTimer) self.retryNow();
    });
    window.addEventListener("pagehide", function () {
      self.stopped = true;
      self.clearTimers();
      if (self.socket) self.socket.close(1000, "page closed");
    });
    window.addEventListener("pageshow", function (event) {
      // Back from the back/forward cache: the old socket is gone, open a new one.
      if (event.persisted && self.stopped) {
        self.stopped = false;
        self.attempt = 0;
        self.open();
      }
    });
  }

  LiveSocket.prototype.url = function () {
    var path = this.handlers.url ? this.handlers.url() : this.path;
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + window.location.host + path;
  };

  LiveSocket.prototype.open = function () {
    var self = this;
    this.clearTimers();
    this.pill.show("connecting", this.everOpened ? "Reconnecting…" : "Connecting…");
    var socket = new WebSocket(this.url());
    this.socket = socket;
    socket.onopen = function () {
      self.attempt = 0;
      self.everOpened = true;
      self.pill.show("live", "Live", "Connected: updates arrive as they happen");
      if (self.handlers.open) self.handlers.open(self);
    };
    socket.onmessage = function (event) {
      var data;
      try {
        data = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (self.handlers.message) self.handlers.message(data);
    };
    socket.onclose = function (event) {
      if (self.socket !== socket) return;
      self.socket = null;
      if (self.handlers.close) self.handlers.close(event);
      if (!self.stopped) self.scheduleRetry();
    };
    return this;
  };

  LiveSocket.prototype.scheduleRetry = function () {
    var self = this;
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, this.attempt));
    var delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    var due = Date.now() + delay;
    var tick = function () {
      var left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      self.pill.show(
        "waiting",
        "Reconnecting in " + left + " s",
        "Connection lost; attempt " + self.attempt + ". Click to retry now."
      );
    };
    tick();
    this.tickTimer = window.setInterval(tick, 250);
    this.retryTimer = window.setTimeout(function () {
      self.open();
    }, delay);
  };

  LiveSocket.prototype.retryNow = function () {
    this.open();
  };

  LiveSocket.prototype.clearTimers = function () {
    if (this.retryTimer) window.clearTimeout(this.retryTimer);
    if (this.tickTimer) window.clearInterval(this.tickTimer);
    this.retryTimer = null;
    this.tickTimer = null;
  };

  LiveSocket.prototype.isOpen = function () {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  };

  LiveSocket.prototype.send = function (data) {
    if (!this.isOpen()) return false;
    this.socket.send(JSON.stringify(data));
    return true;
  };

  LiveSocket.prototype.reconnect = function () {
    // Close on purpose and open again at once (e.g. after picking another nickname).
    var old = this.socket;
    this.socket = null;
    if (old) old.close(1000, "reconnecting");
    this.attempt = 0;
    this.open();
  };

  window.live = {
    connect: function (path, handlers) {
      return new LiveSocket(path, handlers).open();
    },
    el: el,
    timeOf: timeOf,
  };
})();
