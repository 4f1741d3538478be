// The console's script (balancer/static/index.html, served at /console.js):
// the speakers panel, streaming over the WebSocket, the timeline and the status
// panel. Written for this project, no third-party code and nothing from another
// origin (the page's Content-Security-Policy allows only the balancer's own).
"use strict";
// ===== Constants and small helpers ==========================================
// The service's frames: 100 ms of 16 kHz mono PCM16 WAV, each sent as the
// binary-pair packet (a text message "ACCOUNTCODE=..." then the WAV bytes).
// Replies come in order.
const RATE = 16000, FRAME = 1600;
const ACCOUNT = /^[A-Za-z0-9_-]{1,64}$/;
const HEALTH_EVERY_MS = 3000;
const TIMELINE_KEEP = 3000;           // frames kept (5 minutes); the canvas shows the latest that fit
const SEGMENTS_LISTED = 100;          // final segments listed under the timeline, newest first
const FRAME_PX = 3;                   // canvas width of one 100 ms frame
const FRAME_SECONDS = 0.1;            // frame seq k covers (k-1)..k x 100 ms of the stream
const VOICE_COLOR = "#2a8a2a", UNKNOWN_COLOR = "#9e9e9e";
// Not final yet: frames with an immediate label after the last final segment.
const PENDING_COLOR = "#e2e2e2", CHANGE_COLOR = "#222", RESTART_COLOR = "#c2185b";
// One colour per speaker name, in the order names are first seen; grey is
// kept for "unknown", so it is not in the palette.
const PALETTE = ["#1f77b4", "#ff7f0e", "#d62728", "#9467bd", "#17becf", "#e377c2", "#8c564b", "#bcbd22"];

const $ = (id) => document.getElementById(id);

function say(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

function element(tag, text = "", className = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

function swatch(color) {
  const node = element("span", "", "swatch");
  node.style.background = color;
  return node;
}

// ===== Audio: WAV encoding, 16 kHz, the microphone, level meters ===========
// Float samples in [-1, 1] at 16 kHz -> a mono 16-bit PCM WAV file.
function wav(samples) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, RATE, true); view.setUint32(28, RATE * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x)) * 32767, true));
  return view.buffer;
}

// Linear interpolation to 16 kHz, only where the browser could not capture at
// 16 kHz itself: good enough for VAD and speaker scoring.
function to16k(input, rate) {
  if (rate === RATE) return input;
  const out = new Float32Array(Math.floor(input.length * RATE / rate));
  for (let i = 0; i < out.length; i++) {
    const pos = i * rate / RATE, j = Math.floor(pos), frac = pos - j;
    out[i] = input[j] * (1 - frac) + (input[Math.min(j + 1, input.length - 1)] * frac);
  }
  return out;
}

function joined(chunks) {
  const out = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) { out.set(chunk, at); at += chunk.length; }
  return out;
}

function levelDb(samples) {
  let sum = 0;
  for (const x of samples) sum += x * x;
  const rms = Math.sqrt(sum / Math.max(1, samples.length));
  return rms > 0 ? 20 * Math.log10(rms) : -Infinity;
}

function showLevel(bar, db) {
  bar.style.width = `${Math.max(0, Math.min(1, (db + 60) / 60)) * 100}%`;
  bar.parentElement.title = Number.isFinite(db) ? `microphone level ${db.toFixed(0)} dBFS` : "microphone level";
}

// The microphone as 16 kHz float samples, each block to onSamples; returns
// the function that releases it. Browsers give the microphone only to secure
// pages (https, or http on localhost).
async function openMicrophone(onSamples) {
  if (!navigator.mediaDevices) {
    throw new Error("this browser gives the microphone only to secure pages: open the console over https " +
                    "or on localhost (see docs/console.md)");
  }
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  } catch (err) {
    throw new Error(`no microphone: ${err.name === "NotAllowedError" ? "permission denied" : err.message}`);
  }
  // A 16 kHz context lets the browser resample (with filtering); some
  // browsers refuse a microphone in a context of another rate: then capture
  // at the device rate and interpolate here.
  let context, input;
  try {
    context = new AudioContext({ sampleRate: RATE });
    input = context.createMediaStreamSource(media);
  } catch {
    if (context) context.close();
    context = new AudioContext();
    input = context.createMediaStreamSource(media);
  }
  await context.resume();
  // ScriptProcessor is deprecated but needs no separate module file (an
  // AudioWorklet would, and only on secure pages); 2048 samples = 128 ms at 16 kHz.
  const tap = context.createScriptProcessor(2048, 1, 1);
  tap.onaudioprocess = (event) => onSamples(to16k(event.inputBuffer.getChannelData(0).slice(), context.sampleRate));
  input.connect(tap); tap.connect(context.destination);
  return () => { tap.disconnect(); input.disconnect(); media.getTracks().forEach((t) => t.stop()); context.close(); };
}

