// Corral's dashboard: the only script. It keeps an open page up to date: when the page's
// event stream (body[data-events]) says something changed, it fetches the same page again
// and swaps in each element marked data-live. At most one stream and one fetch at a time.
(function () {
  "use strict";
  var source = document.body.getAttribute("data-events");
  if (!source || !window.EventSource || !window.fetch) return;
  var busy = false, again = false, stream = null;

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    document.querySelectorAll("[data-live]").forEach(function (old) {
      var next = old.id && fresh.getElementById(old.id);
      // leave alone the part the keyboard is in, so focus is not lost mid-read
      if (next && !old.contains(document.activeElement)) old.replaceWith(next);
    });
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", redirect: "manual" })
      .then(function (r) {
        if (r.type === "opaqueredirect" || r.status === 401 || r.status === 403) {
          stream.close();  // logged out or refused: stop listening
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html) swap(html); })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  stream = new EventSource(source);
  stream.addEventListener("refresh", refresh);
  window.addEventListener("pagehide", function () { stream.close(); });
})();
