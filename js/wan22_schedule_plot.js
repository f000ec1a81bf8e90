// Draws a Wan2.2 sampler's timestep schedule on a <canvas>: one point per step (high-noise expert
// orange, low-noise expert blue), the expert boundary as a horizontal line, the switch step as a
// vertical line with its label, and the running step while a prompt runs. Pure drawing: the numbers
// come from the server (/wan22/schedule), never computed here.

export const COLORS = {
  background: "#1b1b1f",
  frame: "#3a3a44",
  text: "#d8d8d8",
  dim: "#8a8a94",
  high: "#f0a040",
  low: "#4fa3f7",
  boundary: "#e05a5a",
  switch: "#f2f2f2",
  error: "#ff7070",
};

const FONT = "11px sans-serif";
const BOLD = "bold 12px sans-serif";
const LINE = 15; // px per text row
const PAD = 8;
const AXIS_LEFT = 34;
const AXIS_BOTTOM = 16;
const T_MAX = 1000; // the DiT's timestep range (sigma * 1000)

export const EXPERT_LABEL = { high: "high-noise expert", low: "low-noise expert" };

/**
 * view: {
 *   title: string, label: string, message?: string, error?: string,
 *   timesteps?: number[], switchStep?: number|null, boundary?: number|null,
 *   run?: {state: "running"|"finished"|"stopped", step?, total?, expert?, text?}
 * }
 * Returns where it drew, in CSS pixels of the canvas (null parts were not drawn):
 * {area: {left, top, right, bottom}, points: [[x, y], ...], boundaryY, switchX}.
 */
export function drawSchedulePlot(canvas, view) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, canvas.clientWidth);
  const height = Math.max(1, canvas.clientHeight);
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  roundedRect(ctx, 0.5, 0.5, width - 1, height - 1, 6);
  ctx.fillStyle = COLORS.background;
  ctx.fill();
  ctx.strokeStyle = COLORS.frame;
  ctx.stroke();

  const nothing = { area: null, points: [], boundaryY: null, switchX: null };
  let y = PAD + 10;
  y = text(ctx, view.title || "", PAD, y, width - 2 * PAD, COLORS.dim, FONT);
  if (view.error) {
    text(ctx, view.error, PAD, y, width - 2 * PAD, COLORS.error, FONT, 4);
    return nothing;
  }
  if (view.message) {
    text(ctx, view.message, PAD, y, width - 2 * PAD, COLORS.text, FONT, 6);
    return nothing;
  }
  y = text(ctx, view.label || "", PAD, y, width - 2 * PAD, COLORS.text, BOLD);
  if (view.run) y = text(ctx, runText(view.run), PAD, y, width - 2 * PAD, runColor(view.run), FONT);

  const area = { left: AXIS_LEFT, top: y - 4, right: width - PAD, bottom: height - AXIS_BOTTOM };
  if (area.bottom - area.top < 20 || !view.timesteps?.length) return nothing;
  const n = view.timesteps.length;
  drawAxes(ctx, area, n);
  // Points last: they stay visible on top of the lines.
  const boundaryY = drawBoundary(ctx, area, view.boundary);
  const switchX = drawSwitch(ctx, area, view.switchStep, n);
  const points = drawSteps(ctx, area, view.timesteps, view.switchStep, view.run);
  return { area, points, boundaryY, switchX };
}

function runText(run) {
  if (run.text) return run.text;
  const who = EXPERT_LABEL[run.expert] || "sampling";
  if (run.state === "running") return `running: ${who} · step ${run.step ?? 0}/${run.total ?? "?"}`;
  if (run.state === "stopped") return `stopped at step ${run.step ?? 0}/${run.total ?? "?"} (${who})`;
  return `finished: ${run.total ?? run.step} steps`;
}

function runColor(run) {
  if (run.state === "running") return COLORS[run.expert] || COLORS.text;
  if (run.state === "stopped") return COLORS.error;
  return COLORS.dim;
}

// Step i (0-based) of n sits at the middle of its column.
function stepX(area, i, n) {
  return area.left + ((i + 0.5) / n) * (area.right - area.left);
}

// A 1px line on a pixel's centre is one pixel wide, not two half-tone ones.
function crisp(v) {
  return Math.round(v) + 0.5;
}

function timestepY(area, t) {
  return area.bottom - (t / T_MAX) * (area.bottom - area.top);
}

