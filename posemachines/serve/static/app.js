// The page of `pm serve`: an image (chosen, dropped or from the webcam) goes to
// POST /v1/predict; every person's skeleton of the chosen stage is drawn over it, and the
// stage's belief maps (one joint or all) when asked. Plain JS, no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const state = { model: null, source: null, result: null, busy: false, camera: null, times: [] };
window.pmFramesDrawn = 0; // for tests: how many predictions were drawn
window.pmDrawn = null; // for tests: what the last drawing showed

function headers() {
  const token = $("token").value || localStorage.getItem("pmToken") || "";
  return token ? { Authorization: "Bearer " + token } : {};
}

async function loadModel() {
  const response = await fetch("/v1/model", { headers: headers() });
  if (!response.ok) {
    $("about").textContent = "The model is not available: " + (await response.json()).error;
    return;
  }
  const model = await response.json();
  state.model = model;
  const joints = model.skeleton.joints;
  $("about").textContent =
    `${model.backend} model, ${model.stages} stage(s), ${joints.length} joints` +
    (model.people_model ? ", with a people model (every person)" : " (one person per image)");
  $("stage").innerHTML = "";
  for (let t = 1; t <= model.stages; t++) {
    $("stage").add(new Option("stage " + t, String(t - 1), t === model.stages, t === model.stages));
  }
  joints.forEach((name, j) => $("joint").add(new Option(name, String(j))));
}

function colourOf(a, b) {
  const names = state.model.skeleton.joints[a] + state.model.skeleton.joints[b];
  if ((names.match(/r_|right/g) || []).length === 2) return "rgb(230,60,40)";
  if ((names.match(/l_|left/g) || []).length === 2) return "rgb(40,120,230)";
  return "rgb(240,200,40)";
}

function drawBeliefs(entry, stage, joint) {
  const maps = entry.stages[stage];
  const g = entry.grid;
  const heat = new Float32Array(g * g);
  const chosen = joint === "all" ? maps.map((_, j) => j) : [Number(joint)];
  for (const j of chosen) {
    maps[j].forEach((row, v) => row.forEach((value, u) => {
      heat[v * g + u] = Math.max(heat[v * g + u], value);
    }));
  }
  const small = document.createElement("canvas");
  small.width = small.height = g;
  const pixels = small.getContext("2d").createImageData(g, g);
  heat.forEach((value, k) => {
    pixels.data.set([255, Math.round(200 * (1 - value)), 0, Math.round(200 * value)], 4 * k);
  });
  small.getContext("2d").putImageData(pixels, 0, 0);
  const [x, y, side] = entry.square;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, x, y, side, side);
}

function draw() {
  const { source, result, model } = state;
  if (!source || !model) return;
  canvas.width = source.width;
  canvas.height = source.height;
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  if (!result) return;
  const stage = Number($("stage").value || model.stages - 1);
  const joint = $("joint").value;
  const width = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 120));
  const drawn = [];
  result.people.forEach((person, k) => {
    const points = person.stages ? person.stages[stage] : person.keypoints;
    if (joint !== "none" && result.beliefs) drawBeliefs(result.beliefs[k], stage, joint);
    ctx.lineWidth = width;
    for (const [a, b] of model.limbs) {
      ctx.strokeStyle = colourOf(a, b);
      ctx.beginPath();
      ctx.moveTo(points[a][0], points[a][1]);
      ctx.lineTo(points[b][0], points[b][1]);
      ctx.stroke();
    }
    ctx.fillStyle = "white";
    for (const [x, y] of points) {
      ctx.beginPath();
      ctx.arc(x, y, width + 1, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (result.people.length > 1) {
      const [x, y, w, h] = person.box;
      ctx.strokeStyle = "rgb(90,220,120)";
      ctx.lineWidth = 1;
      ctx.strokeRect(x, y, w, h);
    }
    drawn.push(points.map(([x, y]) => [Math.round(x), Math.round(y)]));
  });
  window.pmDrawn = { stage, people: drawn };
}

async function predict(blob) {
  const sent = performance.now();
  const response = await fetch("/v1/predict?stages=true&beliefs=" + ($("joint").value !== "none"), {
    method: "POST",
    headers: { ...headers(), "Content-Type": blob.type || "image/jpeg" },
    body: blob,
  });
  const doc = await response.json();
  if (!response.ok) throw new Error(doc.error || response.statusText);
  const now = performance.now();
  state.times.push(now);
  state.times = state.times.filter((t) => now - t < 2000);
  const fps = state.times.length / 2;
  $("stats").textContent =
    `${doc.people.length} person(s), latency ${(now - sent).toFixed(0)} ms ` +
    `(model ${doc.model_ms} ms, batch ${doc.batch})` + (state.camera ? `, ${fps.toFixed(1)} frames/s` : "");
  return doc;
}

async function showImage(file) {
  stopCamera();
  const image = await createImageBitmap(file);
  state.source = image;
  state.result = null;
  draw();
  try {
    $("error").textContent = "";
    state.result = await predict(file);
    draw();
    window.pmFramesDrawn++;
  } catch (e) {
    $("error").textContent = String(e.message || e);
  }
}

function stopCamera() {
  if (state.camera) state.camera.getTracks().forEach((track) => track.stop());
  state.camera = null;
  $("camera").textContent = "Start the webcam";
}

async function startCamera() {
  if (state.camera) return stopCamera();
  try {
    state.camera = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (e) {
    $("error").textContent = "The webcam could not be opened: " + e;
    return;
  }
  $("camera").textContent = "Stop the webcam";
  const video = $("video");
  video.srcObject = state.camera;
  await video.play();
  const frame = document.createElement("canvas");
  // One request at a time: the next frame is taken when the answer comes, so the newest
  // frame is always the one sent, however slow the server.
  while (state.camera) {
    frame.width = video.videoWidth || 640;
    frame.height = video.videoHeight || 480;
    frame.getContext("2d").drawImage(video, 0, 0, frame.width, frame.height);
    const blob = await new Promise((done) => frame.toBlob(done, "image/jpeg", 0.85));
    try {
      const result = await predict(blob);
      state.source = frame;
      state.result = result;
      draw();
      window.pmFramesDrawn++;
      $("error").textContent = "";
    } catch (e) {
      $("error").textContent = String(e.message || e);
      await new Promise((done) => setTimeout(done, 500));
    }
  }
}

$("file").addEventListener("change", (e) => e.target.files[0] && showImage(e.target.files[0]));
$("camera").addEventListener("click", startCamera);
$("stage").addEventListener("change", draw);
$("joint").addEventListener("change", draw);
$("token").addEventListener("change", () => {
  localStorage.setItem("pmToken", $("token").value);
  loadModel();
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) showImage(e.dataTransfer.files[0]);
});
drop.addEventListener("click", () => $("file").click());
loadModel();
