// The faces page while the clip's faces are being found: ask the server for the progress every second and
// show it; when it is done, reload (the list comes from the server).  Without this script the page reloads
// itself every few seconds (a refresh in <noscript>).
"use strict";
(function () {
  var box = document.getElementById("survey-progress");
  if (!box || box.dataset.done === "1") { return; }
  var bar = document.getElementById("survey-bar");
  var said = document.getElementById("survey-said");
  function ask() {
    fetch(box.dataset.url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) { throw new Error("status " + r.status); }
      return r.json();
    }).then(function (p) {
      bar.value = p.percent;
      bar.textContent = p.percent + "%";
      said.textContent = p.waiting ? "Waiting for the faces of another clip to be found first: one clip at a time."
                                   : p.percent + "% done.";
      if (p.done) { window.location.reload(); } else { window.setTimeout(ask, 1000); }
    }).catch(function () {
      said.textContent = "The progress could not be read. Reload the page to try again.";
    });
  }
  window.setTimeout(ask, 500);
})();
