// The page of `serve`: a text goes to POST ner (the API itself, nothing of its own), and comes back with
// each entity marked as displaCy marks it, label and probability in the mark. The label colours come
// from GET info, made by the same function as the colours of training/errors.html.
"use strict";

const byId = (id) => document.getElementById(id);
const NO_COLOR = "#ddd"; // displaCy's colour for a label it has none for
let colors = {};

function showError(message) {
  byId("error").textContent = message;
  byId("error").hidden = !message;
}

// FastAPI's own errors (e.g. 405) carry a list of objects in "detail"; the server's refusals one sentence
function errorText(answer, body) {
  const detail = body && body.detail;
  const why = typeof detail === "string" ? detail : detail ? JSON.stringify(detail) : answer.statusText;
  return `The server refused the text (${answer.status}): ${why}`;
}

function chip(label) {
  const tag = document.createElement("span");
  tag.textContent = label;
  tag.style.background = colors[label] || NO_COLOR;
  return tag;
}

async function loadInfo() {
  try {
    const info = await (await fetch("info")).json();
    colors = info.colors || {};
    byId("model").textContent = `${info.name} ${info.version} on ${info.device}`;
    byId("legend").replaceChildren(...info.labels.map(chip));
  } catch (err) {
    showError(`Could not read the model's labels from the server (${err.message}).`);
  }
}

function entityMark(chars, entity) {
  const mark = document.createElement("mark");
  mark.className = "entity";
  mark.style.background = colors[entity.label] || NO_COLOR;
  const tag = document.createElement("span");
  tag.className = "tag";
  tag.textContent = entity.label;
  if (typeof entity.score === "number") {
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = entity.score.toFixed(2);
    score.title = `probability ${entity.score}`;
    tag.append(score);
  }
  mark.append(chars.slice(entity.start, entity.end).join(""), tag);
  return mark;
}

// The API's offsets count Unicode code points (Python's str), JavaScript's strings UTF-16 units: slicing
// an array of code points keeps the marks in place after an emoji or a mathematical letter such as 𝛼.
function render(text, entities) {
  const chars = Array.from(text);
  const parts = [];
  let at = 0;
  for (const entity of entities) {
    parts.push(chars.slice(at, entity.start).join(""), entityMark(chars, entity));
    at = entity.end;
  }
  parts.push(chars.slice(at).join(""));
  byId("entities").replaceChildren(...parts);
  byId("entities").hidden = false;
  byId("summary").textContent = `${entities.length} ${entities.length === 1 ? "entity" : "entities"}`;
}

async function findEntities(text) {
  showError("");
  byId("submit").disabled = true;
  byId("summary").textContent = "…";
  try {
    const answer = await fetch("ner", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text }),
    });
    const body = await answer.json().catch(() => null); // a proxy's error page is not JSON
    if (!answer.ok) {
      byId("summary").textContent = "";
      showError(errorText(answer, body));
      return;
    }
    render(text, body.entities);
  } catch (err) {
    byId("summary").textContent = "";
    showError(`No answer from the server (${err.message}).`);
  } finally {
    byId("submit").disabled = false;
  }
}

// ?text=... fills the box and runs at once: a link (or a headless browser) can show a text's entities
async function start() {
  await loadInfo(); // the colours first, so that the first marks have them
  byId("form").addEventListener("submit", (event) => {
    event.preventDefault();
    findEntities(byId("text").value);
  });
  const text = new URLSearchParams(location.search).get("text");
  if (text) {
    byId("text").value = text;
    findEntities(text);
  }
}

start();
