// What this browser can play, and what to tell a user whose file it cannot: the formats it
// answers for (HTMLMediaElement.canPlayType), and for anything else, AVI included, the
// command-line client, which decodes any file FFmpeg reads.

// why these: the containers and codecs browsers ship; codec strings as RFC 6381 writes them
// (H.264 constrained baseline; AV1 main profile, level 3.1, 8 bits)
const PROBES = [
  ["WebM (VP8)", 'video/webm; codecs="vp8"'],
  ["WebM (VP9)", 'video/webm; codecs="vp9"'],
  ["WebM (AV1)", 'video/webm; codecs="av01.0.05M.08"'],
  ["MP4 (H.264)", 'video/mp4; codecs="avc1.42E01E"'],
  ["MP4 (AV1)", 'video/mp4; codecs="av01.0.05M.08"'],
  ["Ogg (Theora)", 'video/ogg; codecs="theora"'],
];
const AVI_TYPES = new Set(["video/avi", "video/msvideo", "video/x-msvideo"]);

/** The formats this browser says it plays ("probably" or "maybe"), by name. */
export function playableFormats(video) {
  return PROBES.filter(([, type]) => video.canPlayType(type) !== "").map(([name]) => name);
}

export function isAvi(file) {
  return AVI_TYPES.has(file.type) || /\.avi$/i.test(file.name);
}

/**
 * Why `file` cannot be used, what this browser plays, and the command line that sends it
 * as it is. `reason` is what the browser said (an UnplayableError's), `formats` those above.
 */
export function explainUnplayable(file, reason, { formats, task, server }) {
  const why = isAvi(file) ? "browsers cannot play AVI files" : reason;
  const plays = formats.length ? `This browser plays ${formats.join(", ")}.` : "This browser names no format it plays.";
  const cli = `The command-line client decodes with FFmpeg: ${cliCommand(file.name, task, server)}`;
  return `cannot play ${JSON.stringify(file.name)}: ${why}. ${plays} ${cli}`;
}

/** The CLI's command for `task` on a file of this name (clients/cli), against this server. */
export function cliCommand(name, task, server) {
  const video = shellWord(name);
  const stem = shellWord(name.replace(/\.[^.]*$/, ""));
  const options = {
    interpolate: `${video} --out ${stem}-2x.mp4`,
    segment: `${video} --mask FIRST_FRAME_MASK.png --out ${stem}-masks.mp4`,
    embed: video,
  }[task];
  return `python -m clients ${task} ${options} --server ${server}`;
}

/** A word the shell reads back unchanged: quoted unless it is plainly safe. */
function shellWord(text) {
  return /^[\w./+-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}
