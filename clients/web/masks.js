// Masks in both directions (docs/protocol.md §10): the index mask a user paints is sent as
// uncompressed COCO RLE, and result masks come back as an index PNG or compressed RLE.
// An index mask here is {width, height, ids: Uint8Array(width * height)}, row-major.

/** The PASCAL VOC / DAVIS colour map the server writes into its index PNGs. */
export function vocPalette() {
  const palette = new Uint8Array(256 * 3);
  for (let index = 0; index < 256; index++) {
    let r = 0;
    let g = 0;
    let b = 0;
    let c = index;
    for (let shift = 7; shift >= 0; shift--) {
      r |= (c & 1) << shift;
      g |= ((c >> 1) & 1) << shift;
      b |= ((c >> 2) & 1) << shift;
      c >>= 3;
    }
    palette.set([r, g, b], index * 3);
  }
  return palette;
}

export const PALETTE = vocPalette();

export function colourOf(id) {
  return `rgb(${PALETTE[id * 3]}, ${PALETTE[id * 3 + 1]}, ${PALETTE[id * 3 + 2]})`;
}

/** Ids present in a mask, ascending, background (0) excluded. */
export function idsIn(mask) {
  const seen = new Uint8Array(256);
  for (const id of mask.ids) seen[id] = 1;
  const ids = [];
  for (let id = 1; id < 256; id++) if (seen[id]) ids.push(id);
  return ids;
}

// --- masks out: uncompressed COCO RLE ------------------------------------------------------

/** One object's runs: column-major (Fortran) order, alternating, starting with zeros. */
export function encodeRle(mask, id) {
  const { width, height, ids } = mask;
  const counts = [];
  let inside = false;
  let run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const here = ids[y * width + x] === id;
      if (here !== inside) {
        counts.push(run);
        run = 0;
        inside = here;
      }
      run++;
    }
  }
  counts.push(run);
  return { size: [height, width], counts };
}

/** The `mask` object of a frame header: every painted object as RLE. */
export function maskMessage(mask) {
  const objects = {};
  for (const id of idsIn(mask)) objects[String(id)] = encodeRle(mask, id);
  return { format: "rle", objects };
}

// --- masks in: compressed COCO RLE -----------------------------------------------------------

/**
 * pycocotools' string counts → run lengths. Each run is a little-endian series of 5-bit
 * groups (char − 48); bit 0x20 says another group follows, bit 0x10 of the last group is
 * the sign; from the third run on, a run is stored as a delta from the run two before.
 */
export function runsFromString(counts) {
  const runs = [];
  let position = 0;
  while (position < counts.length) {
    let value = 0;
    let shift = 0;
    let group;
    do {
      group = counts.charCodeAt(position++) - 48;
      value |= (group & 0x1f) << shift;
      shift += 5;
    } while (group & 0x20);
    if (group & 0x10) value -= 2 ** shift; // sign-extend
    if (runs.length > 2) value += runs[runs.length - 2];
    runs.push(value);
  }
  return runs;
}

/** Paint one object's RLE (compressed string or list of runs) into an index mask. */
export function paintRle(mask, id, rle) {
  const [height, width] = rle.size;
  if (height !== mask.height || width !== mask.width) {
    throw new Error(`RLE of ${width}×${height} for a ${mask.width}×${mask.height} mask`);
  }
  const runs = typeof rle.counts === "string" ? runsFromString(rle.counts) : rle.counts;
  let pixel = 0;
  runs.forEach((run, i) => {
    if (i % 2 === 1) {
      for (let p = pixel; p < pixel + run; p++) {
        // column-major position p → row-major index
        mask.ids[(p % height) * width + Math.floor(p / height)] = id;
      }
    }
    pixel += run;
  });
  if (pixel !== width * height) throw new Error(`RLE runs cover ${pixel} of ${width * height} pixels`);
}

export function maskFromRles(rles, width, height) {
  const mask = { width, height, ids: new Uint8Array(width * height) };
  for (const [id, rle] of Object.entries(rles)) paintRle(mask, Number(id), rle);
  return mask;
}

