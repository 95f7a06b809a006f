// The footage search: the routes of the clips a place search found, drawn on the search map (after
// pick-map.js has made it), each read as JSON from this server's clip track address.
"use strict";
(function () {
  var el = document.getElementById("footage-map");
  if (!el || !el.bwvMap || !window.L) { return; }
  var ids = (el.getAttribute("data-result-tracks") || "").split(" ").filter(Boolean);
  if (!ids.length) { return; }
  var map = el.bwvMap;
  var said = document.getElementById("tracks-said");
  var bounds = null, drawn = 0, done = 0;
  function finished() {
    done += 1;
    if (done < ids.length) { return; }
    if (bounds) { map.fitBounds(bounds, { padding: [24, 24], maxZoom: 18 }); }
    el.setAttribute("data-tracks-drawn", String(drawn));
    if (said) {
      said.textContent = drawn + " route" + (drawn === 1 ? " is" : "s are") +
        " drawn on the map in red: where the camera went during each clip found.";
    }
  }
  ids.forEach(function (id) {
    fetch("/ui/clips/" + encodeURIComponent(id) + "/track.json",
          { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then(function (track) {
        var points = [];
        track.segments.forEach(function (s) { s.fixes.forEach(function (f) { points.push([f[1], f[2]]); }); });
        if (points.length) {
          var line = L.polyline(points, { color: "#a4000f", weight: 4, className: "bwv-result-track" }).addTo(map);
          line.bindTooltip("Clip " + id.substring(0, 8));
          bounds = bounds ? bounds.extend(line.getBounds()) : L.latLngBounds(line.getBounds().getSouthWest(),
                                                                            line.getBounds().getNorthEast());
          drawn += 1;
        }
      })
      .catch(function () { /* the table still lists the clip; its page has the route */ })
      .then(finished);
  });
})();
