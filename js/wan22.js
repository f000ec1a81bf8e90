// ComfyUI-Wan22 frontend extension. ComfyUI serves ./js (WEB_DIRECTORY) and loads every .js file in
// it; this is the one that registers the extension, the others are modules it imports.
//  - Wan22Sampler: a plot of the timestep schedule with the expert boundary and switch step, and the
//    active expert and step during a run (wan22_sampler.js).
//  - Wan22VideoCombine: its video plays inline on the node (wan22_video.js).
import { app } from "../../scripts/app.js";
import { attachSchedulePlot, listenToSamplerEvents, SAMPLER_NODE } from "./wan22_sampler.js";
import { attachVideoPreview, COMBINE_NODE } from "./wan22_video.js";

app.registerExtension({
  name: "comfyui-wan22",
  setup() {
    listenToSamplerEvents(app);
  },
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === SAMPLER_NODE) attachSchedulePlot(nodeType);
    if (nodeData.name === COMBINE_NODE) attachVideoPreview(nodeType);
  },
});
