// How the uid-1000 programs (userdbd-client.ts, steps-client.ts) report: one JSON line on stdout,
// {crash} with the stack when they fail, so the test reads one result either way (clientResult).

/** Prints what `work` resolves to and exits 0, or {crash} and exits 1. */
export function printJsonLine(work: Promise<Record<string, unknown>>): void {
  work.then(
    (r) => {
      process.stdout.write(`${JSON.stringify(r)}\n`);
      process.exit(0);
    },
    (e: unknown) => {
      process.stdout.write(`${JSON.stringify({ crash: String(e instanceof Error ? e.stack : e) })}\n`);
      process.exit(1);
    },
  );
}