// Any audio file the browser can decode -> 16 kHz mono float samples (the
// browser's resampler and down-mix).
async function decodeFile(file) {
  const audio = await new OfflineAudioContext(1, 1, RATE).decodeAudioData(await file.arrayBuffer());
  const length = Math.ceil(audio.duration * RATE);
  if (length < 1) throw new Error(`${file.name} holds no audio`);
  const render = new OfflineAudioContext(1, length, RATE);
  const source = render.createBufferSource();
  source.buffer = audio; source.connect(render.destination); source.start();
  return (await render.startRendering()).getChannelData(0);
}

// ===== REST: the balancer's speaker API =====================================
function token() { return $("token").value.trim(); }

function account() {
  const code = $("account").value;
  if (!ACCOUNT.test(code)) throw new Error("ACCOUNTCODE: 1-64 of A-Z a-z 0-9 _ -");
  return code;
}

function speakersPath(name) {
  return `/accounts/${account()}/speakers` + (name === undefined ? "" : `/${encodeURIComponent(name)}`);
}

// A call's JSON body, or an Error whose message is "HTTP <status>: <the
// server's "error" text>" (422 not enough speech, 503 loading, 401 token...).
async function api(method, path, body) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body) headers["Content-Type"] = "audio/wav";
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch (err) {
    throw new Error(`the balancer did not answer ${method} ${path} (${err.message})`);
  }
  const text = await response.text();
  let data;
  try { data = JSON.parse(text); } catch { data = { error: text || response.statusText }; }
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${data.error || response.statusText}`);
  return data;
}

// ===== Speaker colours and the legend =======================================
const colors = new Map([["unknown", UNKNOWN_COLOR]]);
let enrolled = [];  // names in the account's list, as last fetched

function colorOf(name) {
  if (!colors.has(name)) {
    const i = colors.size - 1;  // "unknown" is the first entry
    colors.set(name, i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.5) % 360} 55% 45%)`);
  }
  return colors.get(name);
}

function renderLegend() {
  const names = [...new Set([...enrolled, ...timeline.map((f) => f.speaker).filter(Boolean),
                             ...finals.map((s) => s.speaker)])];
  const keys = [...names.filter((n) => n !== "unknown"), "unknown"].map((name) => {
    const key = element("span", "", "key");
    key.dataset.name = name;
    key.dataset.color = colorOf(name);
    key.append(swatch(colorOf(name)), name);
    return key;
  });
  $("legend").replaceChildren(...keys);
}

// ===== Speakers panel: list, enroll, delete =================================
let listing = 0;  // the latest list request; older answers are dropped

async function refreshSpeakers() {
  const ticket = ++listing, message = $("speakers-message");
  let list;
  try {
    list = (await api("GET", speakersPath())).speakers;
  } catch (err) {
    if (ticket === listing) say(message, `could not list the speakers: ${err.message}`, true);
    return;
  }
  if (ticket !== listing) return;
  enrolled = list.map((s) => s.name);
  const rows = list.map((s) => {
    const row = element("tr");
    row.dataset.name = s.name;
    const name = element("td");
    name.append(swatch(colorOf(s.name)), s.name);
    const remove = element("td");
    remove.append(deleteButton(s.name));
    row.append(name, element("td", s.speech_seconds.toFixed(1), "number"), element("td", String(s.samples), "number"),
               remove);
    return row;
  });
  if (!rows.length) {
    const cell = element("td", `nobody is enrolled in account ${$("account").value} yet`, "empty");
    cell.colSpan = 4;
    rows.push(element("tr"));
    rows[0].append(cell);
  }
  $("speakers").replaceChildren(...rows);
  renderLegend();
}

// Two clicks delete: the first arms the button for a few seconds.
function deleteButton(name) {
  const button = element("button", "delete", "delete");
  let disarm = null;
  button.onclick = async () => {
    if (!disarm) {
      button.classList.add("armed"); button.textContent = "really delete?";
      disarm = setTimeout(() => { button.classList.remove("armed"); button.textContent = "delete"; disarm = null; }, 4000);
      return;
    }
    clearTimeout(disarm);
    button.disabled = true;
    const message = $("speakers-message");
    try {
      await api("DELETE", speakersPath(name));
      say(message, `deleted ${name}`);
    } catch (err) {
      say(message, `could not delete ${name}: ${err.message}`, true);
    }
    await refreshSpeakers();
  };
  return button;
}

