/**
 * Worker-thread entry: a KVM guest that keeps loading one offset of a region while another thread
 * remaps it. The worker makes its own KvmX86Guest on the region (`workerData.memslot`, registered
 * once in the worker's VM), then loads the first word of `workerData.offset` over and over until
 * the shared stop flag is set, counting how often it read each of the expected words and keeping
 * the first few unexpected results (a fault, a wrong word). It posts one `GuestLoadReport` at the
 * end. Used by test/kvm-concurrent.test.ts; see there for what is asserted.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { KvmX86Guest } from './kvm-x86-guest.js';

/** What the worker is given. */
export interface GuestLoadJob {
  /** The region to register as the guest's memslot. */
  readonly memslot: { readonly userspaceAddr: bigint; readonly size: bigint };
  /** Offset in the region of the word to load. */
  readonly offset: bigint;
  /** The little-endian u32 words a load may return (e.g. the first 4 bytes of two stamps). */
  readonly expected: readonly number[];
  /** Int32Array over a SharedArrayBuffer: [0] = stop flag (set by the main thread), [1] = loads so far. */
  readonly control: SharedArrayBuffer;
}

/** What the worker reports when stopped. */
export interface GuestLoadReport {
  /** Loads made. */
  readonly loads: number;
  /** How many loads returned each of `expected`, in order. */
  readonly seen: number[];
  /** Loads that returned anything else or threw: the first few, described. */
  readonly unexpected: string[];
  /** How many loads were unexpected in all. */
  readonly unexpectedCount: number;
  /** KVM_SET_USER_MEMORY_REGION calls on the region's slot (1: registered once). */
  readonly memslotUpdates: number;
}

const job = workerData as GuestLoadJob;
const control = new Int32Array(job.control);
const guest = KvmX86Guest.create({ memslot: job.memslot });
const seen = job.expected.map(() => 0);
const unexpected: string[] = [];
let unexpectedCount = 0;
let loads = 0;
try {
  while (Atomics.load(control, 0) === 0) {
    try {
      const v = guest.read32(job.offset);
      const i = job.expected.indexOf(v);
      if (i >= 0) seen[i] = (seen[i] as number) + 1;
      else if (++unexpectedCount <= 5) unexpected.push(`load ${loads}: 0x${v.toString(16)}`);
    } catch (e) {
      if (++unexpectedCount <= 5) unexpected.push(`load ${loads}: ${(e as Error).message}`);
    }
    Atomics.store(control, 1, ++loads);
  }
  const report: GuestLoadReport = { loads, seen, unexpected, unexpectedCount, memslotUpdates: guest.memslotUpdates };
  parentPort?.postMessage(report);
} finally {
  guest.close();
}
