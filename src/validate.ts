/**
 * Argument checks shared by every public entry point. Each throws a RemapError whose message
 * names the operation, so a caller's log line says what was being done and to what.
 */
import { RemapError } from './errors.js';

/**
 * Render any value for an error message without throwing (bigints, symbols, objects). An object is
 * shown by its tag; a Proxy or an object whose `Symbol.toStringTag` getter throws is shown as
 * `[object ?]` rather than letting a hostile value turn a coded error into a plain one.
 */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'number' || typeof v === 'boolean' || v === undefined || v === null) return String(v);
  if (typeof v === 'symbol') return v.toString();
  try {
    return Object.prototype.toString.call(v);
  } catch {
    return typeof v === 'function' ? '[function ?]' : '[object ?]';
  }
}

/**
 * Describe a thrown value for a message, never throwing: an Error's message, else `show(value)`.
 * A thrown value whose `message` getter (or anything it reaches) throws is described by its type.
 */
export function describeThrown(err: unknown): string {
  try {
    if (err instanceof Error) {
      const m: unknown = err.message;
      return typeof m === 'string' ? m : show(m);
    }
  } catch {
    return 'an error whose message cannot be read';
  }
  return show(err);
}

/** @throws RemapError E_IRQ_RANGE unless `irq` is an integer in [0, limit) */
export function checkIrq(op: string, irq: unknown, limit: number, what = 'interrupt'): number {
  if (typeof irq !== 'number' || !Number.isInteger(irq) || irq < 0 || irq >= limit) {
    throw new RemapError('E_IRQ_RANGE', `${op}: ${what} ${show(irq)} is not an integer in [0, ${limit})`);
  }
  return irq;
}

/** @throws RemapError E_IRQ_RANGE unless `count` is a positive integer and [first, first+count) fits in [0, limit) */
export function checkIrqRange(op: string, first: unknown, count: unknown, limit: number, what = 'interrupt'): [number, number] {
  const f = checkIrq(op, first, limit, what);
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || f + count > limit) {
    throw new RemapError('E_IRQ_RANGE', `${op}: ${show(count)} ${what}s from ${f} do not fit in [0, ${limit})`);
  }
  return [f, count];
}
