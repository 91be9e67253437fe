// The page of `serve`: a text goes to POST ner (the API itself, nothing of its own), and comes back with
// each entity marked as displaCy marks it, label and probability in the mark, and listed in a table. The
// label colours, descriptions (tooltips) and the example text come from GET info, made by the same function
// as the colours of training/errors.html. Filters (minimum probability, labels) act on what is shown, in
// the page; Copy JSON and Download JSON give what is shown. Everything the user or the model wrote goes
// into the page as text (textContent, attributes), never as HTML.
"use strict";

const byId = (id) => document.getElementById(id);
const NO_COLOR = "#ddd"; // displaCy's colour for a label it has none for
let info = { labels: [], colors: {}, descriptions: {}, example: "" };
let shown = null; // {text, entities} of the last answer; null while none is on screen
let asked = 0; // the number of the latest request: an older answer arriving late is not shown

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

const color = (label) => info.colors[label] || NO_COLOR;
const describe = (label) => info.descriptions[label] || "";

function chip(label) {
  const tag = document.createElement("span");
  tag.className = "chip";
  tag.textContent = label;
  tag.style.background = color(label);
  if (describe(label)) tag.title = describe(label);
  return tag;
}

function labelCheckbox(label) {
  const box = document.createElement("label");
  box.className = "inline";
  if (describe(label)) box.title = describe(label);
  const input = document.createElement("input");
  input.type = "checkbox";
  input.checked = true;
  input.value = label;
  input.addEventListener("change", showFiltered);
  box.append(input, chip(label));
  return box;
}

async function loadInfo() {
  try {
    const answer = await fetch("info");
    info = { ...info, ...(await answer.json()) };
    info.colors = info.colors || {};
    info.descriptions = info.descriptions || {};
    byId("model").textContent = `${info.name} ${info.version} on ${info.device}`;
    byId("legend").replaceChildren(...info.labels.map(chip));
    byId("label-filter").replaceChildren(...info.labels.map(labelCheckbox));
    if (info.example) byId("text").placeholder = info.example;
    byId("min-score-box").hidden = info.scores === false;
  } catch (err) {
    showError(`Could not read the model's labels from the server (${err.message}).`);
  }
}

// -- filters -------------------------------------------------------------------------------------------

function minScore() {
  return Number(byId("min-score").value);
}

function wantedLabels() {
  const boxes = byId("label-filter").querySelectorAll("input[type=checkbox]");
  const unchecked = new Set([...boxes].filter((box) => !box.checked).map((box) => box.value));
  return (label) => !unchecked.has(label); // a label /info did not list is shown
}

// an entity without a score (spaCy's own ner) passes the probability filter
function filtered(entities) {
  const wanted = wantedLabels();
  const least = minScore();
  return entities.filter((e) => wanted(e.label) && (typeof e.score !== "number" || e.score >= least));
}

// -- showing -------------------------------------------------------------------------------------------

