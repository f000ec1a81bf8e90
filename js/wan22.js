// ComfyUI-Wan22 frontend extension. Served by ComfyUI from WEB_DIRECTORY (./js).
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "comfyui-wan22",
});
