// A page of work running on the server (an export, finding a clip's faces): ask the server for the
// progress every second and show it, the bar and the sentence the server wrote; when the work is done,
// reload once, so what follows (the files, the list of faces, or why it failed) comes from the server.
// Without this script such a page reloads itself (a refresh in <noscript>) or is reloaded by hand.
"use strict";
(function () {
  var box = document.querySelector("[data-progress-url]");
  if (!box || box.dataset.done === "1") { return; }
  var bar = box.querySelector("progress");
  var said = box.querySelector("[aria-live]");
  function ask() {
    fetch(box.dataset.progressUrl, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) { throw new Error("status " + r.status); }
      return r.json();
    }).then(function (p) {
      bar.value = p.percent;
      bar.textContent = p.percent + "%";
      said.textContent = p.said;
      if (p.done) { window.location.reload(); } else { window.setTimeout(ask, 1000); }
    }).catch(function () {
      said.textContent = "The progress could not be read. Reload the page to try again.";
    });
  }
  window.setTimeout(ask, 500);
})();
