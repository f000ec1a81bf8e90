// Wan22VideoCombine's result, played inline on the node.
//
// The node's UI output uses ComfyUI's standard preview keys ({images: [file], animated: [bool]}), so
// the frontend itself puts a <video> (mp4/webm, animated: true) or an animated <img> (webp) on the
// node. This module adds what is missing:
//  - the video starts playing, muted and looping, as soon as it is there (the frontend shows a
//    paused player);
//  - a GIF comes with animated: false (the frontend would hand an animated GIF to a <video>, which
//    cannot play it), so the frontend draws it on the canvas, where it only moves when the canvas
//    redraws; once it is loaded we switch the node to the frontend's animated <img> preview.
// node.wan22Video says what is shown: {filename, kind: "video"|"gif"|"image", playing}.

import { chain } from "./wan22_chain.js";

export const COMBINE_NODE = "Wan22VideoCombine";
const VIDEO_EXTENSIONS = /\.(mp4|webm|mkv|mov|m4v)$/i;

function shownFile(output) {
  const files = output?.images ?? [];
  return files.find((f) => typeof f?.filename === "string") ?? null;
}

function kindOf(filename) {
  if (VIDEO_EXTENSIONS.test(filename)) return "video";
  if (/\.gif$/i.test(filename)) return "gif";
  return "image";
}

function loadedFrom(element, filename) {
  const src = element?.currentSrc || element?.src;
  if (!src) return false;
  return new URL(src, window.location.href).searchParams.get("filename") === filename;
}

// The frontend's GIF <img>, once loaded, moves to its animated (DOM) preview.
function animateGif(node) {
  const shown = node.wan22Video;
  if (!shown || shown.kind !== "gif" || shown.playing) return;
  if (!loadedFrom(node.imgs?.[0], shown.filename)) return;
  node.animatedImages = true;
  shown.playing = true;
  node.setDirtyCanvas?.(true, false);
}

// The frontend's <video> for this run's file, once it has loaded it.
function nativeVideo(node, filename) {
  const video = node.videoContainer?.querySelector("video");
  return loadedFrom(video, filename) ? video : null;
}

function startPlayback(node) {
  const shown = node.wan22Video;
  if (!shown || shown.kind !== "video" || shown.playing) return;
  const video = nativeVideo(node, shown.filename);
  if (!video) return;
  video.muted = true; // browsers start only muted media without a click
  video.loop = true;
  video.autoplay = true;
  video.play?.().catch(() => {});
  shown.playing = true;
}

/** Hooks the combine node's results (called from beforeRegisterNodeDef). */
export function attachVideoPreview(nodeType) {
  chain(nodeType.prototype, "onExecuted", function (output) {
    const file = shownFile(output);
    if (!file) return;
    const kind = kindOf(file.filename);
    this.wan22Video = { filename: file.filename, kind, playing: kind === "image" };
  });
  // The frontend loads the media asynchronously and redraws the node when it is in.
  chain(nodeType.prototype, "onDrawForeground", function () {
    startPlayback(this);
    animateGif(this);
  });
}
