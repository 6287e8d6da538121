// Refreshes the live part of a page (<main data-refresh="N">) every N seconds by fetching the
// page again and swapping <main>; pauses while the tab is hidden or a form field has focus.
// The pages work without it: reload to see new numbers.
(function () {
  "use strict";
  var main = document.getElementById("live");
  if (!main || !main.dataset.refresh) { return; }
  var seconds = Math.max(1, parseInt(main.dataset.refresh, 10) || 5);
  var busy = false;
  function refresh() {
    if (busy || document.hidden) { return; }
    var active = document.activeElement;
    if (active && main.contains(active) && /INPUT|SELECT|TEXTAREA/.test(active.tagName)) { return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Refresh": "1" } })
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh) { main.innerHTML = fresh.innerHTML; }
      })
      .catch(function () { /* keep what is shown; its "measured" time says how old it is */ })
      .then(function () { busy = false; });
  }
  window.setInterval(refresh, seconds * 1000);
}());
