// Re-runs the fairness audit and follows it: one POST, then the run's status every second until it ends.
// Without this script the form posts normally and the page shows the run's state.
(function () {
  "use strict";
  const form = document.getElementById("rerun");
  if (!form) { return; }
  const button = document.getElementById("rerun-button");
  const progress = document.getElementById("rerun-progress");
  const status = document.getElementById("rerun-status");
  const headers = { "Accept": "application/json" };

  function show(run) {
    if (run.state === "running") {
      const seconds = Math.round((Date.now() - Date.parse(run.started_at)) / 1000);
      status.textContent = "Running for " + Math.max(seconds, 0) + " s: scoring every customer again…";
      progress.hidden = false;
      button.disabled = true;
      window.setTimeout(poll, 1000);
    } else if (run.state === "succeeded") {
      status.textContent = "Done: loading the new audit…";
      window.location.reload();
    } else if (run.state === "failed") {
      status.textContent = "The re-run failed: " + run.reason + ". The previous audit stays.";
      progress.hidden = true;
      button.disabled = false;
    }
  }

  function failed(error) {
    status.textContent = "Could not reach the service: " + error.message;
    progress.hidden = true;
    button.disabled = false;
  }

  function poll() {
    fetch("/console/fairness/run", { headers: headers, credentials: "same-origin" })
      .then(function (response) { return response.json(); }).then(show).catch(failed);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    button.disabled = true;
    progress.hidden = false;
    status.textContent = "Starting the audit…";
    fetch(form.action, { method: "POST", headers: headers, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      }).then(show).catch(failed);
  });

  if (form.dataset.state === "running") { poll(); }
}());
