// An export's page: ask the server for its progress every second and show it; when it is done, show the
// files (the page reloads once, so the links come from the server) or the reason it failed.
"use strict";
(function () {
  var box = document.getElementById("export-progress");
  if (!box || box.dataset.done === "1") { return; }
  var bar = document.getElementById("export-bar");
  var said = document.getElementById("export-said");
  function ask() {
    fetch(box.dataset.url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) { throw new Error("status " + r.status); }
      return r.json();
    }).then(function (p) {
      bar.value = p.percent;
      bar.textContent = p.percent + "%";
      said.textContent = "Clip " + p.clip + " of " + p.clips + ": " + p.percent + "% done.";
      if (p.done) { window.location.reload(); } else { window.setTimeout(ask, 1000); }
    }).catch(function () {
      said.textContent = "The progress could not be read. Reload the page to try again.";
    });
  }
  window.setTimeout(ask, 500);
})();
