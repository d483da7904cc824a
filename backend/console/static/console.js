// fleetward console: progressive enhancement only; every page works without this file.
// Adds quick-expiry buttons (+1 d, +7 d, +30 d) beside the expiry field of the add-entry form;
// they fill the datetime-local field in UTC, the zone the server reads it in.
"use strict";
(function () {
  function pad(n) { return String(n).padStart(2, "0"); }
  function utcLocal(d) {
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      "T" + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  }
  document.addEventListener("DOMContentLoaded", function () {
    var field = document.getElementById("entry-expires");
    if (!field) { return; }
    var after = field;
    [1, 7, 30].forEach(function (days) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "quick";
      b.textContent = "+" + days + " d";
      b.setAttribute("aria-label", "Expire in " + days + " days");
      b.addEventListener("click", function () {
        field.value = utcLocal(new Date(Date.now() + days * 86400000));
        field.focus();
      });
      after.insertAdjacentElement("afterend", b);
      after = b;
    });
  });
})();
