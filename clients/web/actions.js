// The actions view: a clip encoder window's top Kinetics-400 labels as bars, and what the
// window was (its frames, times and the tokens that ran), from its `result` message.

/** The labels, best first, as list items: name, a bar as long as the score, the percentage. */
export function renderLabels(list, labels) {
  list.replaceChildren(
    ...labels.map(({ label, index, score }) => {
      const item = document.createElement("li");
      item.title = `class ${index}: softmax score ${score.toFixed(4)}`;
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = label;
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = `${(100 * score).toFixed(1)}%`;
      bar.append(fill);
      const percent = document.createElement("span");
      percent.className = "score";
      percent.textContent = `${(100 * score).toFixed(1)}%`;
      item.append(name, bar, percent);
      return item;
    }),
  );
}

/** One line about a window: its number, frame range, times if the frames had any, tokens. */
export function describeWindow(header) {
  const times =
    header.pts == null || header.end_pts == null ? "" : ` (${header.pts.toFixed(2)}–${header.end_pts.toFixed(2)} s)`;
  const share = header.tokens_total ? ` (${((100 * header.tokens) / header.tokens_total).toFixed(0)}%)` : "";
  return (
    `window ${header.window}: frames ${header.start_frame}–${header.end_frame}${times}; ` +
    `${header.tokens} of ${header.tokens_total} tokens ran${share}; ${header.embedding.length}-d embedding`
  );
}

/** What the page keeps of a window for tests and users: the result less its embedding. */
export function windowSummary(header) {
  const { embedding, type: _type, ...rest } = header;
  return { ...rest, dims: embedding.length };
}
