// Progressive enhancement of the page; everything works without it (forms post, pages refresh).
// It keeps the form in step with the job panel htmx polls: disabled the moment a generation is
// sent and for as long as the panel says the job is active, with a button that says why.
"use strict";

(function () {
  const SENDING_LABEL = "Sending…";
  const IDLE_LABEL = "Generate";

  function composer() {
    const form = document.getElementById("composer");
    if (!form) return null;
    return {
      form: form,
      fields: form.querySelector("#composer-fields"),
      button: form.querySelector("#generate-button"),
      label: form.querySelector(".generate-label"),
      offline: form.querySelector("#composer-offline"),
    };
  }

  function setComposerBusy(busy, text) {
    const parts = composer();
    if (!parts) return;
    parts.fields.disabled = busy;
    parts.form.setAttribute("aria-busy", busy ? "true" : "false");
    parts.label.textContent = busy ? text : IDLE_LABEL;
  }

  function activeJob() {
    const job = document.getElementById("job");
    return job && job.dataset.active === "true" ? job : null;
  }

  // Screen readers hear the job's state when it changes, not on every poll.
  function announce() {
    const job = document.getElementById("job");
    const announcer = document.getElementById("announcer");
    const text = job && job.dataset.announce;
    if (announcer && text && announcer.textContent !== text) announcer.textContent = text;
  }

  // Disabling the focused Generate button, or removing the Cancel button, drops keyboard focus
  // to the page itself; when the job ends, pick it up again at the result's first action.
  let jobWasActive = false;

  function focusResultIfFocusWasLost() {
    if (document.activeElement && document.activeElement !== document.body) return;
    const firstAction = document.querySelector("#job .actions .button");
    if (firstAction) firstAction.focus();
  }

  function syncComposerWithJob() {
    const job = activeJob();
    setComposerBusy(Boolean(job), job ? job.dataset.busyLabel : IDLE_LABEL);
    if (!job) holdButtonForCountdowns();
    if (jobWasActive && !job) focusResultIfFocusWasLost();
    jobWasActive = Boolean(job);
    announce();
  }

  // --- countdowns: "generate again in 42 s" after a rate limit -----------------------------

  function durationText(seconds) {
    const hours = Math.floor(seconds / 3600);
    const minutes = Math.floor((seconds % 3600) / 60);
    const secs = seconds % 60;
    if (hours) return hours + " h " + minutes + " min";
    if (minutes) return minutes + " min " + secs + " s";
    return secs + " s";
  }

  function remainingSeconds(element) {
    return Math.max(0, Math.ceil((Number(element.dataset.deadline) - Date.now()) / 1000));
  }

  function runningCountdowns() {
    return Array.from(document.querySelectorAll("[data-countdown]")).filter(function (element) {
      return remainingSeconds(element) > 0;
    });
  }

  function holdButtonForCountdowns() {
    const parts = composer();
    if (parts && !activeJob()) parts.button.disabled = runningCountdowns().length > 0;
  }

  function startCountdowns() {
    document.querySelectorAll("[data-countdown]:not([data-deadline])").forEach(function (element) {
      // A deadline, not a tick count: background tabs run timers late.
      element.dataset.deadline = String(Date.now() + Number(element.dataset.countdown) * 1000);
    });
    holdButtonForCountdowns();
  }

  function tickCountdowns() {
    document.querySelectorAll("[data-deadline]").forEach(function (element) {
      const seconds = remainingSeconds(element);
      element.textContent = seconds > 0 ? durationText(seconds) : "a moment: go ahead";
    });
    holdButtonForCountdowns();
  }

  // --- size presets fill in width and height; typing a size picks "Custom" -------------------

  function onSizeInput(event) {
    const target = event.target;
    const form = target.form;
    if (!form || form.id !== "composer") return;
    const size = form.elements.namedItem("size");
    if (target === size && size.value !== "custom") {
      const parts = size.value.split("x");
      form.elements.namedItem("width").value = parts[0];
      form.elements.namedItem("height").value = parts[1];
    } else if ((target.name === "width" || target.name === "height") && size) {
      size.value = "custom";
    }
  }

  // --- choosing a model fills in its defaults and bounds (the server checks them again) --------

  function onModelChange(event) {
    const select = event.target;
    if (!select.form || select.form.id !== "composer" || select.name !== "model") return;
    const option = select.selectedOptions[0];
    if (!option || !option.dataset.defaults) return;
    const defaults = JSON.parse(option.dataset.defaults);
    const ranges = JSON.parse(option.dataset.ranges);
    Object.keys(ranges).forEach(function (name) {
      const input = select.form.elements.namedItem(name);
      if (!input || input.type !== "number") return;
      input.min = ranges[name][0];
      input.max = ranges[name][1];
      if (name in defaults) input.value = defaults[name];
    });
    const size = select.form.elements.namedItem("size");
    const preset = defaults.width + "x" + defaults.height;
    if (size) size.value = Array.from(size.options).some((o) => o.value === preset) ? preset : "custom";
  }

  function isGenerateRequest(event) {
    return event.detail.elt instanceof Element && event.detail.elt.matches("[data-generates]");
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (!isGenerateRequest(event)) return;
    // htmx has already read the form's values, so disabling its fields cannot empty the request.
    const parts = composer();
    if (parts && parts.offline) parts.offline.hidden = true;
    setComposerBusy(true, SENDING_LABEL);
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    if (isGenerateRequest(event) && !event.detail.successful) syncComposerWithJob();
  });

  function showRequestFailed(event) {
    const parts = composer();
    if (parts && parts.offline && isGenerateRequest(event)) parts.offline.hidden = false;
  }
  document.addEventListener("htmx:sendError", showRequestFailed);
  document.addEventListener("htmx:responseError", showRequestFailed);

  document.addEventListener("htmx:afterSettle", function (event) {
    startCountdowns();
    syncComposerWithJob();
  });

  // --- the job's event stream: live progress and previews (htmx's SSE extension) -------------
  // While the stream is open it says everything a poll would, sooner: polls are skipped. When it
  // ends with the job, the panel is fetched once to show the result.

  const TERMINAL_EVENTS = ["completed", "failed", "cancelled"];

  function streamOpen(job) {
    return job.dataset.streaming === "true";
  }

  function showProgress(job, progress) {
    const state = job.querySelector(".job-state");
    if (state) {
      state.textContent = "Generating · step ";
      const step = document.createElement("strong");
      step.textContent = String(progress.step);
      state.append(step, " of " + progress.total);
    }
    const meter = job.querySelector(".job-progress");
    if (meter) {
      meter.max = progress.total;
      meter.value = progress.step;
      meter.textContent = "step " + progress.step + " of " + progress.total;
      meter.setAttribute("aria-label", "Generation progress");
    }
    const preview = job.querySelector(".frame-preview");
    if (preview && progress.preview_url) {
      preview.src = progress.preview_url;
      preview.hidden = false;
    }
    // As the panel's own render says it (jobs/views.py _busy_label and _announcement).
    job.dataset.busyLabel = "Generating · step " + progress.step + " of " + progress.total;
    job.dataset.announce = "Generating your image.";
    syncComposerWithJob();
  }

  document.addEventListener("htmx:sseOpen", function (event) {
    const job = event.target;
    const source = event.detail.source;
    if (!(job instanceof Element) || job.id !== "job" || source.imagegenListening) return;
    source.imagegenListening = true;
    job.dataset.streaming = "true";
    source.addEventListener("progress", function (message) {
      showProgress(job, JSON.parse(message.data));
    });
    TERMINAL_EVENTS.forEach(function (name) {
      source.addEventListener(name, function () {
        source.close();
        job.dataset.streaming = "false";
        htmx.ajax("GET", job.getAttribute("hx-get"), { source: job, target: job, swap: "outerHTML" });
      });
    });
  });

  document.addEventListener("htmx:sseError", function (event) {
    if (event.target instanceof Element && event.target.id === "job") event.target.dataset.streaming = "false";
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    const job = event.detail.elt;
    if (job instanceof Element && job.id === "job" && streamOpen(job)) event.preventDefault();
  });

  document.addEventListener("input", onSizeInput);
  document.addEventListener("change", onSizeInput);
  document.addEventListener("change", onModelChange);

  function start() {
    startCountdowns();
    syncComposerWithJob();
    window.setInterval(tickCountdowns, 1000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
