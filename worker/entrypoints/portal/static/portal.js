// Character counters ("47 tegn igjen") and focus on the error summary. The pages work without it.
(function () {
  "use strict";
  function counters() {
    document.querySelectorAll("[data-counter]").forEach(function (field) {
      var out = document.getElementById(field.getAttribute("data-counter"));
      var limit = parseInt(field.getAttribute("data-limit"), 10);
      var suffix = out.getAttribute("data-suffix");
      function update() {
        var left = limit - field.value.length;
        out.textContent = left + " " + suffix;
        out.classList.toggle("over", left < 0);
      }
      field.addEventListener("input", update);
      update();
    });
  }
  function focusErrors() {
    var summary = document.getElementById("error-summary");
    if (summary) { summary.focus(); }
  }
  document.addEventListener("DOMContentLoaded", function () { counters(); focusErrors(); });
})();
