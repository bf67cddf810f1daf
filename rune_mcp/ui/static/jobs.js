// Live job table: the server sends the rendered table on each change (server-sent events).
(function () {
  "use strict";
  var box = document.getElementById("jobs");
  var live = document.getElementById("live");
  if (!box || !window.EventSource) {
    if (live) { live.textContent = "live updates need a browser with EventSource; reload to refresh"; }
    return;
  }
  var source = new EventSource(box.getAttribute("data-stream"));
  source.addEventListener("jobs", function (e) {
    var data = JSON.parse(e.data);
    box.innerHTML = data.html;  // rendered and escaped on the server
    live.textContent = "live · updated " + new Date().toLocaleTimeString();
    live.className = "live on";
  });
  source.onerror = function () {
    live.textContent = "reconnecting…";
    live.className = "live off";
  };
})();
