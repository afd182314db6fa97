/**
 * KVM's binary statistics (KVM_GET_STATS_FD, KVM_CAP_BINARY_STATS_FD): a read-only fd per VM or
 * vCPU whose bytes are a header, a table of named descriptors, and the counters. Pure decoding
 * here (bytes in, names and bigints out); the caller reads the fd. It is how a test tells that a
 * guest's loads ran natively through KVM's MMU (page faults, no instruction emulation) rather than
 * through the instruction emulator. Layout: Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD".
 */
import { HOST_LITTLE_ENDIAN } from './structs.js';

/** `struct kvm_stats_header` bytes. */
export const KVM_STATS_HEADER_BYTES = 24;
/** `struct kvm_stats_desc` bytes before its name. */
const DESC_FIXED_BYTES = 16;

/** Where the parts of a stats fd lie (`struct kvm_stats_header`). */
export interface KvmStatsHeader {
  /** Bytes of each descriptor's name field. */
  readonly nameSize: number;
  /** Number of descriptors. */
  readonly numDesc: number;
  /** File offset of the descriptor table. */
  readonly descOffset: number;
  /** File offset of the counters. */
  readonly dataOffset: number;
}

/** One counter (or histogram) of a stats fd. */
export interface KvmStatDesc {
  /** e.g. `exits`, `insn_emulation`, `pf_fixed`. */
  readonly name: string;
  /** Number of u64 values (1 for a plain counter). */
  readonly size: number;
  /** Offset of its values from the data block. */
  readonly offset: number;
}

/** Decode the header. @throws RangeError if the buffer is shorter than a header */
export function decodeStatsHeader(buf: Uint8Array, le = HOST_LITTLE_ENDIAN): KvmStatsHeader {
  if (buf.byteLength < KVM_STATS_HEADER_BYTES) throw new RangeError(`kvm_stats_header needs ${KVM_STATS_HEADER_BYTES} bytes, got ${buf.byteLength}`);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return { nameSize: v.getUint32(4, le), numDesc: v.getUint32(8, le), descOffset: v.getUint32(16, le), dataOffset: v.getUint32(20, le) };
}

/** Bytes of the descriptor table a header announces. */
export function statsDescBytes(h: KvmStatsHeader): number {
  return h.numDesc * (DESC_FIXED_BYTES + h.nameSize);
}

/** Decode the descriptor table (`statsDescBytes(h)` bytes read at `h.descOffset`). */
export function decodeStatsDescs(h: KvmStatsHeader, buf: Uint8Array, le = HOST_LITTLE_ENDIAN): KvmStatDesc[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const step = DESC_FIXED_BYTES + h.nameSize;
  const out: KvmStatDesc[] = [];
  for (let i = 0; i < h.numDesc && (i + 1) * step <= buf.byteLength; i++) {
    const at = i * step;
    const raw = Buffer.from(buf.buffer, buf.byteOffset + at + DESC_FIXED_BYTES, h.nameSize);
    const nul = raw.indexOf(0);
    out.push({ name: raw.toString('latin1', 0, nul < 0 ? raw.length : nul), size: v.getUint16(at + 6, le), offset: v.getUint32(at + 8, le) });
  }
  return out;
}

/** The first value of each descriptor, by name, from the data block (read at `h.dataOffset`). */
export function decodeStatsData(descs: readonly KvmStatDesc[], data: Uint8Array, le = HOST_LITTLE_ENDIAN): Map<string, bigint> {
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out = new Map<string, bigint>();
  for (const d of descs) if (d.offset + 8 <= data.byteLength) out.set(d.name, v.getBigUint64(d.offset, le));
  return out;
}

/** Bytes of the data block: up to the end of the last descriptor's values. */
export function statsDataBytes(descs: readonly KvmStatDesc[]): number {
  return descs.reduce((m, d) => Math.max(m, d.offset + 8 * Math.max(1, d.size)), 0);
}
