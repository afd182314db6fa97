/**
 * ESB geometry: pure bigint arithmetic, no system calls. QEMU's `esbShift` convention: an
 * interrupt owns 2^esbShift bytes of ESB space; shifts 12 and 16 are one page per interrupt, 13
 * and 17 two pages (the trigger page, then the management page at +2^(esbShift-1)). KVM on POWER
 * uses 17: two 64 KiB pages. An ESB page can only be mapped on its own if it is a whole number of
 * host pages, so an ESB page smaller than the host page is refused here.
 */
import { RemapError } from './errors.js';

/** The esbShift values XIVE defines. */
export const ESB_SHIFTS = [12, 13, 16, 17] as const;
/** One of 12, 13, 16, 17. */
export type EsbShift = (typeof ESB_SHIFTS)[number];
/** KVM's choice on POWER: two 64 KiB pages per interrupt. */
export const DEFAULT_ESB_SHIFT: EsbShift = 17;
/** The kernel's maximum number of guest interrupts for the XIVE device (KVMPPC_XIVE_NR_IRQS, 1Mi). */
export const MAX_IRQS = 1 << 20;

/** The layout of one interrupt's ESB pages. */
export interface EsbGeometry {
  /** log2 of the bytes one interrupt owns. */
  readonly esbShift: EsbShift;
  /** 1 (trigger only) or 2 (trigger, then management). */
  readonly pagesPerIrq: 1 | 2;
  /** Bytes of one ESB page. */
  readonly esbPageSize: bigint;
  /** Bytes one interrupt owns: pagesPerIrq × esbPageSize. */
  readonly bytesPerIrq: bigint;
  /** The host's page size, in bytes. */
  readonly hostPageSize: bigint;
}

/**
 * The geometry for an esbShift on a host page size.
 * @throws RemapError E_GEOMETRY if the shift is not one XIVE defines or its ESB page is smaller than a host page
 */
export function esbGeometry(esbShift: number, hostPageSize: number | bigint): EsbGeometry {
  const host = BigInt(hostPageSize);
  if (!(ESB_SHIFTS as readonly number[]).includes(esbShift)) {
    throw new RemapError('E_GEOMETRY', `esbShift ${String(esbShift)} is not one of ${ESB_SHIFTS.join(', ')}`);
  }
  if (host <= 0n || (host & (host - 1n)) !== 0n) {
    throw new RemapError('E_GEOMETRY', `host page size ${host} is not a power of two`);
  }
  const pagesPerIrq = esbShift === 13 || esbShift === 17 ? 2 : 1;
  const esbPageSize = 1n << BigInt(pagesPerIrq === 2 ? esbShift - 1 : esbShift);
  if (esbPageSize < host) {
    throw new RemapError(
      'E_GEOMETRY',
      `esbShift ${esbShift} gives ${esbPageSize}-byte ESB pages, smaller than the ${host}-byte host page: they cannot be mapped one interrupt at a time`,
    );
  }
  return Object.freeze({
    esbShift: esbShift as EsbShift,
    pagesPerIrq,
    esbPageSize,
    bytesPerIrq: esbPageSize * BigInt(pagesPerIrq),
    hostPageSize: host,
  });
}

/** Byte offset of interrupt `irq`'s page `page` (0 = trigger, 1 = management) from the start of its ESB range. */
export function esbOffset(g: EsbGeometry, irq: number, page: 0 | 1 = 0): bigint {
  return BigInt(irq) * g.bytesPerIrq + BigInt(page) * g.esbPageSize;
}

/** Bytes of `count` interrupts' ESB pages. */
export function esbSpan(g: EsbGeometry, count: number): bigint {
  return BigInt(count) * g.bytesPerIrq;
}

/** Whether two geometries lay interrupts out the same way (same pages per interrupt, same page size). */
export function sameLayout(a: EsbGeometry, b: EsbGeometry): boolean {
  return a.esbShift === b.esbShift;
}
