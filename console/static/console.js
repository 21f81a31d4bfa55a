// The console's only script: it polls the rollout page's status at most
// once a second while the page is visible and the rollout is not done, and
// writes the numbers with textContent (never as HTML).
"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live || !live.dataset.statusUrl) { return; }
  var url = live.dataset.statusUrl;
  var done = live.dataset.done === "true";
  var timer = null;
  var fmt = new Intl.NumberFormat("en-GB");

  function eta(s) {
    if (s === undefined || s === null) { return "—"; }
    s = Math.round(s);
    if (s === 0) { return "0s"; }
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h" : "") + (h || m ? m + "m" : "") + r + "s";
  }
  function rate(v) { return v > 0 ? v.toFixed(2) : "0"; }
  function set(field, text) {
    var els = live.querySelectorAll('[data-field="' + field + '"]');
    for (var i = 0; i < els.length; i++) { els[i].textContent = text; }
  }
  function show(st) {
    ["total", "succeeded", "failed", "pending", "retrying", "cancelled"].forEach(function (k) { set(k, fmt.format(st[k] || 0)); });
    set("rate_per_second", rate(st.rate_per_second));
    set("eta_seconds", eta(st.eta_seconds));
    set("fleet_rate", rate(st.fleet_rate));
    set("breaker", st.breaker || "closed");
    set("queue_paused", st.queue_paused ? "paused" : "running");
    var state = live.querySelector('[data-field="state"]');
    if (state) { state.textContent = st.state; state.className = "state state-" + st.state; }
    var bar = document.getElementById("progress");
    if (bar) { bar.max = st.total || 1; bar.value = st.finished || 0; }
    done = !!st.done;
    live.dataset.done = String(done);
    if (done) { document.getElementById("live-note").textContent = "Finished: counts no longer change."; }
  }
  function schedule() {
    clearTimeout(timer);
    if (!done && !document.hidden) { timer = setTimeout(poll, 1000); }
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("status " + r.status); } return r.json(); })
      .then(show)
      .catch(function (e) { document.getElementById("live-note").textContent = "Live update failed (" + e.message + "); retrying."; })
      .then(schedule);
  }
  document.addEventListener("visibilitychange", schedule);
  schedule();
})();
