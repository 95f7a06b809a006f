// Maps where a person marks a place: a click puts a point, the chosen radius is drawn around it, and the
// point goes into the form's fields (named by data-lat-field, data-lon-field, data-radius-field).  Every
// form with such a map also works without it: the place in words, or no place at all.
"use strict";
(function () {
  // With no tile server configured: squares with the latitude and longitude of their corner, so that a
  // point can be placed and read without any map imagery (and without asking any other site for it).
  function plainGrid() {
    var Grid = L.GridLayer.extend({
      createTile: function (coords) {
        var tile = document.createElement("canvas"), size = this.getTileSize();
        tile.width = size.x; tile.height = size.y;
        var ctx = tile.getContext("2d"), map = this._map;
        ctx.fillStyle = "#f4f4f0"; ctx.fillRect(0, 0, size.x, size.y);
        ctx.strokeStyle = "#b8b8b0"; ctx.strokeRect(0, 0, size.x, size.y);
        var corner = map.unproject(coords.scaleBy(size), coords.z);
        ctx.fillStyle = "#4a4a4a"; ctx.font = "11px sans-serif";
        ctx.fillText(corner.lat.toFixed(4) + ", " + corner.lng.toFixed(4), 4, 14);
        return tile;
      }
    });
    return new Grid();
  }
  document.querySelectorAll(".pick-map").forEach(function (el) {
    if (!window.L) { return; }
    var latField = document.getElementById(el.dataset.latField);
    var lonField = document.getElementById(el.dataset.lonField);
    var radiusField = document.getElementById(el.dataset.radiusField);
    var said = document.getElementById(el.dataset.statusId);
    var clear = document.getElementById(el.dataset.clearId);
    var start = [Number(el.dataset.lat || 51.5074), Number(el.dataset.lon || -0.1278)];
    // Without a tile server the map is a plain canvas: a point can still be placed, only not against streets.
    var map = L.map(el, { keyboard: true }).setView(start, el.dataset.tiles ? 13 : 5);
    el.bwvMap = map;  // for the page's own script to draw on (footage-tracks.js: the routes of clips found)
    if (el.dataset.tiles) {
      L.tileLayer(el.dataset.tiles, { maxZoom: 19, attribution: el.dataset.attribution || "" }).addTo(map);
    } else {
      plainGrid().addTo(map);
    }
    var marker = null, circle = null;
    function radius() { return Number(radiusField.value) || 200; }
    function show(lat, lon) {
      if (!marker) {
        marker = L.circleMarker([lat, lon], { radius: 7, color: "#0b3d91", weight: 3 }).addTo(map);
        circle = L.circle([lat, lon], { radius: radius(), color: "#0b3d91", weight: 2, fillOpacity: 0.1 }).addTo(map);
      } else {
        marker.setLatLng([lat, lon]); circle.setLatLng([lat, lon]); circle.setRadius(radius());
      }
      latField.value = lat.toFixed(6); lonField.value = lon.toFixed(6);
      if (said) { said.textContent = "A point is marked on the map, with " + radius() + " metres around it."; }
    }
    map.on("click", function (ev) { show(ev.latlng.lat, ev.latlng.lng); });
    radiusField.addEventListener("change", function () {
      if (marker) { show(Number(latField.value), Number(lonField.value)); }
    });
    if (clear) {
      clear.addEventListener("click", function () {
        if (marker) { map.removeLayer(marker); map.removeLayer(circle); marker = circle = null; }
        latField.value = ""; lonField.value = "";
        if (said) { said.textContent = "No point is marked on the map."; }
      });
    }
    if (latField.value && lonField.value) {
      show(Number(latField.value), Number(lonField.value));
      map.setView([Number(latField.value), Number(lonField.value)], el.dataset.tiles ? 16 : 12);
    }
  });
})();