// --- masks in: index PNG ---------------------------------------------------------------------

// why our own decoder: drawing a palette PNG on a canvas yields its colours, not its
// indices, and colour management may shift them; the ids are the bytes of the image data

async function inflate(bytes) {
  // PNG's image data is one zlib stream, which is what the "deflate" format means here
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  if (pa <= pb && pa <= pc) return a;
  return pb <= pc ? b : c;
}

/** Undo the per-scanline filters (PNG spec §9) in place; bpp is bytes per pixel (≥ 1). */
function unfilter(data, rowBytes, height, bpp) {
  const out = new Uint8Array(rowBytes * height);
  for (let y = 0; y < height; y++) {
    const filter = data[y * (rowBytes + 1)];
    const source = y * (rowBytes + 1) + 1;
    const row = y * rowBytes;
    for (let x = 0; x < rowBytes; x++) {
      const raw = data[source + x];
      const left = x >= bpp ? out[row + x - bpp] : 0;
      const up = y > 0 ? out[row - rowBytes + x] : 0;
      const corner = x >= bpp && y > 0 ? out[row - rowBytes + x - bpp] : 0;
      const predicted = [0, left, up, (left + up) >> 1, paeth(left, up, corner)][filter];
      if (predicted === undefined) throw new Error(`PNG filter type ${filter} is not defined`);
      out[row + x] = (raw + predicted) & 0xff;
    }
  }
  return out;
}

/** An index PNG (palette or 8-bit grey, not interlaced) → index mask and its palette. */
export async function decodeIndexPng(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(buffer);
  const signature = [137, 80, 78, 71, 13, 10, 26, 10];
  if (!signature.every((b, i) => bytes[i] === b)) throw new Error("not a PNG");
  let header = null;
  let palette = PALETTE;
  const chunks = [];
  for (let at = 8; at < bytes.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const body = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      header = {
        width: view.getUint32(at + 8),
        height: view.getUint32(at + 12),
        depth: body[8],
        colourType: body[9],
        interlace: body[12],
      };
    } else if (type === "PLTE") {
      palette = new Uint8Array(256 * 3);
      palette.set(body.subarray(0, Math.min(body.length, 768)));
    } else if (type === "IDAT") {
      chunks.push(body);
    } else if (type === "IEND") {
      break;
    }
    at += 12 + length; // length, type, body, CRC
  }
  if (!header) throw new Error("PNG without IHDR");
  const { width, height, depth, colourType, interlace } = header;
  if (![0, 3].includes(colourType) || depth > 8 || interlace !== 0) {
    throw new Error(`not an index PNG (colour type ${colourType}, depth ${depth}, interlace ${interlace})`);
  }
  const joined = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.length;
  }
  const rowBytes = Math.ceil((width * depth) / 8);
  const rows = unfilter(await inflate(joined), rowBytes, height, 1);
  const ids = new Uint8Array(width * height);
  const perByte = 8 / depth;
  const valueMask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      // samples below 8 bits are packed from the high bits down
      const byte = rows[y * rowBytes + Math.floor(x / perByte)];
      const shift = 8 - depth * ((x % perByte) + 1);
      ids[y * width + x] = (byte >> shift) & valueMask;
    }
  }
  return { mask: { width, height, ids }, palette };
}

// --- drawing -----------------------------------------------------------------------------

/** Colour a mask's objects onto a canvas context, over whatever is drawn there. */
export function drawOverlay(context, mask, palette = PALETTE, alpha = 0.55) {
  const { width, height, ids } = mask;
  const image = context.getImageData(0, 0, width, height);
  const pixels = image.data;
  const keep = 1 - alpha;
  let covered = 0;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (id === 0) continue;
    covered++;
    for (let c = 0; c < 3; c++) {
      pixels[i * 4 + c] = Math.round(pixels[i * 4 + c] * keep + palette[id * 3 + c] * alpha);
    }
    pixels[i * 4 + 3] = 255; // visible even where nothing was drawn below
  }
  context.putImageData(image, 0, 0);
  return covered;
}