function drawAxes(ctx, area, n) {
  ctx.strokeStyle = COLORS.frame;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(area.left, area.top);
  ctx.lineTo(area.left, area.bottom);
  ctx.lineTo(area.right, area.bottom);
  ctx.stroke();
  ctx.fillStyle = COLORS.dim;
  ctx.font = FONT;
  ctx.textAlign = "right";
  for (const t of [0, 500, 1000]) ctx.fillText(String(t), area.left - 4, timestepY(area, t) + 4);
  ctx.textAlign = "center";
  ctx.fillText("1", stepX(area, 0, n), area.bottom + 12);
  if (n > 1) ctx.fillText(String(n), stepX(area, n - 1, n), area.bottom + 12);
  ctx.fillText("step", (area.left + area.right) / 2, area.bottom + 12);
  ctx.textAlign = "left";
}

function drawBoundary(ctx, area, boundary) {
  if (boundary === null || boundary === undefined) return null;
  const y = crisp(timestepY(area, boundary * T_MAX));
  ctx.save();
  ctx.strokeStyle = COLORS.boundary;
  ctx.setLineDash([5, 4]);
  ctx.beginPath();
  ctx.moveTo(area.left, y);
  ctx.lineTo(area.right, y);
  ctx.stroke();
  ctx.restore();
  // Under the line on the left: the high-noise steps run above it there, none below.
  ctx.fillStyle = COLORS.boundary;
  ctx.font = FONT;
  ctx.fillText(`boundary t=${+(boundary * T_MAX).toFixed(1)}`, area.left + 4, y + 13);
  return y;
}

function drawSwitch(ctx, area, k, n) {
  if (k === null || k === undefined || k <= 0 || k >= n) return null;
  const x = crisp((stepX(area, k - 1, n) + stepX(area, k, n)) / 2);
  ctx.save();
  ctx.strokeStyle = COLORS.switch;
  ctx.setLineDash([2, 3]);
  ctx.beginPath();
  ctx.moveTo(x, area.top);
  ctx.lineTo(x, area.bottom);
  ctx.stroke();
  ctx.restore();
  ctx.fillStyle = COLORS.switch;
  ctx.font = FONT;
  const caption = `${k} | ${k + 1}`;
  const w = ctx.measureText(caption).width;
  ctx.fillText(caption, Math.min(x + 4, area.right - w), area.top + 10);
  return x;
}

function drawSteps(ctx, area, timesteps, k, run) {
  const n = timesteps.length;
  const r = n > 80 ? 1.5 : 2.5;
  const high = k === null || k === undefined ? n : k;
  ctx.strokeStyle = COLORS.frame;
  ctx.beginPath();
  timesteps.forEach((t, i) => {
    const x = stepX(area, i, n);
    const y = timestepY(area, t);
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.stroke();
  const points = timesteps.map((t, i) => [stepX(area, i, n), timestepY(area, t)]);
  points.forEach(([x, y], i) => {
    ctx.fillStyle = i < high ? COLORS.high : COLORS.low;
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fill();
  });
  // The step that just ran, while the prompt runs.
  if (run?.state === "running" && run.step >= 1 && run.step <= n) {
    const i = run.step - 1;
    ctx.strokeStyle = COLORS[run.expert] || COLORS.text;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(stepX(area, i, n), timestepY(area, timesteps[i]), r + 4, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.lineWidth = 1;
  }
  return points;
}

// Writes text wrapped to maxWidth (at most maxLines rows); returns the y of the next row.
function text(ctx, value, x, y, maxWidth, color, font, maxLines = 2) {
  ctx.fillStyle = color;
  ctx.font = font;
  ctx.textAlign = "left";
  const words = String(value).split(" ");
  let line = "";
  let lines = 0;
  for (const word of words) {
    const next = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(next).width > maxWidth && lines < maxLines - 1) {
      ctx.fillText(line, x, y);
      y += LINE;
      lines += 1;
      line = word;
    } else {
      line = next;
    }
  }
  if (line) {
    ctx.fillText(line, x, y);
    y += LINE;
  }
  return y;
}

function roundedRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.moveTo(x + r, y);
  ctx.arcTo(x + w, y, x + w, y + h, r);
  ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r);
  ctx.arcTo(x, y, x + w, y, r);
  ctx.closePath();
}
