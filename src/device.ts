/**
 * What the controller needs from a device that provides IPI ESB pages: the KVM XIVE device on a
 * POWER host, or the memfd-backed fake in native-stubs. The device says how its pages are laid
 * out, whether it meets the approach-3 contract, and hands the controller its own handle to the
 * pages, so the caller may close the device while a region still uses it.
 */
import type { EsbGeometry } from './geometry.js';
import type { NativeLayer } from './native/types.js';

/**
 * What the device's mmap handler guarantees.
 * - `per-irq-offsets`: interrupt n's ESB pages can be mapped on their own at `esbBase + n × bytesPerIrq`,
 *   by a mapping that may later be split: overlays are safe (approach 3).
 * - `fixed-offset`: only the whole ESB range from interrupt 0 can be mapped, and faults are resolved
 *   relative to the mapping (upstream Linux's book3s_xive_native.c): an overlay would corrupt the guest.
 */
export type DeviceContract = 'per-irq-offsets' | 'fixed-offset';

/** A device whose IPI ESB pages back the region. */
export interface EsbDevice {
  /** Short name for messages (`fake-xive`, `kvm-xive`). */
  readonly name: string;
  /** Number of guest interrupts. */
  readonly nrIrqs: number;
  /** Layout of each interrupt's pages. */
  readonly geometry: EsbGeometry;
  /** What its mmap handler guarantees (see `DeviceContract`). */
  readonly contract: DeviceContract;
  /**
   * Whether the kernel merges two mappings of consecutive offsets of this device into one VMA.
   * memfd: yes. Real ESB mappings (`VM_IO | VM_PFNMAP`): never.
   */
  readonly mergeable: boolean;
  /**
   * The native layer the device's own calls go through, if it has one (`XiveKvmDevice` does). A
   * controller opened on the device must map through the same layer, so it defaults to this.
   */
  readonly native?: NativeLayer;
  /** A handle on the IPI pages that the region owns and closes; independent of the device's own fd. */
  openIpiPages(): IpiPages;
}

/** The region's own handle on a device's IPI pages. */
export interface IpiPages {
  /**
   * File offset of interrupt `irq`'s first IPI page. On a `per-irq-offsets` device it is
   * `offsetOf(0) + irq × bytesPerIrq` (the contract; the controller checks it at open on the first,
   * second and last interrupt, and maps a range of interrupts as one block from its first offset).
   */
  offsetOf(irq: number): bigint;
  /** Run `map` with an fd to map IPI pages from (the same one each time, or a fresh file description). */
  withFd<T>(map: (fd: number) => T): T;
  /**
   * The fd `withFd` hands over, where it is the same one every time and stays open until `close()`:
   * the region then maps from its own duplicate of it on its detach hot path, without the call
   * through `withFd` (one object fewer between two system calls; README, Performance). Leave it out
   * where each mapping needs a fresh file description. Read once, at open, before the region's first
   * mapping, and used only if it is the fd `withFd` hands to that mapping (duplicated there: what
   * the handle does with its fd afterwards cannot change what the region maps).
   */
  readonly fd?: number;
  /** Close the handle (idempotent). */
  close(): void;
}
