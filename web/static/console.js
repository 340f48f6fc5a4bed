// Automatic sign-out after the configured idle time (HIPAA 164.312(a)(2)(iii)): the server
// ends an idle session by itself; this only takes the screen away from an unattended desk.
(function () {
  "use strict";
  var body = document.body;
  var seconds = parseInt(body.getAttribute("data-idle-seconds") || "0", 10);
  if (!seconds) { return; }
  var last = Date.now();
  ["keydown", "mousedown", "touchstart"].forEach(function (name) {
    document.addEventListener(name, function () { last = Date.now(); }, { passive: true });
  });
  setInterval(function () {
    if (Date.now() - last < seconds * 1000) { return; }
    var form = document.querySelector("form.sign-out");
    if (form) { form.submit(); } else { window.location.assign("/sign-in"); }
  }, 1000);
})();
