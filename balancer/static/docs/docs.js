// Renders the balancer's own API documents (openapi.json, asyncapi.json) as a
// readable page: operations, parameters, bodies, responses, WebSocket
// messages. No third-party code and nothing from another origin: it must work
// on a closed network. Text goes in with textContent, never as HTML.
"use strict";

// --- DOM helpers ---

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  return add(node, ...children);
}

function add(node, ...children) {
  // Appends nodes and text; nested arrays are flattened, null/undefined/false skipped.
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function paragraphs(text, cls) {
  if (!text) return null;
  return el("div", {class: cls || "desc"}, String(text).split(/\n\n+/).map((p) => el("p", {}, p)));
}

function anchor(...parts) {
  return parts.join("-").replace(/[^A-Za-z0-9_-]+/g, "-");
}

// --- JSON references and schemas ---

function resolve(doc, value) {
  // Follows local "#/a/b" references (JSON Pointer, ~1 = "/", ~0 = "~").
  let seen = 0;
  while (value && typeof value === "object" && typeof value.$ref === "string" && seen++ < 32) {
    const ref = value.$ref;
    if (!ref.startsWith("#/")) return {description: `external reference ${ref}`};
    value = ref.slice(2).split("/").reduce((node, key) => {
      const name = key.replace(/~1/g, "/").replace(/~0/g, "~");
      return node === undefined ? undefined : node[name];
    }, doc);
  }
  return value || {};
}

function refName(value) {
  return value && typeof value.$ref === "string" ? value.$ref.split("/").pop() : null;
}

function typeLabel(schema) {
  if (schema.type === "array") {
    return "array";
  }
  let type = Array.isArray(schema.type) ? schema.type.join(" | ") : (schema.type || "any");
  if (schema.format) type += ` (${schema.format})`;
  if (schema.nullable) type += " | null";
  return type;
}

function constraints(schema) {
  const out = [];
  const put = (label, value) => out.push(el("span", {class: "constraint"}, `${label} `, el("code", {}, value)));
  if (schema.enum) put("one of", schema.enum.map((v) => JSON.stringify(v)).join(", "));
  if (schema.pattern) put("pattern", schema.pattern);
  if (schema.not && schema.not.pattern) put("not matching", schema.not.pattern);
  if (schema.minimum !== undefined) put("≥", schema.minimum);
  if (schema.maximum !== undefined) put("≤", schema.maximum);
  if (schema.minLength !== undefined) put("min length", schema.minLength);
  if (schema.maxLength !== undefined) put("max length", schema.maxLength);
  if (schema.minItems !== undefined) put("min items", schema.minItems);
  if (schema.maxItems !== undefined) put("max items", schema.maxItems);
  if (schema.default !== undefined) put("default", JSON.stringify(schema.default));
  if (schema.contentEncoding) put("encoding", schema.contentEncoding);
  if (schema.contentMediaType) put("content", schema.contentMediaType);
  return out;
}

// One schema as a nested list: each property with its type, constraints and
// description; references are expanded once per branch (no cycles).
function schemaTree(doc, raw, seen) {
  seen = seen || new Set();
  const name = refName(raw);
  const schema = resolve(doc, raw);
  if (name && seen.has(name)) return el("span", {class: "type"}, name);
  const branch = name ? new Set([...seen, name]) : seen;
  const list = el("ul", {class: "schema"});
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  for (const [prop, propRaw] of Object.entries(properties)) {
    add(list, schemaItem(doc, prop, propRaw, required.has(prop), branch));
  }
  if (schema.items) add(list, schemaItem(doc, "[items]", schema.items, false, branch));
  if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
    add(list, schemaItem(doc, "{any key}", schema.additionalProperties, false, branch));
  }
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    if (!schema[key]) continue;
    const label = {anyOf: "at least one of", oneOf: "exactly one of", allOf: "all of"}[key];
    const options = schema[key].map((option) => {
      const resolved = resolve(doc, option);
      if (resolved.required && !resolved.properties) return el("li", {}, `has ${resolved.required.join(", ")}`);
      return el("li", {}, schemaTree(doc, option, branch));
    });
    add(list, el("li", {}, el("span", {class: "constraint"}, label), el("ul", {class: "schema"}, options)));
  }
  return list.childNodes.length ? list : null;
}

function schemaItem(doc, prop, raw, isRequired, seen) {
  const schema = resolve(doc, raw);
  const name = refName(raw);
  const item = el("li", {},
    el("span", {class: "field"}, prop),
    isRequired ? el("span", {class: "required", title: "required"}, "required") : null,
    " ", el("span", {class: "type"}, name ? `${name} (${typeLabel(schema)})` : typeLabel(schema)),
    constraints(schema),
    schema.description ? el("div", {class: "desc"}, schema.description) : null);
  const nested = schemaTree(doc, raw, seen);
  if (nested) add(item, nested);
  return item;
}