function speakerName() {
  const name = $("speaker-name").value.trim();
  if (!name) throw new Error("give the speaker a name first");
  return name;
}

async function enroll(name, samples, source) {
  const message = $("speakers-message");
  say(message, `enrolling ${name} from ${source}…`);
  try {
    const reply = await api("POST", speakersPath(name), wav(samples));
    say(message, `enrolled ${reply.name} from ${source}: ${reply.sample_speech_seconds} s of speech ` +
                 `(now ${reply.samples} sample${reply.samples === 1 ? "" : "s"}, ${reply.speech_seconds} s in all)`);
  } catch (err) {
    say(message, `could not enroll ${name}: ${err.message}`, true);
  }
  await refreshSpeakers();
}

let finishRecording = null;  // set while recording: ends it early

async function record() {
  if (finishRecording) { finishRecording(); return; }
  const message = $("speakers-message"), button = $("record"), meter = $("enroll-level");
  let name;
  try { name = speakerName(); account(); } catch (err) { say(message, err.message, true); return; }
  const seconds = Number($("enroll-seconds").value);
  if (!(seconds >= 1 && seconds <= 120)) { say(message, "record 1 to 120 seconds", true); return; }
  const need = Math.round(seconds * RATE), chunks = [];
  let have = 0;
  const finished = new Promise((resolve) => { finishRecording = resolve; });
  let release;
  try {
    release = await openMicrophone((samples) => {
      chunks.push(samples); have += samples.length;
      showLevel(meter, levelDb(samples));
      say(message, `recording ${name}: ${(Math.max(0, need - have) / RATE).toFixed(1)} s left`);
      if (have >= need) finishRecording();
    });
  } catch (err) {
    finishRecording = null;
    say(message, err.message, true);
    return;
  }
  button.textContent = "Stop and enroll";
  await finished;
  release();
  finishRecording = null;
  button.textContent = "Record from the microphone";
  showLevel(meter, -Infinity);
  const samples = joined(chunks).subarray(0, need);
  await enroll(name, samples, `${(samples.length / RATE).toFixed(1)} s of the microphone`);
}

async function enrollFile(file) {
  const message = $("speakers-message");
  let name, samples;
  try { name = speakerName(); account(); } catch (err) { say(message, err.message, true); return; }
  try {
    say(message, `reading ${file.name}…`);
    samples = await decodeFile(file);
  } catch (err) {
    say(message, `could not read ${file.name}: ${err.message}`, true);
    return;
  }
  await enroll(name, samples, file.name);
}

// ===== Streaming: frames out over the WebSocket, replies in ================
let socket = null, stopSource = null, pending = new Float32Array(0);

function push(samples16k) {
  const all = new Float32Array(pending.length + samples16k.length);
  all.set(pending); all.set(samples16k, pending.length);
  let start = 0;
  for (; start + FRAME <= all.length; start += FRAME) send(all.subarray(start, start + FRAME));
  pending = all.slice(start);
}

function send(frame) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send("ACCOUNTCODE=" + $("account").value);
  socket.send(wav(frame));
}

// A message on the WebSocket: a frame's reply, or the answer to CLOSE.
function receive(message) {
  if (message.closed === true) { streamClosed(message); return; }
  show(message);
}

function show(reply) {
  if (reply.error) { say($("status"), reply.error, true); return; }
  addFrame(reply);
  $("light").className = reply.voice ? "on" : "";
  const who = reply.speaker ? `, speaker ${reply.speaker} (${reply.score})` : "";
  $("summary").textContent =
    `frame ${reply.seq}: voice=${reply.voice} p=${reply.prob} ${reply.db} dBFS${who}, worker ${reply.worker}, ${reply.ms} ms`;
  showSpeaker(reply);
  showEvents(reply.events || []);
}

let lastSpeaker = null;  // the latest decision of this stream

