/* headrace demo: the live blog page. Listens on /ws/blog/ (blog/consumers.py).
 *
 * The form is sent with fetch; the new post is NOT added from the response but arrives like
 * everyone else's, through post_save -> group_send -> the WebSocket.
 */
(function () {
  "use strict";

  var list = document.getElementById("posts");
  var noPosts = document.getElementById("no-posts");
  var form = document.getElementById("post-form");
  var hint = document.getElementById("hint");
  var publish = document.getElementById("publish");

  var newest = 0;
  Array.prototype.forEach.call(list.children, function (item) {
    newest = Math.max(newest, Number(item.dataset.id) || 0);
  });
  Array.prototype.forEach.call(list.querySelectorAll("time[datetime]"), function (time) {
    time.textContent = live.timeOf(time.dateTime) || time.textContent;
  });

  function fill(item, post) {
    item.textContent = "";
    item.appendChild(live.el("h2", "post-title", post.title));
    var meta = live.el("p", "post-meta");
    meta.appendChild(live.el("span", "post-author", post.author));
    meta.appendChild(document.createTextNode(" · "));
    var time = live.el("time", null, live.timeOf(post.published));
    time.dateTime = post.published;
    meta.appendChild(time);
    item.appendChild(meta);
    item.appendChild(live.el("p", "post-body", post.body));
  }

  function show(post) {
    var item = list.querySelector('li[data-id="' + Number(post.id) + '"]');
    if (item) {
      fill(item, post); // edited
      return;
    }
    item = live.el("li", "post arrived");
    item.dataset.id = post.id;
    fill(item, post);
    // Keep newest first even if a catch-up delivers several at once.
    var before = null;
    for (var i = 0; i < list.children.length; i++) {
      if (Number(list.children[i].dataset.id) < post.id) {
        before = list.children[i];
        break;
      }
    }
    list.insertBefore(item, before);
    newest = Math.max(newest, post.id);
    noPosts.hidden = true;
  }

  live.connect(list.dataset.socket, {
    url: function () {
      return list.dataset.socket + "?after=" + newest;
    },
    message: function (data) {
      if (data.type === "post") show(data.post);
      if (data.type === "delete") {
        var gone = list.querySelector('li[data-id="' + Number(data.id) + '"]');
        if (gone) gone.remove();
        noPosts.hidden = list.children.length > 0;
      }
    },
  });

  function say(text, isError) {
    hint.textContent = text;
    hint.classList.toggle("error", Boolean(isError));
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    publish.disabled = true;
    say("Publishing…");
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.json().then(function (body) {
          if (response.status === 201) {
            form.reset();
            say("Published: every open blog page has it now.");
            return;
          }
          var errors = (body && body.errors) || {};
          var lines = [];
          Object.keys(errors).forEach(function (field) {
            errors[field].forEach(function (e) {
              lines.push((field === "__all__" ? "" : field + ": ") + e.message);
            });
          });
          say(lines.join(" ") || "The post was not accepted.", true);
        });
      })
      .catch(function () {
        say("Could not reach the server; try again.", true);
      })
      .finally(function () {
        publish.disabled = false;
      });
  });
})();
