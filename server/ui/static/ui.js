// OpenBWV staff web application: behaviour shared by every page (no inline script anywhere: CSP).
"use strict";
(function () {
  // Put keyboard focus on the page's main error, so a screen reader announces it at once.
  var alert = document.querySelector(".alert.error[role=alert]");
  if (alert) { alert.setAttribute("tabindex", "-1"); alert.focus(); }
  // Buttons that need a second thought ask for it (data-confirm="text").
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); }
    });
  });
})();
