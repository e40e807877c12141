// The page at / of `pefty serve`: a file or a recording goes to POST /v1/audio/transcriptions
// (verbose_json); its segments (and words, where the server gives them) are listed with their
// times, a click plays the audio from there, and txt/srt/vtt are built here from the segments,
// in the layout of the server's own srt/vtt (pefty_whisper/inference/formats.py).
"use strict";

const RATE = 16000; // what the server decodes at: recordings are sent as 16 kHz mono WAV
const $ = (id) => document.getElementById(id);
const objectUrls = []; // the player's and downloads' blob URLs, revoked on the next result

// -- the served model ------------------------------------------------------------------------

async function showModel() {
  try {
    const response = await fetch("/v1/pefty/model");
    const model = await response.json();
    $("model-name").textContent = model.name;
    $("model-backend").textContent = model.backend;
    const round = $("model-round");
    round.textContent = model.round === null ? "—" : String(model.round);
    if (model.round === 0) round.textContent += " (base)";
    const cer = $("model-cer");
    if (model.eval_clean) {
      const count = document.createElement("small");
      count.textContent = ` on ${model.eval_clean.num_utterances} utt.`;
      cer.replaceChildren(`${model.eval_clean.cer.toFixed(2)} %`, count);
      cer.title = model.eval_clean.path;
    } else {
      cer.textContent = "not evaluated";
      cer.title = model.label
        ? `no eval/${model.label}/eval_clean.json in the workspace`
        : "not a model of the workspace";
    }
  } catch (error) {
    $("model-name").textContent = "unknown";
  }
}

// -- sending audio ---------------------------------------------------------------------------

async function transcribe(file) {
  showError("");
  $("result").hidden = true;
  setBusy(`Transcribing ${file.name}…`);
  const started = performance.now();
  try {
    let upload = file;
    let body = await post(upload);
    if (body.error && body.error.message.includes("not a readable audio file")) {
      // A format the server cannot read (m4a, webm, ...) but the browser can: send it as WAV.
      const wav = await toWav(file).catch(() => null);
      if (wav) {
        upload = new File([wav], `${stem(file.name)}.wav`, { type: "audio/wav" });
        body = await post(upload);
      }
    }
    if (body.error) throw new Error(body.error.message);
    render(file, body, (performance.now() - started) / 1000);
  } catch (error) {
    showError(error.message);
  } finally {
    setBusy("");
  }
}

async function post(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "segment");
  form.append("timestamp_granularities[]", "word"); // shown where the server gives words
  const response = await fetch("/v1/audio/transcriptions", { method: "POST", body: form });
  try {
    return await response.json();
  } catch (error) {
    return { error: { message: `HTTP ${response.status} ${response.statusText}` } };
  }
}

// -- the transcript --------------------------------------------------------------------------

function render(file, body, seconds) {
  objectUrls.splice(0).forEach((url) => URL.revokeObjectURL(url));
  const segments = body.segments || [];
  const player = $("player");
  player.src = blobUrl(file);
  $("result-name").textContent = file.name;
  $("result-meta").textContent = [
    `${segments.length} segment${segments.length === 1 ? "" : "s"}`,
    `${clock(body.duration || 0)} of audio`,
    body.language,
    `transcribed in ${seconds.toFixed(1)} s`,
  ]
    .filter(Boolean)
    .join(" · ");
  const list = $("segments");
  list.replaceChildren(...segments.map((segment) => segmentItem(segment)));
  placeWords(list, segments, body.words || []);
  $("no-speech").hidden = segments.length > 0;
  const name = stem(file.name);
  offer("download-txt", `${name}.txt`, `${body.text || ""}\n`, "text/plain");
  offer("download-srt", `${name}.srt`, toSrt(segments), "application/x-subrip");
  offer("download-vtt", `${name}.vtt`, toVtt(segments), "text/vtt");
  $("result").hidden = false;
}

