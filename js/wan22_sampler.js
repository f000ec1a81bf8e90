// The Wan22Sampler node's schedule plot and run status.
//
// The plot asks the server for the schedule (GET /wan22/schedule: the same code the sampler runs)
// whenever a widget that shapes it changes, debounced; never on a timer. During a run the server's
// "wan22.sampler.step" / "wan22.sampler.expert" messages move a marker along the plot and name the
// active expert; the run's end (success, error or interrupt) leaves a finished/stopped line.
//
// For tests and other extensions, node.wan22Plot holds what was drawn last:
// {state: "plot"|"ignored"|"error"|"loading", label, title, steps, switch_step, boundary, shift,
//  scheduler, denoise, kind, timesteps, run, geometry (where it drew, see drawSchedulePlot)}.

import { api } from "../../scripts/api.js";
import { chain } from "./wan22_chain.js";
import { drawSchedulePlot, EXPERT_LABEL } from "./wan22_schedule_plot.js";

export const SAMPLER_NODE = "Wan22Sampler";
const PLOT_WIDGET = "wan22_schedule_plot";
const PLOT_HEIGHT = 200;
const DEBOUNCE_MS = 150;
// The widgets that shape the schedule (cfg does not).
const SCHEDULE_WIDGETS = ["steps", "shift", "boundary", "scheduler", "denoise", "use_release_defaults"];
const KIND_NAMES = { t2v: "T2V-A14B", i2v: "I2V-A14B", ti2v: "TI2V-5B" };

/** The "switch after step 26 of 40" line for a schedule answer. */
export function switchLabel(answer) {
  const n = answer.timesteps?.length ?? 0;
  const k = answer.switch_step;
  if (n === 0) return "denoise 0: no step to run";
  if (k === null || k === undefined) return `one model for all ${n} steps (no expert switch)`;
  if (k <= 0) return `no high-noise step: the low-noise expert runs all ${n} steps`;
  if (k >= n) return `no switch: the high-noise expert runs all ${n} steps`;
  return `switch after step ${k} of ${n}`;
}

function titleOf(answer) {
  const parts = [];
  if (answer.use_release_defaults) parts.push(`${KIND_NAMES[answer.kind] ?? answer.kind} release values:`);
  parts.push(`shift ${answer.shift}`);
  if (answer.boundary !== null && answer.boundary !== undefined) parts.push(`· boundary ${answer.boundary}`);
  parts.push(`· ${answer.scheduler}`);
  if (answer.denoise < 1) parts.push(`· denoise ${answer.denoise}`);
  if (answer.use_release_defaults) parts.push("(widgets ignored)");
  return parts.join(" ");
}