function schemaBlock(doc, raw) {
  const schema = resolve(doc, raw);
  const name = refName(raw);
  return el("div", {},
    el("div", {}, el("span", {class: "type"}, name ? `${name}: ${typeLabel(schema)}` : typeLabel(schema)),
      constraints(schema)),
    schema.description ? el("div", {class: "desc"}, schema.description) : null,
    schemaTree(doc, raw),
    schema.example !== undefined ? example("example", schema.example) : null);
}

function example(label, value) {
  const line = JSON.stringify(value);
  const text = typeof value === "string" ? value : line.length > 90 ? JSON.stringify(value, null, 2) : line;
  return el("div", {}, el("h4", {}, label), el("pre", {}, text));
}

// --- OpenAPI ---

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"];

function operations(doc) {
  const out = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of Object.keys(item).filter((key) => METHODS.includes(key))) {  // the document's order
      out.push({path, method, op: item[method], shared: item.parameters || []});
    }
  }
  return out;
}

function securityText(doc, op) {
  const security = op.security || doc.security || [];
  if (!security.length) return "No token needed.";
  const names = security.map((req) => Object.keys(req)).filter((keys) => keys.length).map((keys) => keys.join(" + "));
  const optional = security.some((req) => Object.keys(req).length === 0);
  const schemes = doc.components && doc.components.securitySchemes || {};
  const how = names.map((name) => {
    const scheme = schemes[name] || {};
    if (scheme.type === "http") return `Authorization: ${scheme.scheme === "bearer" ? "Bearer" : scheme.scheme} <token>`;
    if (scheme.type === "apiKey") return `${scheme.in === "query" ? "?" : ""}${scheme.name}=<token>`;
    return name;
  });
  return `${optional ? "Only when the balancer runs with --token: " : ""}${how.join(" or ")}.`;
}

function parametersTable(doc, params) {
  if (!params.length) return null;
  return el("table", {},
    el("thead", {}, el("tr", {}, ["name", "in", "schema", "description"].map((h) => el("th", {}, h)))),
    el("tbody", {}, params.map((raw) => {
      const p = resolve(doc, raw);
      const schema = resolve(doc, p.schema || {});
      return el("tr", {},
        el("td", {}, el("span", {class: "field"}, p.name), p.required ? el("span", {class: "required"}, "required") : null),
        el("td", {}, p.in),
        el("td", {}, el("span", {class: "type"}, typeLabel(schema)), constraints(schema)),
        el("td", {class: "desc"}, p.description || schema.description || ""));
    })));
}

function contentBlock(doc, content, shown) {
  // shown: names of the schemas already expanded in this operation, shown once.
  return Object.entries(content || {}).map(([media, body]) => {
    const name = refName(body.schema);
    const repeated = name && shown && shown.has(name);
    if (name && shown) shown.add(name);
    return el("div", {},
      el("div", {class: "media"}, media),
      repeated ? el("span", {class: "type"}, `${name} (as above)`) : body.schema ? schemaBlock(doc, body.schema) : null,
      body.example !== undefined ? example("example", body.example) : null);
  });
}

function responsesTable(doc, responses) {
  const shown = new Set();
  return el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning and body"))),
    el("tbody", {}, Object.entries(responses || {}).map(([status, raw]) => {
      const response = resolve(doc, raw);
      return el("tr", {},
        el("td", {}, el("span", {class: `status s${status[0]}`}, status)),
        el("td", {}, el("div", {class: "desc"}, response.description || ""), contentBlock(doc, response.content, shown)));
    })));
}

function operationSection(doc, {path, method, op, shared}) {
  const id = op.operationId || anchor(method, path);
  const body = resolve(doc, op.requestBody);
  return el("details", {class: "op", id},
    el("summary", {},
      el("span", {class: `method ${method}`}, method),
      el("span", {class: "path"}, path),
      el("span", {class: "summary"}, op.summary || ""),
      el("span", {class: "opid"}, op.operationId || "")),
    el("div", {class: "body"},
      paragraphs(op.description),
      el("p", {class: "muted"}, securityText(doc, op)),
      [...shared, ...(op.parameters || [])].length ? el("h4", {}, "Parameters") : null,
      parametersTable(doc, [...shared, ...(op.parameters || [])]),
      op.requestBody ? el("h4", {}, `Request body${body.required ? " (required)" : ""}`) : null,
      op.requestBody ? paragraphs(body.description) : null,
      op.requestBody ? contentBlock(doc, body.content) : null,
      el("h4", {}, "Responses"),
      responsesTable(doc, op.responses)));
}

