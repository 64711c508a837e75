// The first-frame mask editor: a brush paints the chosen object id (0 erases) into an index
// mask the size of the frame, shown as a coloured overlay on that frame.

import { drawOverlay, idsIn } from "./masks.js";

export class Painter {
  constructor(canvas, onChange = () => {}) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d", { willReadFrequently: true });
    this.onChange = onChange;
    this.frame = null; // the frame painted on: a canvas at the session's frame size
    this.mask = null;
    this.objectId = 1;
    this.radius = 6; // in frame pixels
    this.last = null; // the previous brush position of the stroke in progress
    canvas.addEventListener("pointerdown", (event) => this.down(event));
    canvas.addEventListener("pointermove", (event) => this.move(event));
    for (const kind of ["pointerup", "pointercancel"]) canvas.addEventListener(kind, () => this.up());
  }

  /** Start over on a new first frame, with an empty mask. */
  load(frame) {
    this.frame = frame;
    this.canvas.width = frame.width;
    this.canvas.height = frame.height;
    this.mask = { width: frame.width, height: frame.height, ids: new Uint8Array(frame.width * frame.height) };
    this.render();
  }

  clear() {
    if (!this.mask) return;
    this.mask.ids.fill(0);
    this.render();
  }

  get objects() {
    return this.mask ? idsIn(this.mask) : [];
  }

  /** Pointer position → frame pixel: the canvas is shown scaled to fit the page. */
  toFrame(event) {
    const box = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) / box.width) * this.canvas.width,
      y: ((event.clientY - box.top) / box.height) * this.canvas.height,
    };
  }

  down(event) {
    if (!this.mask || event.button !== 0) return;
    this.canvas.setPointerCapture(event.pointerId); // why: keep the stroke when it leaves the canvas
    this.last = this.toFrame(event);
    this.stamp(this.last);
    this.render();
  }

  move(event) {
    if (!this.last) return;
    const point = this.toFrame(event);
    // why stamps along the segment: pointer events are sparse when the hand moves fast
    const distance = Math.hypot(point.x - this.last.x, point.y - this.last.y);
    const steps = Math.max(1, Math.ceil(distance / Math.max(1, this.radius / 2)));
    for (let i = 1; i <= steps; i++) {
      const t = i / steps;
      this.stamp({ x: this.last.x + (point.x - this.last.x) * t, y: this.last.y + (point.y - this.last.y) * t });
    }
    this.last = point;
    this.render();
  }

  up() {
    if (!this.last) return;
    this.last = null;
    this.onChange(this.objects);
  }

  stamp({ x, y }) {
    const { width, height, ids } = this.mask;
    const r = this.radius;
    for (let row = Math.max(0, Math.floor(y - r)); row <= Math.min(height - 1, Math.ceil(y + r)); row++) {
      for (let col = Math.max(0, Math.floor(x - r)); col <= Math.min(width - 1, Math.ceil(x + r)); col++) {
        // pixel centres inside the disc
        if ((col + 0.5 - x) ** 2 + (row + 0.5 - y) ** 2 <= r * r) ids[row * width + col] = this.objectId;
      }
    }
  }

  render() {
    this.context.drawImage(this.frame, 0, 0);
    drawOverlay(this.context, this.mask);
  }
}