class SchedulePlot {
  constructor(node) {
    this.node = node;
    this.answer = null;
    this.error = null;
    this.kind = null; // the loaded model's kind, known from the last run's summary
    this.run = null;
    this.requestedKey = null;
    this.requestSerial = 0;
    this.timer = null;

    this.canvas = document.createElement("canvas");
    this.canvas.style.cssText = "width:100%;height:100%;display:block;";
    const container = document.createElement("div");
    container.className = "wan22-schedule-plot";
    container.style.cssText = `width:100%;height:100%;min-height:${PLOT_HEIGHT - 20}px;`;
    container.appendChild(this.canvas);
    this.widget = node.addDOMWidget(PLOT_WIDGET, "wan22-schedule-plot", container, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => PLOT_HEIGHT,
    });
    this.widget.serialize = false; // not part of the workflow's widgets_values either
    new ResizeObserver(() => this.draw()).observe(this.canvas);
    this.publish({ state: "loading", label: "", title: "loading the schedule…" });
  }

  widgetValues() {
    const values = {};
    for (const name of SCHEDULE_WIDGETS) {
      const widget = this.node.widgets?.find((w) => w.name === name);
      if (widget) values[name] = widget.value;
    }
    return values;
  }

  query() {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(this.widgetValues())) params.set(name, String(value));
    if (this.kind) params.set("kind", this.kind);
    return params.toString();
  }

  /** Called on every canvas draw and widget change: fetches only when the inputs changed. */
  check() {
    const key = this.query();
    if (key === this.requestedKey) return;
    this.requestedKey = key;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fetch(key), DEBOUNCE_MS);
  }

  async fetch(key) {
    const serial = ++this.requestSerial;
    let answer = null;
    let error = null;
    try {
      const response = await api.fetchApi(`/wan22/schedule?${key}`);
      const body = await response.json();
      if (response.ok) answer = body;
      else error = body.error || `the schedule route answered HTTP ${response.status}`;
    } catch (e) {
      error = `could not reach the schedule route: ${e}`;
    }
    if (serial !== this.requestSerial) return; // a newer request is on its way
    this.answer = answer;
    this.error = error;
    this.draw();
  }

  view() {
    if (this.error) return { state: "error", title: "schedule", error: this.error };
    const a = this.answer;
    if (!a) return { state: "loading", title: "loading the schedule…" };
    if (a.timesteps === null) {
      return {
        state: "ignored",
        title: "use_release_defaults is on",
        message:
          `${a.widgets_ignored.join(", ")} are ignored: the loaded model's release values are used ` +
          "(T2V-A14B shift 12 / boundary 0.875, I2V-A14B 5 / 0.9, TI2V-5B 5). Run once to plot them, " +
          "or turn use_release_defaults off to plot the widgets.",
      };
    }
    return {
      state: "plot",
      title: titleOf(a),
      label: switchLabel(a),
      timesteps: a.timesteps,
      switchStep: a.switch_step,
      boundary: a.boundary,
    };
  }

  draw() {
    const view = this.view();
    view.run = this.run;
    const geometry = this.canvas.isConnected ? drawSchedulePlot(this.canvas, view) : null;
    const a = this.answer;
    this.publish({
      state: view.state,
      title: view.title,
      label: view.label ?? view.message ?? view.error ?? "",
      steps: a?.timesteps?.length ?? null,
      switch_step: a?.switch_step ?? null,
      boundary: a?.boundary ?? null,
      shift: a?.shift ?? null,
      scheduler: a?.scheduler ?? null,
      denoise: a?.denoise ?? null,
      kind: a?.kind ?? null,
      timesteps: a?.timesteps ?? null,
      run: this.run ? { ...this.run } : null,
      geometry,
    });
  }

  publish(state) {
    this.node.wan22Plot = state;
    this.node.setDirtyCanvas?.(true, false);
  }

  // --- a run ------------------------------------------------------------------------------------
  // (The last run's line stays until a new step arrives: a cached sampler does not run again.)
  runStep({ step, total, expert }) {
    this.run = { state: "running", step, total, expert };
    this.draw();
  }

  runExpert({ expert }) {
    this.run = { ...(this.run ?? { step: 0, total: null }), state: "running", expert };
    this.draw();
  }

  /** The node's executed output: the run's summary (kind, steps, switch step...). */
  runFinished(summary) {
    if (!summary) return;
    const kindChanged = summary.kind && summary.kind !== this.kind;
    this.kind = summary.kind || this.kind;
    const k = summary.switch_step;
    const n = summary.steps;
    let text = `finished: ${n} steps on ${KIND_NAMES[summary.kind] ?? summary.kind}`;
    if (summary.boundary !== null && summary.boundary !== undefined && n > 0) {
      const parts = [];
      if (k > 0) parts.push(`${EXPERT_LABEL.high} 1-${k}`);
      if (k < n) parts.push(`${EXPERT_LABEL.low} ${k + 1}-${n}`);
      text += `, ${parts.join(", ")}`;
      if (summary.switch_seconds) text += ` (switch ${summary.switch_seconds.toFixed(1)} s)`;
    }
    this.run = { state: "finished", step: n, total: n, text };
    if (kindChanged) this.check(); // release values of the now known kind
    this.draw();
  }

  /** The prompt ended: a run still marked running stopped early (error or interrupt). */
  promptEnded(ok) {
    if (this.run?.state !== "running") return;
    this.run = ok ? { ...this.run, state: "finished", text: null } : { ...this.run, state: "stopped" };
    this.draw();
  }

  removed() {
    clearTimeout(this.timer);
  }
}

/** Adds the plot to every Wan22Sampler node (called from beforeRegisterNodeDef). */
export function attachSchedulePlot(nodeType) {
  chain(nodeType.prototype, "onNodeCreated", function () {
    this.wan22 = new SchedulePlot(this);
    const [width, height] = this.computeSize();
    this.setSize([Math.max(this.size[0], 360, width), Math.max(this.size[1], height)]);
    this.wan22.check();
  });
  chain(nodeType.prototype, "onWidgetChanged", function () {
    this.wan22?.check();
  });
  // Catches every other way a widget changes (a loaded workflow, a linked primitive, an extension).
  chain(nodeType.prototype, "onDrawForeground", function () {
    this.wan22?.check();
  });
  chain(nodeType.prototype, "onExecuted", function (output) {
    this.wan22?.runFinished(output?.wan22_sampler?.[0]);
  });
  chain(nodeType.prototype, "onRemoved", function () {
    this.wan22?.removed();
  });
}

// --- server messages --------------------------------------------------------------------------

// A node id from the server: "12", or "5:12" for a node inside subgraph node 5.
function nodeByExecutionId(app, id) {
  if (id === null || id === undefined) return null;
  let graph = app.rootGraph ?? app.graph;
  let node = null;
  for (const part of String(id).split(":")) {
    node = graph?.getNodeById(part) ?? null;
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

function samplerPlots(app) {
  const plots = [];
  const visit = (graph) => {
    for (const node of graph?.nodes ?? []) {
      if (node.wan22 instanceof SchedulePlot) plots.push(node.wan22);
      if (node.subgraph) visit(node.subgraph);
    }
  };
  visit(app.rootGraph ?? app.graph);
  return plots;
}

/** Listens to the sampler's messages and the prompt's end (called once, from setup). */
export function listenToSamplerEvents(app) {
  api.addEventListener("wan22.sampler.step", ({ detail }) => {
    nodeByExecutionId(app, detail.node)?.wan22?.runStep(detail);
  });
  api.addEventListener("wan22.sampler.expert", ({ detail }) => {
    nodeByExecutionId(app, detail.node)?.wan22?.runExpert(detail);
  });
  api.addEventListener("execution_success", () => samplerPlots(app).forEach((p) => p.promptEnded(true)));
  api.addEventListener("execution_error", () => samplerPlots(app).forEach((p) => p.promptEnded(false)));
  api.addEventListener("execution_interrupted", () => samplerPlots(app).forEach((p) => p.promptEnded(false)));
}