// The immediate label holds for the following voiced frames (the worker
// scores a window every 0.2 s of speech); frames without voice carry none.
function showSpeaker(reply) {
  const current = $("current"), note = $("speaker-note");
  if (reply.speaker) {
    lastSpeaker = reply.speaker;
    $("speaker").textContent = reply.speaker;
    $("speaker-swatch").style.background = colorOf(reply.speaker);
    $("speaker-swatch").hidden = false;
    current.classList.remove("silent");
    note.textContent = reply.score == null ? "no enrolled voice matches" : `score ${reply.score.toFixed(2)}`;
  } else if (!reply.voice) {
    current.classList.add("silent");
    note.textContent = lastSpeaker ? "silence (last heard above)" : "silence";
  } else if (!lastSpeaker) {
    current.classList.remove("silent");
    note.textContent = "voice, no decision yet (needs enrolled speakers)";
  }
}

// ===== Events: speaker changes, final segments, tracker restarts ============
// What a reply's "events" say (voicestream/events.py), in order. speech_start
// and speech_end need nothing here: the voice lane shows them.
function showEvents(events) {
  for (const event of events) {
    if (event.type === "segment") addSegment(event);
    else if (event.type === "speaker_change") speakerChanged(event);
    else if (event.type === "tracker_restart") trackerRestarted(event);
  }
}

// Seconds of the stream at the start of frame seq (the timeline's axis).
function secondsAt(seq) { return ((seq - 1) * FRAME_SECONDS).toFixed(1); }

function speakerChanged(change) {
  marks.push({ seq: change.seq, kind: "change" });
  $("speaker-change").textContent = change.previous
    ? `since ${secondsAt(change.seq)} s, after ${change.previous}` : `since ${secondsAt(change.seq)} s`;
  scheduleDraw();
}

// A segment's labels are final: the worker sends it once, its frames'
// labels no longer change (up to --speaker-lag-ms after its last frame).
function addSegment(segment) {
  finals.push(segment);
  const item = element("li", "", "segment");
  item.dataset.speaker = segment.speaker;
  item.dataset.startSeq = String(segment.start_seq);
  item.dataset.endSeq = String(segment.end_seq);
  item.dataset.frames = String(segment.frames);
  const score = segment.score == null ? "" : `, score ${segment.score.toFixed(2)}`;
  item.append(swatch(colorOf(segment.speaker)), element("span", segment.speaker, "name"),
              ` ${secondsAt(segment.start_seq)}–${secondsAt(segment.end_seq + 1)} s, ` +
              `frames ${segment.start_seq}–${segment.end_seq}${score}`);
  listEvent(item);
  if (!$("legend").querySelector(`[data-name="${CSS.escape(segment.speaker)}"]`)) renderLegend();
  noteSegments();
  scheduleDraw();
}

function trackerRestarted(restart) {
  marks.push({ seq: restart.seq, kind: "restart" });
  const item = element("li", `tracker restarted at frame ${restart.seq} (${secondsAt(restart.seq)} s): ` +
                             restart.reason, "restart");
  item.dataset.seq = String(restart.seq);
  listEvent(item);
  scheduleDraw();
}

// The answer to CLOSE ({"account", "closed": true, "events"}): the final
// labels still pending, made final now; then the balancer closes the socket.
// With "error", a worker did not answer: its pending labels will not come.
function streamClosed(answer) {
  const before = finals.length;
  showEvents(answer.events || []);
  const made = finals.length - before;
  let text = `stream closed: ${made} last segment${made === 1 ? "" : "s"} made final at CLOSE`;
  if (answer.error) text += `; ${answer.error}`;
  const item = element("li", text, answer.error ? "closed error" : "closed");
  item.dataset.segments = String(made);
  listEvent(item);
  noteSegments();
}

function listEvent(item) {
  const list = $("segments");
  list.prepend(item);
  while (list.children.length > SEGMENTS_LISTED) list.lastElementChild.remove();
}

function noteSegments() {
  const last = finals[finals.length - 1];
  $("segments-note").textContent = last
    ? `${finals.length} in this stream, final up to frame ${last.end_seq} (${secondsAt(last.end_seq + 1)} s)`
    : "none yet";
}

function resetStreamView() {
  timeline = []; lastSeq = 0; finals = []; marks = []; lastSpeaker = null;
  $("speaker").textContent = "—"; $("speaker-swatch").hidden = true; $("current").classList.add("silent");
  $("speaker-note").textContent = "listening";
  $("speaker-change").textContent = "";
  $("segments").replaceChildren();
  noteSegments();
  renderLegend(); scheduleDraw();
}

