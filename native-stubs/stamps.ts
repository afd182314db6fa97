/**
 * Reading the fake devices' stamps back through memory: what tests and the demo use to check
 * that each guest interrupt's pages are what `backingOf` says, without trusting the library's table.
 */
import { esbOffset, realNative, type EsbController, type NativeLayer } from '../src/internal.js';

/** The NUL-terminated ASCII stamp at `addr` (at most 32 bytes). The page must be mapped. */
export function readStampAt(addr: bigint, native: NativeLayer = realNative): string {
  const buf = native.peek(addr, 32);
  const nul = buf.indexOf(0);
  return buf.toString('latin1', 0, nul < 0 ? buf.length : nul);
}

/** The stamp of interrupt `irq`'s page `page` (0 trigger, 1 management), read through the region. */
export function readStamp(esb: EsbController, irq: number, page: 0 | 1 = 0, native: NativeLayer = realNative): string {
  return readStampAt(esb.memslot.userspaceAddr + esbOffset(esb.geometry, irq, page), native);
}

/** The stamp that `backingOf(irq)` promises for page `page`: `ipi:<irq>:<p>` or `<source>:<p>` (e.g. `pt1:3:0`). */
export function expectedStamp(esb: EsbController, irq: number, page: 0 | 1 = 0): string {
  const b = esb.backingOf(irq);
  return b.kind === 'ipi' ? `ipi:${irq}:${page}` : `${b.source}:${page}`;
}