function renderOpenApi(doc) {
  document.getElementById("title").textContent = doc.info.title;
  document.getElementById("version").textContent = `version ${doc.info.version} · OpenAPI ${doc.openapi}`;
  add(document.getElementById("rest-intro"), paragraphs(doc.info.description));
  const target = clear(document.getElementById("operations"));
  const ops = operations(doc);
  const tags = (doc.tags || []).map((t) => t.name);
  for (const o of ops) for (const t of o.op.tags || ["other"]) if (!tags.includes(t)) tags.push(t);
  const toc = el("ul", {});
  for (const tag of tags) {
    const tagged = ops.filter((o) => (o.op.tags || ["other"]).includes(tag));
    if (!tagged.length) continue;
    const info = (doc.tags || []).find((t) => t.name === tag) || {};
    add(target, el("h3", {id: anchor("tag", tag)}, tag), paragraphs(info.description));
    add(target, tagged.map((o) => operationSection(doc, o)));
    add(toc, el("li", {}, el("a", {href: `#${anchor("tag", tag)}`}, tag), ": ",
      tagged.map((o, i) => [i ? ", " : "", el("a", {href: `#${o.op.operationId || anchor(o.method, o.path)}`},
        `${o.method.toUpperCase()} ${o.path}`)])));
  }
  return toc;
}

// --- AsyncAPI ---

function messageSection(doc, key, raw) {
  const message = resolve(doc, raw);
  return el("div", {class: "op", id: anchor("message", key)},
    el("div", {class: "body"},
      el("h4", {}, message.title || message.name || key),
      el("div", {class: "media"}, message.contentType || doc.defaultContentType || ""),
      paragraphs(message.summary),
      paragraphs(message.description),
      message.payload ? schemaBlock(doc, message.payload) : null,
      (message.examples || []).map((ex) => example(`example: ${ex.name || ""}`, ex.payload))));
}

function asyncOperation(doc, id, op) {
  // Actions are the balancer's: it receives what a client sends.
  const direction = op.action === "receive" ? "client → balancer" : "balancer → client";
  const names = (op.messages || []).map((m) => resolve(doc, m).title || refName(m));
  const reply = op.reply ? (op.reply.messages || []).map((m) => resolve(doc, m).title || refName(m)) : [];
  return el("details", {class: "op", id: anchor("operation", id), open: ""},
    el("summary", {},
      el("span", {class: `method ${op.action}`}, op.action),
      el("span", {class: "path"}, direction),
      el("span", {class: "summary"}, op.title || op.summary || ""),
      el("span", {class: "opid"}, id)),
    el("div", {class: "body"},
      paragraphs(op.summary),
      el("p", {}, "Messages: ", names.join(" · ")),
      reply.length ? el("p", {}, "Reply: ", reply.join(" or ")) : null));
}

function renderAsyncApi(doc) {
  const target = clear(document.getElementById("channels"));
  const servers = Object.values(doc.servers || {});
  add(target, paragraphs(doc.info.description));
  for (const [key, channel] of Object.entries(doc.channels || {})) {
    const urls = servers.map((s) => `${s.protocol}://${s.host}${channel.address}`);
    add(target, el("h3", {id: anchor("channel", key)}, channel.title || key, " ",
      el("code", {}, urls.join(", ") || channel.address)));
    add(target, paragraphs(channel.description));
  }
  for (const server of servers) add(target, paragraphs(server.description, "muted"));
  add(target, el("h3", {id: "ws-operations"}, "Operations"));
  for (const [id, op] of Object.entries(doc.operations || {})) add(target, asyncOperation(doc, id, op));
  add(target, el("h3", {id: "ws-messages"}, "Messages"));
  const messages = doc.components && doc.components.messages || {};
  for (const [key, message] of Object.entries(messages)) add(target, messageSection(doc, key, message));
  return el("li", {}, el("a", {href: "#websocket"}, "WebSocket"), ": ",
    el("a", {href: "#ws-operations"}, "operations"), ", ", el("a", {href: "#ws-messages"}, "messages"));
}

// --- page ---

async function load(url) {
  const response = await fetch(url, {headers: {Accept: "application/json"}});
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

function failed(id, url, error) {
  clear(document.getElementById(id)).append(el("p", {class: "error"}, `Could not load ${url}: ${error.message}`));
  return null;
}

async function main() {
  const [rest, ws] = await Promise.all([
    load("openapi.json").then(renderOpenApi, (e) => failed("operations", "openapi.json", e)),
    load("asyncapi.json").then(renderAsyncApi, (e) => failed("channels", "asyncapi.json", e)),
  ]);
  const toc = clear(document.getElementById("toc"));
  add(toc, el("strong", {}, "Contents"));
  const list = rest || el("ul", {});
  if (ws) add(list, ws);
  add(toc, list);
  showHash();
  window.addEventListener("hashchange", showHash);
  document.body.dataset.rendered = "true";
}

function showHash() {
  // A link to an operation opens it.
  const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (!target) return;
  if (target.tagName === "DETAILS") target.open = true;
  target.scrollIntoView();
}

main();
