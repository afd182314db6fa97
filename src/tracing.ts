/**
 * Tracing and counters of an `EsbController`, for operators and VMM developers who want to see
 * what the region does without registering a notifier.
 *
 * - Node's `diagnostics_channel`: every change that was made is published on `xive-remap:attach`
 *   or `xive-remap:detach` after it is committed, and every error an attach/detach call throws on
 *   `xive-remap:failure`. Each publish is behind `channel.hasSubscribers`, so with nobody listening
 *   the cost is one property read (no message object is built).
 * - `esb.stats()` (`ControllerStats`): counters kept by the controller, and figures computed from
 *   its run table. The VMA figure is derived from the table, never from /proc (invariant 4: attach
 *   and detach make one system call and read nothing).
 */
import diagnostics_channel from 'node:diagnostics_channel';
import type { PageSource } from './source.js';

/** The names of the channels the library publishes on (`diagnostics_channel.subscribe(name, fn)`). */
export const TRACE_CHANNELS = Object.freeze({
  attach: 'xive-remap:attach',
  detach: 'xive-remap:detach',
  failure: 'xive-remap:failure',
} as const);

const attachChannel = diagnostics_channel.channel(TRACE_CHANNELS.attach);
const detachChannel = diagnostics_channel.channel(TRACE_CHANNELS.detach);
const failureChannel = diagnostics_channel.channel(TRACE_CHANNELS.failure);

/** Published on `xive-remap:attach` after passthrough pages were mapped and the table committed. */
export interface AttachTrace {
  /** `memslot.userspaceAddr` of the region (tells regions apart). */
  readonly region: bigint;
  /** The call, e.g. `attachRange(100, 16)`. */
  readonly op: string;
  /** First guest interrupt now passthrough. */
  readonly first: number;
  /** How many. */
  readonly count: number;
  /** Source name of the first one, e.g. `pt1:16`. */
  readonly source: string;
}

/** Published on `xive-remap:detach` after IPI pages were mapped back and the table committed. */
export interface DetachTrace {
  /** `memslot.userspaceAddr` of the region. */
  readonly region: bigint;
  /** The call, e.g. `detachRange(0, 512)`. */
  readonly op: string;
  /** First interrupt of the range asked for. */
  readonly first: number;
  /** Interrupts in the range asked for. */
  readonly count: number;
  /** How many of them were passthrough and are IPI again. */
  readonly restored: number;
}

/** Published on `xive-remap:failure` for every error an attach/attachRange/detach/detachRange call throws. */
export interface FailureTrace {
  /** `memslot.userspaceAddr` of the region. */
  readonly region: bigint;
  /** The call that failed. */
  readonly op: string;
  /** The `RemapError` code (`E_VETO`, `E_MAP`, …), or `'unknown'` for anything else. */
  readonly code: string;
  /** The error itself. */
  readonly error: unknown;
}

/** `tracing.attach` as a plain function (the hot path: one object fewer to reach). */
export const tracingAttach = (): boolean => attachChannel.hasSubscribers;
/** `tracing.detach` as a plain function. */
export const tracingDetach = (): boolean => detachChannel.hasSubscribers;

/** Whether anyone listens on `xive-remap:attach` / `xive-remap:detach` (the hot path builds no op string otherwise). */
export const tracing = {
  get attach(): boolean {
    return tracingAttach();
  },
  get detach(): boolean {
    return tracingDetach();
  },
};

/** Publish an attach (only if someone subscribed). */
export function traceAttach(region: bigint, op: string, first: number, count: number, source: PageSource): void {
  if (!attachChannel.hasSubscribers) return;
  attachChannel.publish(Object.freeze({ region, op, first, count, source: source.nameOf(0) } satisfies AttachTrace));
}

/** Publish a detach (only if someone subscribed). */
export function traceDetach(region: bigint, op: string, first: number, count: number, restored: number): void {
  if (!detachChannel.hasSubscribers) return;
  detachChannel.publish(Object.freeze({ region, op, first, count, restored } satisfies DetachTrace));
}

/** Publish a failure (only if someone subscribed). Never throws: a subscriber's error is Node's to report. */
export function traceFailure(region: bigint, op: string, error: unknown): void {
  if (!failureChannel.hasSubscribers) return;
  let code = 'unknown';
  try {
    const c: unknown = (error as { code?: unknown } | null | undefined)?.code;
    if (typeof c === 'string') code = c;
  } catch {
    /* a hostile thrown value: its code stays unknown */
  }
  failureChannel.publish(Object.freeze({ region, op, code, error } satisfies FailureTrace));
}

/** What `esb.stats()` returns: counters since open, and figures of the run table now. */
export interface ControllerStats {
  /** Changes made (attach, attachRange, detach, detachRange that changed something). */
  readonly operations: number;
  /**
   * Changes that were attempted and undone: a failed mmap (E_MAP, E_DEGRADED, E_VMA_BUDGET after
   * mmap), a notifier's veto (E_VETO), a pin that survived its notification (E_PINNED). Bad input
   * refused before anything was attempted is not counted (it is still traced as a failure).
   */
  readonly failures: number;
  /** System calls issued on the region (mmap, munmap), including restores. */
  readonly syscalls: number;
  /** Passthrough runs in the table now. */
  readonly runs: number;
  /**
   * VMAs the region has now by its table: one per passthrough run plus one per IPI gap (one in
   * kernel-managed mode, where nothing is mapped over the range). Exact where the kernel never
   * merges mappings (real ESB pages); an upper bound where it merges adjacent runs of one file.
   * On never-merging devices it includes the stale boundaries left by own-pages detaches (see
   * `vmaBound`). Computed from the table, never from /proc.
   */
  readonly vmas: number;
  /**
   * The most VMAs the region may have now (invariant 5): 2 × runs + 1, plus the slack K
   * (`OpenOptions.vmaSlack`) on devices the kernel never merges, where a detach restores only the
   * interrupt's own pages until K stale boundaries would be exceeded. 1 in kernel-managed mode.
   */
  readonly vmaBound: number;
  /** Notifiers registered now. */
  readonly notifiers: number;
  /** Pins held now. */
  readonly pins: number;
}
