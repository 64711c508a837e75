// Where frames come from: the webcam (getUserMedia) or a local video file, both played in
// a <video> element, and how one is taken: drawn to a canvas at the session's frame size,
// then encoded as an image file the server decodes (PNG, JPEG or WebP, protocol §3).

// why 10 s: a local file's header and first frame load in well under a second, and a browser
// that has neither loaded nor refused one by then does not (a cut MP4 can leave a seek unanswered)
const LOAD_TIMEOUT_MS = 10000;
// what a MediaError's code means to a user (HTML's MediaError codes 1 to 4)
const MEDIA_ERRORS = {
  1: "loading it was aborted",
  2: "reading the file failed",
  3: "decoding it failed",
  4: "this browser cannot open its container or codecs",
};

/** The browser cannot use this video; `reason` says why, in a user's words. */
export class UnplayableError extends Error {
  constructor(reason) {
    super(`cannot play this video: ${reason}`);
    this.reason = reason;
  }
}

/** The element's error (the browser's own message included) as an UnplayableError. */
export function mediaError(video) {
  const meaning = MEDIA_ERRORS[video.error?.code] ?? "the browser refused it";
  return new UnplayableError(video.error?.message ? `${meaning} (${video.error.message})` : meaning);
}

export class VideoSource {
  constructor(video) {
    this.video = video;
    this.kind = null; // "camera" or "file"
    this.objectUrl = null;
    this.stream = null;
  }

  async openCamera() {
    this.release();
    this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    this.kind = "camera";
    this.video.srcObject = this.stream;
    await this.ready();
    const shown = this.presented();
    await this.video.play();
    await shown;
  }

  async openFile(file) {
    this.release();
    this.objectUrl = URL.createObjectURL(file);
    this.video.src = this.objectUrl;
    await this.ready();
    // why: a file whose video the browser cannot decode may still load, as its audio alone
    if (!this.video.videoWidth) throw new UnplayableError("this browser decodes no video track in it");
    this.kind = "file"; // why only now: a file that cannot play is no source, and Start stays off
    await this.rewind();
  }

  /** Back to the file's first frame, paused: what the user paints on, and where streaming starts. */
  async rewind() {
    if (this.kind !== "file") return;
    this.video.pause();
    const shown = this.presented();
    const seeked = settle(this.video, "seeked", "seeking to its first frame");
    this.video.currentTime = 0; // a seek even where it is 0 already: it presents the frame
    await Promise.all([seeked, shown]);
  }

  /**
   * Resolves once a frame is presented. Why: "loadeddata" and "seeked" may come before the
   * frame can be drawn (headless Chromium draws a transparent canvas then); the timeout
   * covers browsers without requestVideoFrameCallback.
   */
  presented(timeoutMs = 1000) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.video.requestVideoFrameCallback?.(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  ready() {
    // why muted: browsers refuse to autoplay a video with sound without a user gesture
    this.video.muted = true;
    this.video.playsInline = true;
    if (this.video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA) return Promise.resolve();
    return settle(this.video, "loadeddata", "loading it");
  }

  get width() {
    return this.video.videoWidth;
  }

  get height() {
    return this.video.videoHeight;
  }

  /**
   * Call onFrame(mediaTime) for each new video frame while the video plays, until stopped.
   * requestVideoFrameCallback fires at most once per rendering step, so a browser too busy
   * to render in time shows frames no callback sees. Where it is missing, animation frames
   * stand in and repeated frames are skipped by their time.
   */
  watch(onFrame) {
    let active = true;
    const video = this.video;
    if ("requestVideoFrameCallback" in video) {
      const next = (_now, metadata) => {
        if (!active) return;
        onFrame(metadata.mediaTime);
        video.requestVideoFrameCallback(next);
      };
      video.requestVideoFrameCallback(next);
    } else {
      let last = -1;
      const next = () => {
        if (!active) return;
        if (video.currentTime !== last) {
          last = video.currentTime;
          onFrame(last);
        }
        requestAnimationFrame(next);
      };
      requestAnimationFrame(next);
    }
    return () => {
      active = false;
    };
  }

  release() {
    this.video.pause();
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.video.removeAttribute("src");
    this.video.srcObject = null;
    this.stream = null;
    this.objectUrl = null;
    this.kind = null;
  }
}

/** The session's frame size: the video's, scaled down (never up) to maxWidth, even sides. */
export function frameSize(width, height, maxWidth) {
  const scale = Math.min(1, maxWidth / width);
  const even = (n) => Math.max(2, 2 * Math.round((n * scale) / 2));
  return { width: even(width), height: even(height) };
}

/**
 * The video's current frame at the session size, on a new canvas: shown, overlaid on and
 * encoded later. Drawn at once, so it is the frame presented now, whatever comes next.
 */
export function capture(video, size) {
  const canvas = document.createElement("canvas");
  canvas.width = size.width;
  canvas.height = size.height;
  canvas.getContext("2d").drawImage(video, 0, 0, size.width, size.height);
  return canvas;
}

/** A captured frame as the bytes of an image file (PNG, JPEG or WebP, §3). */
export async function encode(canvas, type = "image/png", quality = 0.9) {
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, type, quality));
  if (!blob) throw new Error(`this browser cannot encode ${type}`);
  return blob.arrayBuffer();
}

/**
 * Resolves on the video's `event`; rejects on its error, or when the browser has said
 * neither in LOAD_TIMEOUT_MS. Why both: a cut file can error after "loadeddata", leaving
 * the seek that follows unanswered. `doing` names the step for the timeout's message.
 */
function settle(video, event, doing) {
  if (video.error) return Promise.reject(mediaError(video)); // why: an element errors once
  return new Promise((resolve, reject) => {
    const listening = new AbortController();
    const end = (settleWith) => {
      clearTimeout(timer);
      listening.abort();
      settleWith();
    };
    const silent = `the browser neither played nor refused it in ${LOAD_TIMEOUT_MS / 1000} s (${doing})`;
    const timer = setTimeout(() => end(() => reject(new UnplayableError(silent))), LOAD_TIMEOUT_MS);
    video.addEventListener(event, () => end(resolve), { signal: listening.signal });
    video.addEventListener("error", () => end(() => reject(mediaError(video))), { signal: listening.signal });
  });
}
