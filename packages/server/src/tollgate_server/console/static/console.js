// Tollgate console: the copy button and the playground. No inline script anywhere (the CSP
// allows only this file); everything else on the pages works without JavaScript.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function setUpCopyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      const status = button.parentElement.querySelector(".copied");
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
      } catch (error) {
        // No clipboard API (plain http off loopback): fall back to the selection.
        document.execCommand("copy");
      }
      if (status) status.textContent = "Copied.";
    });
  }
}

async function accessToken() {
  const response = await fetch("/console/api/token", {
    method: "POST",
    headers: { "X-CSRF-Token": csrfToken() },
    credentials: "same-origin",
  });
  if (!response.ok) throw new Error("your session has ended; sign in again");
  return (await response.json()).access_token;
}

async function settledGeneration(id, token) {
  // The server settles a stopped stream when it notices the disconnect: poll briefly.
  for (let attempt = 0; attempt < 40; attempt += 1) {
    const response = await fetch(`/v1/generations/${id}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    if (response.ok) {
      const generation = await response.json();
      if (generation.settled_at) return generation;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return null;
}

function setUpPlayground() {
  const form = document.getElementById("playground");
  if (!form) return;
  const send = document.getElementById("pg-send");
  const stop = document.getElementById("pg-stop");
  const answer = document.getElementById("pg-answer");
  const status = document.getElementById("pg-status");
  const detail = document.getElementById("pg-link");
  let controller = null;

  function showGeneration(id) {
    detail.textContent = "";
    const anchor = document.createElement("a");
    anchor.href = `/console/generations/${id}`;
    anchor.textContent = "This generation's details";
    detail.appendChild(anchor);
    detail.classList.remove("hidden");
  }

  stop.addEventListener("click", () => {
    if (controller) controller.abort();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    answer.textContent = "";
    detail.classList.add("hidden");
    status.textContent = "Sending…";
    send.disabled = true;
    stop.disabled = false;
    controller = new AbortController();
    let token = null;
    let generationId = null;
    let finished = false;
    try {
      token = await accessToken();
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({
          model: form.elements.model.value,
          messages: [{ role: "user", content: form.elements.prompt.value }],
          stream: true,
        }),
        signal: controller.signal,
      });
      generationId = response.headers.get("X-Tollgate-Generation-Id");
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error((body.error && body.error.message) || `status ${response.status}`);
      }
      status.textContent = "Streaming…";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const data = line.slice(6);
            if (data === "[DONE]") continue;
            const chunk = JSON.parse(data);
            if (chunk.error) throw new Error(chunk.error.message);
            for (const choice of chunk.choices || []) {
              if (choice.delta && choice.delta.content) answer.textContent += choice.delta.content;
            }
            if (chunk.usage) {
              finished = true;
              status.textContent =
                `Done: ${chunk.usage.prompt_tokens} tokens in, ` +
                `${chunk.usage.completion_tokens} out, cost ${chunk.usage.cost} credits.`;
            }
          }
        }
      }
      if (!finished) status.textContent = "The stream ended without its usage.";
    } catch (error) {
      if (error.name === "AbortError") {
        status.textContent = "Stopped. Settling the partial charge…";
        const generation = generationId ? await settledGeneration(generationId, token) : null;
        status.textContent = generation
          ? `Stopped: ${generation.output_tokens} tokens out, charged ${generation.cost} credits.`
          : "Stopped.";
      } else {
        status.textContent = `Failed: ${error.message}`;
      }
    } finally {
      if (generationId) showGeneration(generationId);
      send.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpCopyButtons();
  setUpPlayground();
});
