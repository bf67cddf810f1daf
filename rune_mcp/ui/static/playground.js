// While the model answers (the first run also loads it), say so and keep the button from
// sending the question twice.
(function () {
  "use strict";
  var form = document.getElementById("playground");
  if (!form) { return; }
  form.addEventListener("submit", function () {
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    button.textContent = "Answering… (twice: with and without memory)";
  });
})();
