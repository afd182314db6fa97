// native-stubs/power9/check-harness.mjs — the tiny TAP-like harness of the POWER check scripts.
//
// Each script awaits check(name, fn) in order: fn's return value (if any) is shown in parentheses on
// the `ok - …` line, a throw becomes `not ok - name: first line of the message`. need() turns a
// missing result of an earlier check into a failure that says so ("skipped: needs …": counted as
// failed, never as passed). finish(label) prints the seconds per check and the closing
// `<label>: N passed, N failed` line that run.sh looks for, and sets the exit status.

let passed = 0;
let failed = 0;
const t0 = Date.now();
const times = [];

/** Run one check and print its ok / not ok line. */
export async function check(name, fn) {
  const t = Date.now();
  try {
    const note = await fn();
    passed++;
    console.log(`ok - ${name}${note ? ` (${note})` : ''}`);
  } catch (err) {
    failed++;
    const msg = String(err && err.message ? err.message : err).split('\n')[0];
    console.log(`not ok - ${name}: ${msg}`);
  }
  times.push(((Date.now() - t) / 1000).toFixed(1));
}

/** `value`, or a failure naming what an earlier check should have produced. */
export const need = (value, what) => {
  if (value === undefined || value === null) throw new Error(`skipped: needs ${what}`);
  return value;
};

/** Print text as `# …` lines (shown in the console, not counted). */
export const detail = (text) => {
  for (const line of String(text).trimEnd().split('\n')) console.log(`# ${line}`);
};

/** 0x-prefixed hex of a number or bigint. */
export const hex = (v) => `0x${v.toString(16)}`;

/** Print the timings and the closing line `<label>: N passed, N failed`; exit status 1 if any failed. */
export function finish(label) {
  console.log(`# seconds per check: ${times.join(' ')}; all checks ${((Date.now() - t0) / 1000).toFixed(1)} s after the harness loaded`);
  console.log(`${label}: ${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}
