// The clip page: the clip's GNSS track on a Leaflet map, the camera's position moving with the video.
// The track is read as JSON from this server (same origin; CSP: no inline script, no other host).
// Each held segment says where in the video it starts (media_start_s) and when it was recorded
// (start_utc_us), so a moment of the video is a moment of UTC, and the position is interpolated
// between the two fixes around it.
"use strict";
(function () {
  var video = document.getElementById("clip-video");
  var mapEl = document.getElementById("clip-map");
  var positionText = document.getElementById("position");
  var problem = document.getElementById("video-problem");

  if (video && problem) {
    video.addEventListener("error", function () {
      problem.textContent = "The clip could not be played. Reload the page and try again; if it happens again, " +
        "tell your supervisor (the clip may have been deleted, or your session may have ended).";
      problem.hidden = false;
    });
  }
  // The first play streams the clip as the server unlocks it (it starts after the first part, but the
  // browser cannot seek in it yet); once the whole clip is ready, switch to the ready file, served by
  // range, at the same moment and in the same state (playing or paused), so seeking works.
  var seekNote = document.getElementById("video-seek");
  if (video && video.getAttribute("data-ready-url")) {
    var asked = false;
    var say = function (text) {
      if (seekNote) { seekNote.textContent = text; seekNote.hidden = false; }
    };
    var seekable = function () {
      return video.seekable.length > 0 && video.seekable.end(video.seekable.length - 1) > 0;
    };
    var switchTo = function (src) {
      var t = video.currentTime, paused = video.paused, ended = video.ended;
      video.addEventListener("loadedmetadata", function restore() {
        video.removeEventListener("loadedmetadata", restore);
        video.currentTime = ended ? video.duration : t;
        if (!paused && !ended) { video.play().catch(function () {}); }
      });
      video.setAttribute("data-switched", "true");
      video.src = src;
      video.load();
    };
    var waitForReady = function (tries) {
      fetch(video.getAttribute("data-ready-url"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 409) { throw new Error("failed"); }
          if (!r.ok) { throw new Error("the server answered " + r.status); }
          return r.json();
        })
        .then(function (state) {
          if (!state.ready) { waitForReady(tries); return; }  // the server waited; ask again
          if (!seekable()) { switchTo(state.src); }
          video.setAttribute("data-ready", "true");
          say("The whole clip is ready: you can move to any point in it.");
        })
        .catch(function (err) {
          if (err.message === "failed" || tries <= 0) { return; }  // the video's own error says what to do
          window.setTimeout(function () { waitForReady(tries - 1); }, 1000);
        });
    };
    video.addEventListener("playing", function () {
      if (asked) { return; }
      asked = true;
      if (!seekable()) { say("The clip plays while the rest of it is unlocked; you can move through it in a few seconds."); }
      waitForReady(5);
    });
  }

  if (!mapEl || !window.L) { return; }

  function clock(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var m = Math.floor(s / 60);
    s = s % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  var zone = mapEl.getAttribute("data-zone") || "UTC";
  function localText(us) {  // the force's local time, as the rest of the page shows it
    try {
      return new Date(us / 1000).toLocaleTimeString("en-GB", { timeZone: zone, hour12: false });
    } catch (e) {
      return new Date(us / 1000).toISOString().substring(11, 19) + " UTC";
    }
  }

  var map = L.map(mapEl, { keyboard: true, zoomControl: true });
  var tiles = mapEl.getAttribute("data-tiles");
  if (tiles) {
    L.tileLayer(tiles, { attribution: mapEl.getAttribute("data-attribution") || "", maxZoom: 19 }).addTo(map);
  } else {
    mapEl.classList.add("no-tiles");  // a plain projected canvas: the route and the dot, no street map
  }
  L.control.scale({ imperial: false }).addTo(map);

  fetch(mapEl.getAttribute("data-track-url"), { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (r) {
      if (!r.ok) { throw new Error("the server answered " + r.status); }
      return r.json();
    })
    .then(function (track) { draw(track); })
    .catch(function (err) {
      if (positionText) { positionText.textContent = "The map could not be loaded (" + err.message + ")."; }
    });

  function draw(track) {
    var fixes = [];
    track.segments.forEach(function (seg) {
      seg.fixes.forEach(function (f) { fixes.push(f); });
    });
    fixes.sort(function (a, b) { return a[0] - b[0]; });
    if (!fixes.length) { return; }
    var line = L.polyline(fixes.map(function (f) { return [f[1], f[2]]; }),
                          { color: "#0b3d91", weight: 4, interactive: false }).addTo(map);
    L.circleMarker([fixes[0][1], fixes[0][2]], { radius: 5, color: "#1b1b1b", fillColor: "#ffffff",
                                                 fillOpacity: 1, interactive: false }).addTo(map);
    var marker = L.circleMarker([fixes[0][1], fixes[0][2]], {
      radius: 9, color: "#1b1b1b", weight: 2, fillColor: "#ffbf47", fillOpacity: 1, interactive: false,
      className: "bwv-position" }).addTo(map);
    var bounds = line.getBounds();
    if (bounds.getNorthEast().equals(bounds.getSouthWest())) {
      map.setView(bounds.getCenter(), 17);
    } else {
      map.fitBounds(bounds, { padding: [24, 24], maxZoom: 18 });
    }
    mapEl.setAttribute("data-fixes", String(fixes.length));

    // Media time (s) -> UTC (µs), through the segment that time falls in.
    function utcAt(t) {
      var seg = track.segments[0];
      track.segments.forEach(function (s) { if (s.media_start_s <= t) { seg = s; } });
      return seg.start_utc_us + (t - seg.media_start_s) * 1e6;
    }

    function positionAt(us) {
      if (us <= fixes[0][0]) { return [fixes[0][1], fixes[0][2]]; }
      var last = fixes[fixes.length - 1];
      if (us >= last[0]) { return [last[1], last[2]]; }
      var lo = 0, hi = fixes.length - 1;
      while (hi - lo > 1) {  // the two fixes around `us`
        var mid = (lo + hi) >> 1;
        if (fixes[mid][0] <= us) { lo = mid; } else { hi = mid; }
      }
      var a = fixes[lo], b = fixes[hi];
      var k = b[0] === a[0] ? 0 : (us - a[0]) / (b[0] - a[0]);
      return [a[1] + (b[1] - a[1]) * k, a[2] + (b[2] - a[2]) * k];
    }

    var shown = "";
    function follow() {
      var t = video ? video.currentTime || 0 : 0;
      var us = utcAt(t);
      var p = positionAt(us);
      marker.setLatLng(p);
      mapEl.setAttribute("data-lat", p[0].toFixed(6));
      mapEl.setAttribute("data-lon", p[1].toFixed(6));
      var text = "At " + clock(t) + " into the clip (" + localText(us) + ") the camera was at " +
        p[0].toFixed(5) + ", " + p[1].toFixed(5) + ".";
      if (positionText && text !== shown) { positionText.textContent = text; shown = text; }
    }

    if (video) {
      var frame = null;
      var tick = function () { follow(); frame = video.paused ? null : window.requestAnimationFrame(tick); };
      video.addEventListener("play", function () { if (frame === null) { frame = window.requestAnimationFrame(tick); } });
      ["timeupdate", "seeked", "loadedmetadata", "pause", "ended"].forEach(function (name) {
        video.addEventListener(name, follow);
      });
    }
    follow();
  }
})();
