/**
 * Reading the fake devices' stamps back through memory: what tests and the demo use to check
 * that each guest interrupt's pages are what `backingOf` says, without trusting the library's table.
 *
 * A load from memory that is not mapped kills the process (SIGSEGV), so nothing is loaded before
 * the address is known to be readable: `readStamp` checks the region (open, not degraded where it
 * reads), the interrupt and the page index, and `readStampAt` checks /proc/self/maps. Both refuse
 * with a `RemapError` instead.
 */
import { RemapError, checkIrq, esbOffset, realNative, show, type EsbController, type NativeLayer } from '../src/internal.js';

/** Bytes a stamp may take, NUL included. */
const STAMP_BYTES = 32;

/** The NUL-terminated ASCII stamp at `addr`: the caller knows the bytes are mapped and readable. */
function peekStamp(addr: bigint, native: NativeLayer): string {
  const buf = native.peek(addr, STAMP_BYTES);
  const nul = buf.indexOf(0);
  return buf.toString('latin1', 0, nul < 0 ? buf.length : nul);
}

/**
 * The NUL-terminated ASCII stamp at `addr` (at most 32 bytes), e.g. a pin's address. Reads
 * /proc/self/maps first (not for a hot path).
 * @throws RemapError E_NOT_OWNED unless all 32 bytes lie in one readable mapping of this process
 */
export function readStampAt(addr: bigint, native: NativeLayer = realNative): string {
  const op = `readStampAt(${typeof addr === 'bigint' ? `0x${addr.toString(16)}` : show(addr)})`;
  if (typeof addr !== 'bigint' || addr < 0n) throw new RemapError('E_NOT_OWNED', `${op}: the address must be a non-negative bigint`);
  const end = addr + BigInt(STAMP_BYTES);
  const vma = native.readMaps().find((e) => e.start <= addr && end <= e.end);
  if (vma === undefined || vma.perms[0] !== 'r') {
    throw new RemapError('E_NOT_OWNED', `${op}: no readable mapping of this process covers 0x${addr.toString(16)}-0x${end.toString(16)}${vma ? ` (${vma.perms})` : ''}`);
  }
  return peekStamp(addr, native);
}

/**
 * The stamp of interrupt `irq`'s page `page` (0 trigger, 1 management), read through the region.
 * @throws RemapError E_CLOSED after `esb.close()`; E_IRQ_RANGE for an interrupt outside the region
 *   or a page index outside [0, pagesPerIrq); E_DEGRADED for an interrupt whose pages a failed
 *   restore may have left a hole
 */
export function readStamp(esb: EsbController, irq: number, page: 0 | 1 = 0, native: NativeLayer = realNative): string {
  const op = `readStamp(${show(irq)}, ${show(page)})`;
  // After close() the memslot still names the old range, now unmapped: a load there is SIGSEGV.
  if (esb.closed) throw new RemapError('E_CLOSED', `${op}: the region is closed, its pages are unmapped`);
  checkIrq(op, irq, esb.nrIrqs);
  // Page 1 of a one-page interrupt, or page 5 of any, is another interrupt's page (or past the region).
  checkIrq(op, page, esb.geometry.pagesPerIrq, `page index (this region has ${esb.geometry.pagesPerIrq} per interrupt)`);
  try {
    esb.backingOf(irq); // refuses an interrupt that may be a hole (E_DEGRADED), with the reason
  } catch (e) {
    if (e instanceof RemapError) throw new RemapError(e.code, `${op}: ${e.message}`, { cause: e });
    throw e;
  }
  return peekStamp(esb.memslot.userspaceAddr + esbOffset(esb.geometry, irq, page), native);
}

/** The stamp that `backingOf(irq)` promises for page `page`: `ipi:<irq>:<p>` or `<source>:<p>` (e.g. `pt1:3:0`). */
export function expectedStamp(esb: EsbController, irq: number, page: 0 | 1 = 0): string {
  const b = esb.backingOf(irq);
  return b.kind === 'ipi' ? `ipi:${irq}:${page}` : `${b.source}:${page}`;
}