function segmentItem(segment) {
  const item = document.createElement("li");
  item.className = "segment";
  item.tabIndex = 0;
  item.dataset.start = segment.start;
  item.dataset.end = segment.end;
  item.title = `Play from ${clock(segment.start)}`;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${clock(segment.start)} – ${clock(segment.end)}`;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = segment.text.trim();
  item.append(time, text);
  item.addEventListener("click", () => playFrom(segment.start));
  item.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      playFrom(segment.start);
    }
  });
  return item;
}

function placeWords(list, segments, words) {
  // OpenAI's verbose_json lists words apart from segments: each goes under the last segment
  // that starts before it.
  if (!words.length) return;
  const rows = [...list.children].map((item) => {
    const row = document.createElement("span");
    row.className = "words";
    item.append(row);
    return row;
  });
  for (const word of words) {
    let index = segments.findLastIndex((s) => s.start <= word.start + 0.01);
    if (index < 0) index = 0;
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "word";
    chip.title = `${clock(word.start)} – ${clock(word.end)}`;
    chip.append(word.word.trim());
    const time = document.createElement("small");
    time.textContent = word.start.toFixed(2);
    chip.append(time);
    chip.addEventListener("click", (event) => {
      event.stopPropagation();
      playFrom(word.start);
    });
    rows[index].append(chip);
  }
}

function playFrom(seconds) {
  const player = $("player");
  player.currentTime = seconds;
  player.play().catch(() => {}); // a browser that refuses to play still seeks
}

function highlight() {
  const now = $("player").currentTime;
  for (const item of $("segments").children) {
    const on = Number(item.dataset.start) <= now && now < Number(item.dataset.end);
    item.classList.toggle("playing", on);
  }
}

// -- downloads: the server's srt/vtt layout ----------------------------------------------------

function toSrt(segments) {
  return segments
    .map((s, i) => `${i + 1}\n${stamp(s.start, ",")} --> ${stamp(s.end, ",")}\n${s.text}\n`)
    .join("\n");
}

function toVtt(segments) {
  const cues = segments.map((s) => `${stamp(s.start, ".")} --> ${stamp(s.end, ".")}\n${s.text}\n`);
  return ["WEBVTT\n", ...cues].join("\n");
}

function stamp(seconds, separator) {
  // 01:02:03,456 (srt) or 01:02:03.456 (vtt), as formats.srt_time writes it
  let millis = Math.round(seconds * 1000);
  const hours = Math.floor(millis / 3600000);
  millis -= hours * 3600000;
  const minutes = Math.floor(millis / 60000);
  millis -= minutes * 60000;
  const secs = Math.floor(millis / 1000);
  millis -= secs * 1000;
  return `${pad(hours, 2)}:${pad(minutes, 2)}:${pad(secs, 2)}${separator}${pad(millis, 3)}`;
}

function offer(id, filename, text, type) {
  const link = $(id);
  link.href = blobUrl(new Blob([text], { type: `${type};charset=utf-8` }));
  link.download = filename;
}

// -- recording: MediaRecorder, then 16 kHz mono WAV (the server reads wav/flac/ogg/mp3) --------

let recorder = null;
let recordTimer = null;

async function toggleRecording() {
  if (recorder) {
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError("Recording needs a browser with a microphone, on http://127.0.0.1 or https.");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    showError(`No microphone: ${error.message}`);
    return;
  }
  showError("");
  const chunks = [];
  const started = Date.now();
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => {
    if (event.data.size) chunks.push(event.data);
  });
  recorder.addEventListener("stop", async () => {
    stream.getTracks().forEach((track) => track.stop());
    const recorded = new Blob(chunks, { type: recorder.mimeType });
    recorder = null;
    clearInterval(recordTimer);
    $("record").classList.remove("recording");
    $("record-label").textContent = "Record";
    try {
      const wav = await toWav(recorded);
      const name = `recording-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.wav`;
      await transcribe(new File([wav], name, { type: "audio/wav" }));
    } catch (error) {
      showError(`The recording could not be read: ${error.message}`);
    }
  });
  recorder.start();
  $("record").classList.add("recording");
  const tick = () => {
    $("record-label").textContent = `Stop ${clock((Date.now() - started) / 1000, 0)}`;
  };
  tick();
  recordTimer = setInterval(tick, 250);
}

async function toWav(blob) {
  // decodeAudioData resamples to its context's rate: 16 kHz, the rate the server decodes at.
  const context = new OfflineAudioContext(1, 1, RATE);
  const audio = await context.decodeAudioData(await blob.arrayBuffer());
  const mono = new Float32Array(audio.length);
  for (let c = 0; c < audio.numberOfChannels; c++) {
    const channel = audio.getChannelData(c);
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / audio.numberOfChannels;
  }
  const view = new DataView(new ArrayBuffer(44 + 2 * mono.length));
  const ascii = (offset, text) => {
    for (let i = 0; i < text.length; i++) view.setUint8(offset + i, text.charCodeAt(i));
  };
  ascii(0, "RIFF");
  view.setUint32(4, 36 + 2 * mono.length, true);
  ascii(8, "WAVEfmt ");
  view.setUint32(16, 16, true); // PCM header size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, RATE, true);
  view.setUint32(28, 2 * RATE, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  view.setUint32(40, 2 * mono.length, true);
  mono.forEach((x, i) => view.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, x)) * 0x7fff, true));
  return new Blob([view], { type: "audio/wav" });
}

// -- small helpers ---------------------------------------------------------------------------

function clock(seconds, digits = 1) {
  // 0:04.2, 12:34.5, 1:02:03.0 (rounded first, so 59.96 s is 1:00.0, not 0:60.0)
  const total = Math.round(seconds * 10 ** digits) / 10 ** digits;
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = (total % 60).toFixed(digits).padStart(digits ? digits + 3 : 2, "0");
  return hours ? `${hours}:${pad(minutes, 2)}:${secs}` : `${minutes}:${secs}`;
}

function pad(value, width) {
  return String(value).padStart(width, "0");
}

function stem(filename) {
  return filename.replace(/\.[^.]+$/, "") || "transcript";
}

function blobUrl(blob) {
  const url = URL.createObjectURL(blob);
  objectUrls.push(url);
  return url;
}

function setBusy(message) {
  const status = $("status");
  status.textContent = message;
  status.hidden = !message;
  $("file").disabled = Boolean(message);
  document.body.classList.toggle("busy", Boolean(message));
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// -- wiring ------------------------------------------------------------------------------------

function pick(files) {
  if (files && files.length) transcribe(files[0]);
}

document.addEventListener("DOMContentLoaded", () => {
  showModel();
  $("file").addEventListener("change", (event) => {
    pick(event.target.files);
    event.target.value = ""; // choosing the same file again transcribes it again
  });
  $("record").addEventListener("click", toggleRecording);
  $("player").addEventListener("timeupdate", highlight);
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    pick(event.dataTransfer.files);
  });
  // A file dropped beside the zone would make the browser leave the page to open it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
});
