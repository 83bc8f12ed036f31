// Portside's web UI, a little enhanced: search as you type and copy buttons. Every page works
// without this file; it changes nothing the server did not render.
(function () {
  "use strict";

  // The search form's results are fetched again as the query or the order changes; the
  // address bar follows, so that a reload or a shared link shows the same list.
  function liveSearch(form) {
    var target = document.querySelector(form.getAttribute("data-live-search"));
    var timer = null;
    var latest = 0;
    if (!target || !window.fetch || !window.URLSearchParams) {
      return;
    }
    function update() {
      var query = new URLSearchParams(new FormData(form)).toString();
      var ticket = ++latest;
      fetch(form.action + "?" + query + "&partial=1", { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) {
            throw new Error(String(response.status));
          }
          return response.text();
        })
        .then(function (html) {
          if (ticket === latest) {
            target.innerHTML = html;
            history.replaceState(null, "", form.action + "?" + query);
          }
        })
        .catch(function () {
          // The form still works: submitting it loads the whole page.
        });
    }
    form.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(update, 200);
    });
    form.addEventListener("change", function (event) {
      if (event.target.tagName === "SELECT") {
        clearTimeout(timer);
        update();
      }
    });
  }

  function copyButton(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) {
      return; // stays hidden: the command can be selected and copied by hand
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent).then(function () {
        button.textContent = "Copied";
        setTimeout(function () {
          button.textContent = "Copy";
        }, 2000);
      });
    });
  }

  document.querySelectorAll("form[data-live-search]").forEach(liveSearch);
  document.querySelectorAll("button[data-copy]").forEach(copyButton);
})();
