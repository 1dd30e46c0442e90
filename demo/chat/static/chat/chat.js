/* headrace demo: the chat room page. Talks to /ws/chat/<room>/ (chat/consumers.py). */
(function () {
  "use strict";

  var root = document.getElementById("chat");
  var log = document.getElementById("log");
  var composer = document.getElementById("composer");
  var input = document.getElementById("message");
  var sendButton = document.getElementById("send");
  var hint = document.getElementById("hint");
  var nickForm = document.getElementById("nick-form");
  var nickInput = document.getElementById("nick");
  var me = document.getElementById("me");
  var meName = document.getElementById("me-name");
  var rename = document.getElementById("rename");

  var NICK_KEY = "headrace-demo:nickname";
  var signedInAs = root.dataset.user;
  var myName = signedInAs || "";
  var seen = new Set();
  var socket = null;
  var hintTimer = null;

  function showHint(text, isError) {
    hint.textContent = text;
    hint.classList.toggle("error", Boolean(isError));
    if (hintTimer) window.clearTimeout(hintTimer);
    hintTimer = window.setTimeout(function () {
      hint.textContent = "";
    }, 5000);
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function append(node) {
    var stick = nearBottom();
    var empty = log.querySelector(".empty");
    if (empty) empty.remove();
    log.appendChild(node);
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function hue(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) % 360;
    return h;
  }

  function renderMessage(m) {
    if (seen.has(m.id)) return;
    seen.add(m.id);
    var item = live.el("li", "msg" + (m.author === myName ? " mine" : ""));
    item.dataset.id = m.id;
    var avatar = live.el("span", "avatar", (m.author || "?").charAt(0).toUpperCase());
    avatar.style.setProperty("--hue", hue(m.author || ""));
    avatar.setAttribute("aria-hidden", "true");
    var body = live.el("div", "msg-body");
    var meta = live.el("div", "msg-meta");
    meta.appendChild(live.el("span", "msg-author", m.author));
    if (!m.authenticated) meta.appendChild(live.el("span", "badge", "guest"));
    var time = live.el("time", "msg-time", live.timeOf(m.sent));
    time.dateTime = m.sent;
    meta.appendChild(time);
    body.appendChild(meta);
    body.appendChild(live.el("p", "msg-text", m.text));
    item.appendChild(avatar);
    item.appendChild(body);
    append(item);
  }

  function renderNotice(text) {
    append(live.el("li", "notice", text));
  }

  function setComposer(enabled) {
    input.disabled = !enabled;
    sendButton.disabled = !enabled;
    if (enabled && document.activeElement === document.body) input.focus();
  }

  function socketPath() {
    var path = root.dataset.socket;
    if (!signedInAs) path += "?name=" + encodeURIComponent(myName);
    return path;
  }

  function onMessage(data) {
    switch (data.type) {
      case "welcome":
        myName = data.name;
        meName.textContent = data.name;
        me.hidden = false;
        break;
      case "history":
        data.messages.forEach(renderMessage);
        if (!log.children.length) {
          log.appendChild(live.el("li", "empty", "No messages yet. Say hello!"));
        }
        break;
      case "message":
        renderMessage(data);
        break;
      case "notice":
        renderNotice(data.text);
        break;
      case "error":
        showHint(data.error, true);
        break;
    }
  }

  function connect() {
    if (socket) {
      socket.reconnect();
      return;
    }
    socket = live.connect(root.dataset.socket, {
      url: socketPath,
      open: function () {
        setComposer(true);
      },
      close: function () {
        setComposer(false);
      },
      message: onMessage,
    });
  }

  function askNickname() {
    nickForm.hidden = false;
    nickInput.value = myName;
    nickInput.focus();
  }

  nickForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var name = nickInput.value.trim();
    if (!name) return;
    myName = name;
    window.localStorage.setItem(NICK_KEY, name);
    nickForm.hidden = true;
    connect();
  });

  rename.addEventListener("click", askNickname);

  composer.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    if (socket && socket.send({ message: text })) {
      input.value = "";
    } else {
      showHint("Not connected: your message was not sent.", true);
    }
  });

  if (signedInAs) {
    connect();
  } else {
    rename.hidden = false;
    myName = window.localStorage.getItem(NICK_KEY) || "";
    if (myName) connect();
    else askNickname();
  }
})();