function connect() {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/ws` + (token() ? "?token=" + encodeURIComponent(token()) : ""));
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => receive(JSON.parse(event.data));
    socket.onopen = () => resolve();
    socket.onerror = () => reject(new Error("could not connect (wrong token?)"));
    socket.onclose = (event) => { say($("status"), `connection closed (${event.code})`); finish(); };
  });
}

function finish() {
  if (stopSource) { stopSource(); stopSource = null; }
  $("mic").disabled = false; $("file").disabled = false; $("stop").disabled = true;
  showLevel($("stream-level"), -Infinity);
}

async function start(source) {
  try { account(); } catch (err) { say($("status"), err.message, true); return; }
  $("mic").disabled = true; $("file").disabled = true; $("stop").disabled = false;
  say($("status"), "connecting…");
  pending = new Float32Array(0);
  resetStreamView();
  try {
    await connect();
    say($("status"), "streaming");
    stopSource = await source();
  } catch (err) {
    if (socket) { socket.onclose = null; socket.close(); }  // keep the error on screen, not "closed"
    say($("status"), String(err.message || err), true);
    finish();
  }
}

function microphone() {
  return openMicrophone((samples) => { showLevel($("stream-level"), levelDb(samples)); push(samples); });
}

async function wavFile(file) {
  const samples = await decodeFile(file);
  let next = 0;
  // Real-time pace: one 100 ms frame every 100 ms.
  const timer = setInterval(() => {
    if (next >= samples.length) { clearInterval(timer); socket.send("CLOSE"); return; }
    push(samples.subarray(next, next + FRAME)); next += FRAME;
  }, 100);
  return () => clearInterval(timer);
}

// ===== Timeline: voice, immediate and final speaker lanes on a canvas =======
// Positions are by frame seq (the balancer numbers a connection's frames from
// 1), so a frame without a reply (an error) leaves a hole, and a segment's
// start_seq..end_seq lands on its frames.
let timeline = [], lastSeq = 0, finals = [], marks = [], drawing = false;

function addFrame(reply) {
  timeline.push({ seq: reply.seq, voice: reply.voice, prob: reply.prob, speaker: reply.speaker });
  lastSeq = Math.max(lastSeq, reply.seq);
  if (timeline.length > TIMELINE_KEEP) timeline.splice(0, timeline.length - TIMELINE_KEEP);
  const oldest = lastSeq - TIMELINE_KEEP;
  if (finals.length && finals[0].end_seq < oldest) finals = finals.filter((s) => s.end_seq >= oldest);
  if (marks.length && marks[0].seq < oldest) marks = marks.filter((m) => m.seq >= oldest);
  if (reply.speaker && !$("legend").querySelector(`[data-name="${CSS.escape(reply.speaker)}"]`)) renderLegend();
  scheduleDraw();
}

function scheduleDraw() {
  if (!drawing) { drawing = true; requestAnimationFrame(drawTimeline); }
}

function drawTimeline() {
  drawing = false;
  const canvas = $("timeline"), ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 76, lane = 22, voiceTop = 2, nowTop = voiceTop + lane + 4, finalTop = nowTop + lane + 4;
  const axisTop = finalTop + lane + 2;
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = "#666";
  ctx.fillText("voice", 4, voiceTop + 15);
  ctx.fillText("immediate", 4, nowTop + 15);
  ctx.fillText("final", 4, finalTop + 15);
  ctx.fillStyle = "#f6f6f6";
  for (const top of [voiceTop, nowTop, finalTop]) ctx.fillRect(left, top, width - left, lane);
  // The newest frames that fit, the newest at the right edge.
  const first = Math.max(1, lastSeq - Math.floor((width - left) / FRAME_PX) + 1);
  const x = (seq) => left + (seq - first) * FRAME_PX;
  const finalUpTo = finals.length ? finals[finals.length - 1].end_seq : 0;
  for (const frame of timeline) {
    if (frame.seq < first) continue;
    const bar = Math.max(1, frame.prob * lane);
    // Voice lane: the frame's speech probability, green where VAD said voice.
    ctx.fillStyle = frame.voice ? VOICE_COLOR : "#d0d0d0";
    ctx.fillRect(x(frame.seq), voiceTop + lane - bar, FRAME_PX, bar);
    // Immediate lane: the frame's label as it was streamed, grey for unknown,
    // none for silence.
    if (frame.speaker) {
      ctx.fillStyle = colorOf(frame.speaker);
      ctx.fillRect(x(frame.seq), nowTop, FRAME_PX, lane);
      // Final lane: labelled frames the final labels have not reached yet.
      if (frame.seq > finalUpTo) {
        ctx.fillStyle = PENDING_COLOR;
        ctx.fillRect(x(frame.seq), finalTop, FRAME_PX, lane);
      }
    }
  }
  // Final lane: each segment over its frames, start_seq to end_seq.
  for (const segment of finals) {
    if (segment.end_seq < first) continue;
    const from = Math.max(first, segment.start_seq);
    ctx.fillStyle = colorOf(segment.speaker);
    ctx.fillRect(x(from), finalTop, (segment.end_seq + 1 - from) * FRAME_PX, lane);
  }
  // Speaker changes: a tick at the top of the immediate lane; a tracker
  // restart: a line across the lanes.
  for (const mark of marks) {
    if (mark.seq < first) continue;
    if (mark.kind === "restart") {
      ctx.fillStyle = RESTART_COLOR;
      ctx.fillRect(x(mark.seq), voiceTop, 2, finalTop + lane - voiceTop);
    } else {
      ctx.fillStyle = CHANGE_COLOR;
      ctx.fillRect(x(mark.seq), nowTop - 3, 1, 6);
    }
  }
  // A tick each second, a label each 5 s since the stream began.
  ctx.fillStyle = "#999";
  for (let seq = first; seq <= lastSeq; seq++) {
    const n = seq - 1;
    if (n % 10 !== 0) continue;
    ctx.fillRect(x(seq), axisTop, 1, n % 50 === 0 ? 6 : 3);
    if (n % 50 === 0) ctx.fillText(`${n / 10} s`, x(seq) + 2, axisTop + 16);
  }
}

// ===== Status panel: the balancer's /health =================================
function databaseText(db) {
  if (!db) return "—";
  if (db.mode === "embedded") return "embedded";
  let text = `${db.mode} ${db.state || ""}`.trim();
  if (db.spooled) text += `, ${db.spooled} spooled`;
  if (db.error) text += `: ${db.error}`;
  return text;
}

function renderHealth(health) {
  const workers = Object.entries(health.workers || {});
  const up = workers.filter(([, state]) => state === "up").length;
  say($("health-status"), `${health.status}: ${up} of ${workers.length} workers up, ` +
                          `${health.connections} connection${health.connections === 1 ? "" : "s"}`, up === 0);
  const databases = health.database;  // per worker, what its last /health said
  $("database-heading").hidden = databases === undefined;
  $("workers").replaceChildren(...workers.map(([url, state]) => {
    const row = element("tr", "", state);
    row.dataset.worker = url;
    row.append(element("td", url.replace(/^https?:\/\//, "")), element("td", state, "state"));
    if (databases !== undefined) row.append(element("td", databaseText(databases[url])));
    return row;
  }));
  const shared = Object.values(databases || {}).filter((db) => db.mode !== "embedded");
  $("database").hidden = !shared.length;
  if (shared.length) {
    const down = shared.filter((db) => db.state !== "up").length;
    say($("database"), down ? `database down on ${down} worker${down === 1 ? "" : "s"}` : "database up", down > 0);
  }
}

async function pollHealth() {
  try {
    // 503 while no worker is up: still JSON, still worth showing.
    const response = await fetch("/health", { cache: "no-store" });
    renderHealth(await response.json());
  } catch (err) {
    say($("health-status"), `the balancer does not answer /health (${err.message})`, true);
    $("workers").replaceChildren();
  } finally {
    setTimeout(pollHealth, HEALTH_EVERY_MS);
  }
}

// ===== Wiring ===============================================================
const query = new URLSearchParams(location.search);
$("token").value = query.get("token") || "";
if (query.get("account")) $("account").value = query.get("account");
$("account").onchange = refreshSpeakers;
$("token").onchange = refreshSpeakers;
$("refresh").onclick = refreshSpeakers;
$("record").onclick = record;
$("enroll-file").onchange = async (event) => {
  const file = event.target.files[0];
  if (file) await enrollFile(file);
  event.target.value = "";  // choosing the same file again enrolls again
};
$("mic").onclick = () => start(microphone);
$("file").onchange = (event) => event.target.files[0] && start(() => wavFile(event.target.files[0]));
$("stop").onclick = () => { if (socket && socket.readyState === WebSocket.OPEN) socket.send("CLOSE"); finish(); };
window.addEventListener("resize", scheduleDraw);
refreshSpeakers();
pollHealth();
resetStreamView();
$("speaker-note").textContent = "not streaming";