function entityMark(chars, entity) {
  const mark = document.createElement("mark");
  mark.className = "entity";
  mark.style.background = color(entity.label);
  mark.dataset.label = entity.label; // drawn by CSS (::after): copying the text copies no label
  const tips = [entity.label, describe(entity.label)].filter(Boolean);
  if (typeof entity.score === "number") {
    mark.dataset.score = entity.score.toFixed(2);
    tips.push(`probability ${entity.score}`);
  }
  mark.title = tips.join(" · ");
  mark.textContent = chars.slice(entity.start, entity.end).join("");
  return mark;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function tableRow(entity) {
  const row = document.createElement("tr");
  const label = cell("");
  label.append(chip(entity.label));
  const score = typeof entity.score === "number" ? entity.score.toFixed(4) : "–";
  row.append(cell(entity.text), label, cell(score, "number"), cell(String(entity.start), "number"));
  row.append(cell(String(entity.end), "number"));
  return row;
}

// The API's offsets count Unicode code points (Python's str), JavaScript's strings UTF-16 units: slicing
// an array of code points keeps the marks in place after an emoji or a mathematical letter such as 𝛼.
function showFiltered() {
  if (!shown) return;
  byId("min-score-value").textContent = minScore().toFixed(2);
  const chars = Array.from(shown.text);
  const entities = filtered(shown.entities);
  const parts = [];
  let at = 0;
  for (const entity of entities) {
    parts.push(chars.slice(at, entity.start).join(""), entityMark(chars, entity));
    at = entity.end;
  }
  parts.push(chars.slice(at).join(""));
  byId("entities").replaceChildren(...parts);
  byId("table").tBodies[0].replaceChildren(...entities.map(tableRow));
  const all = shown.entities.length;
  const noun = all === 1 ? "entity" : "entities";
  byId("summary").textContent = entities.length === all ? `${all} ${noun}` : `${entities.length} of ${all} ${noun} shown`;
  byId("copied").textContent = "";
}

function clearResults() {
  shown = null;
  byId("results").hidden = true;
  byId("entities").replaceChildren();
  byId("table").tBodies[0].replaceChildren();
  byId("summary").textContent = "";
  byId("copied").textContent = "";
}

function showResults(text, entities) {
  shown = { text, entities };
  byId("results").hidden = false;
  showFiltered();
}

// -- export --------------------------------------------------------------------------------------------

function shownJson() {
  return JSON.stringify({ text: shown.text, entities: filtered(shown.entities) }, null, 2);
}

async function copyJson() {
  if (!shown) return;
  const json = shownJson();
  try {
    await navigator.clipboard.writeText(json); // a secure context only (https, localhost)
  } catch {
    const area = document.createElement("textarea"); // elsewhere (http://host:8000 on a LAN) the old way
    area.value = json;
    document.body.append(area);
    area.select();
    const done = document.execCommand("copy");
    area.remove();
    if (!done) {
      byId("copied").textContent = "The browser refused to copy: use Download JSON.";
      return;
    }
  }
  byId("copied").textContent = "Copied.";
}

function downloadJson() {
  if (!shown) return;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([shownJson()], { type: "application/json" }));
  link.download = "entities.json";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// -- asking the API ------------------------------------------------------------------------------------

async function findEntities(text) {
  clearResults(); // the previous text's entities never stand under a new text, an error or "…"
  showError("");
  if (!text.trim()) {
    showError("Type or paste a text first: there is nothing to look in.");
    return;
  }
  const mine = ++asked;
  byId("submit").disabled = true;
  byId("summary").textContent = "…";
  try {
    const answer = await fetch("ner", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text }),
    });
    const body = await answer.json().catch(() => null); // a proxy's error page is not JSON
    if (mine !== asked) return;
    if (!answer.ok) {
      clearResults();
      showError(errorText(answer, body));
      return;
    }
    showResults(text, body.entities);
  } catch (err) {
    if (mine !== asked) return;
    clearResults();
    showError(`No answer from the server (${err.message}).`);
  } finally {
    if (mine === asked) byId("submit").disabled = false;
  }
}

// ?text=... fills the box and runs at once: a link (or a headless browser) can show a text's entities
async function start() {
  await loadInfo(); // the colours first, so that the first marks have them
  byId("form").addEventListener("submit", (event) => {
    event.preventDefault();
    findEntities(byId("text").value);
  });
  // Ctrl+Enter (Cmd+Enter on a Mac) submits; Enter alone is a new line, as in any text box
  byId("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.isComposing) {
      event.preventDefault();
      byId("form").requestSubmit();
    }
  });
  byId("example").addEventListener("click", () => {
    byId("text").value = info.example || byId("text").placeholder;
    byId("form").requestSubmit();
  });
  byId("min-score").addEventListener("input", showFiltered);
  byId("copy-json").addEventListener("click", copyJson);
  byId("download-json").addEventListener("click", downloadJson);
  const text = new URLSearchParams(location.search).get("text");
  if (text) {
    byId("text").value = text;
    findEntities(text);
  }
}

start();
