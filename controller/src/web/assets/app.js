// Worker web UI: the few live parts of server-rendered pages. Plain JS, no
// dependencies, no build step. Everything inserted into a page is either
// text (textContent) or an HTML fragment the controller rendered and escaped.
"use strict";

(function () {
  // Forms with data-confirm ask first; a submit button's own data-confirm
  // wins (one form, several actions). "{checked}" in the text is replaced
  // by the number of checked id boxes of the form (none: nothing to do).
  document.addEventListener("submit", function (e) {
    var form = e.target;
    var by = e.submitter;
    var text = (by && by.getAttribute && by.getAttribute("data-confirm")) ||
      (form.getAttribute && form.getAttribute("data-confirm"));
    if (text && text.indexOf("{checked}") !== -1) {
      var n = form.querySelectorAll('input[type=checkbox][name="id"]:checked').length;
      if (n === 0) {
        e.preventDefault();
        window.alert("Select at least one run first.");
        return;
      }
      text = text.replace("{checked}", String(n));
    }
    if (text && !window.confirm(text)) e.preventDefault();
  });

  // A checkbox with data-select-all checks every box named by its value in
  // its form.
  document.addEventListener("change", function (e) {
    var box = e.target;
    if (!box.hasAttribute || !box.hasAttribute("data-select-all")) return;
    var name = box.getAttribute("data-select-all");
    var form = box.form || document;
    form.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (b) {
      b.checked = box.checked;
    });
  });

  // Schedule preview: a container with data-preview="URL" is refreshed with
  // the fragment URL?name=value... of the inputs with data-preview-input, as
  // the user types (debounced). The fragment says whether the cron is valid.
  function setupPreview(box) {
    var url = box.getAttribute("data-preview");
    var form = box.closest("form") || document;
    var inputs = form.querySelectorAll("[data-preview-input]");
    var timer = null;
    var seq = 0;
    function refresh() {
      var params = new URLSearchParams();
      inputs.forEach(function (i) { params.set(i.name, i.value); });
      var mine = ++seq;
      fetch(url + "?" + params.toString(), { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
        .then(function (r) { return r.text().then(function (t) { return { ok: r.ok, text: t }; }); })
        .then(function (r) {
          if (mine !== seq) return;
          box.innerHTML = r.text;
          var invalid = box.querySelector("[data-invalid]") !== null;
          inputs.forEach(function (i) {
            if (i.name === "cron") i.setAttribute("aria-invalid", invalid ? "true" : "false");
          });
        })
        .catch(function () {});
    }
    inputs.forEach(function (i) {
      i.addEventListener("input", function () {
        clearTimeout(timer);
        timer = setTimeout(refresh, 250);
      });
      i.addEventListener("change", refresh);
    });
  }

  // Live output: <pre data-follow="URL"> appends what the server-sent
  // events carry: "attempt" (a heading line), "chunk" (output text),
  // "attempt_end" (a closing line) and "end" (the run is over: the page
  // reloads to show its final state).
  function setupFollow(pre) {
    var url = pre.getAttribute("data-follow");
    var status = document.querySelector("[data-follow-status]");
    var source = new EventSource(url);
    function atBottom() {
      return pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    }
    function append(text, cls) {
      var stick = atBottom();
      var span = document.createElement("span");
      if (cls) span.className = cls;
      span.textContent = text;
      pre.appendChild(span);
      if (stick) pre.scrollTop = pre.scrollHeight;
    }
    var started = false;
    function clearOnce() {
      if (!started) { pre.textContent = ""; started = true; }
    }
    source.addEventListener("attempt", function (e) { clearOnce(); append(e.data + "\n", "log-meta"); });
    source.addEventListener("chunk", function (e) { clearOnce(); append(JSON.parse(e.data)); });
    source.addEventListener("attempt_end", function (e) { append(e.data + "\n", "log-meta"); });
    source.addEventListener("end", function (e) {
      source.close();
      append(e.data + "\n", "log-meta");
      if (status) status.textContent = e.data;
      if (pre.hasAttribute("data-reload-on-end")) setTimeout(function () { window.location.reload(); }, 800);
    });
    source.addEventListener("failure", function (e) {
      source.close();
      append(e.data + "\n", "log-meta");
    });
    if (status) status.textContent = "following live output…";
  }

  // Live counters: an element with data-live="URL" receives "counters"
  // events (a JSON object); every [data-counter=KEY] inside shows its value.
  function setupCounters(box) {
    var source = new EventSource(box.getAttribute("data-live"));
    source.addEventListener("counters", function (e) {
      var values = JSON.parse(e.data);
      box.querySelectorAll("[data-counter]").forEach(function (el) {
        var key = el.getAttribute("data-counter");
        if (Object.prototype.hasOwnProperty.call(values, key)) el.textContent = String(values[key]);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-preview]").forEach(setupPreview);
    document.querySelectorAll("pre[data-follow]").forEach(setupFollow);
    document.querySelectorAll("[data-live]").forEach(setupCounters);
  });
})();
