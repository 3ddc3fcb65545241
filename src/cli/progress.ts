// The one progress bar of the CLI: drawn on a terminal only, so pipes and logs stay clean.

export interface ProgressBar {
  update(done: number, total: number): void;
  /** Erases the bar (if it was ever drawn). */
  clear(): void;
}

const WIDTH = 30;

/** A one-line bar redrawn in place on `stream`, or undefined when `stream` is not a terminal. */
export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): ProgressBar | undefined {
  if (!stream.isTTY) return undefined;
  let last = -1;
  return {
    update(done, total) {
      const pct = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 100;
      if (pct === last) return;
      last = pct;
      const fill = Math.round((pct / 100) * WIDTH);
      stream.write(`\r${label} [${'#'.repeat(fill)}${'.'.repeat(WIDTH - fill)}] ${String(pct).padStart(3)}%`);
    },
    clear() {
      if (last >= 0) stream.write('\r\x1b[K');
      last = -1;
    },
  };
}
