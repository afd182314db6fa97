/**
 * Checking the region against the kernel's view (pure: the caller reads /proc and fstat).
 * `auditRegion` takes what the run table promises — for each segment of interrupts, the file and
 * offset its pages must come from — and the VMAs of /proc/PID/maps, and returns every
 * discrepancy: a hole, a VMA boundary inside an interrupt, a page from the wrong file or offset,
 * or more VMAs than the bound 2 × runs + 1. `inspectMaps` goes the other way for `xive-remap
 * inspect`: from another process's maps alone, it finds ESB regions and what overlays them.
 */
import type { MapsEntry } from './native/types.js';

/** A file as /proc/PID/maps names it: `major:minor` (hex) and inode. */
export interface FileId {
  /** `major:minor` in hex, two digits each at least, as the kernel prints it. */
  readonly dev: string;
  /** Inode number. */
  readonly ino: bigint;
}

/** The maps-style `major:minor` of an st_dev from fstat (glibc's new_decode_dev). */
export function devString(stDev: bigint): string {
  const major = ((stDev >> 8n) & 0xfffn) | ((stDev >> 32n) & ~0xfffn);
  const minor = (stDev & 0xffn) | ((stDev >> 12n) & ~0xffn);
  const hex = (v: bigint): string => v.toString(16).padStart(2, '0');
  return `${hex(major)}:${hex(minor)}`;
}

/** A run of interrupts whose pages must all come from one file, consecutively from `offset`. */
export interface ExpectedSegment {
  /** First interrupt. */
  readonly first: number;
  /** Number of interrupts. */
  readonly count: number;
  /** What the table says backs it (`ipi` or a source name), for messages. */
  readonly name: string;
  /** The file the pages must come from. */
  readonly file: FileId;
  /** File offset of the first interrupt's pages. */
  readonly offset: bigint;
}

/** One way the kernel's view differs from the table. */
export interface Discrepancy {
  /** `hole`: no mapping; `split`: a VMA boundary inside an interrupt; `wrong-file` / `wrong-offset`: other pages than promised; `vma-bound`: more VMAs than 2 × runs + 1. */
  readonly kind: 'hole' | 'split' | 'wrong-file' | 'wrong-offset' | 'vma-bound';
  /** First interrupt concerned. */
  readonly first: number;
  /** Last interrupt concerned (inclusive). */
  readonly last: number;
  /** What the table promises. */
  readonly expected: string;
  /** What /proc/PID/maps shows. */
  readonly found: string;
}

/** What `auditRegion` needs to know of the region. */
export interface AuditInput {
  /** Region start. */
  readonly base: bigint;
  /** Bytes per interrupt. */
  readonly bytesPerIrq: bigint;
  /** Number of interrupts. */
  readonly nrIrqs: number;
  /** Sorted, covering [0, nrIrqs) without overlap. */
  readonly segments: readonly ExpectedSegment[];
  /** Passthrough runs (for the VMA bound). */
  readonly runs: number;
}

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** Every discrepancy between the table's promise and the VMAs (empty when all is well). */
export function auditRegion(input: AuditInput, maps: readonly MapsEntry[]): Discrepancy[] {
  const { base, bytesPerIrq: bpi, nrIrqs, segments } = input;
  const end = base + BigInt(nrIrqs) * bpi;
  const vmas = maps.filter((m) => m.end > base && m.start < end).sort((a, b) => (a.start < b.start ? -1 : 1));
  const out: Discrepancy[] = [];
  const irqAt = (addr: bigint): number => Number((addr - base) / bpi);
  let covered = base;
  const hole = (from: bigint, to: bigint): void => {
    out.push({ kind: 'hole', first: irqAt(from), last: irqAt(to - 1n), expected: 'mapped pages', found: `nothing mapped at ${hex(from)}-${hex(to)}` });
  };
  for (const v of vmas) {
    const s = v.start > base ? v.start : base;
    const e = v.end < end ? v.end : end;
    if (s > covered) hole(covered, s);
    covered = e;
    for (const edge of [s, e]) {
      if ((edge - base) % bpi !== 0n) {
        const irq = irqAt(edge);
        out.push({ kind: 'split', first: irq, last: irq, expected: 'VMA boundaries between interrupts', found: `a VMA boundary at ${hex(edge)}, inside interrupt ${irq}` });
      }
    }
    const firstIrq = irqAt(s);
    const lastIrq = irqAt(e - 1n);
    for (const seg of segments) {
      const segLast = seg.first + seg.count - 1;
      if (segLast < firstIrq || seg.first > lastIrq) continue;
      const from = Math.max(seg.first, firstIrq);
      const to = Math.min(segLast, lastIrq);
      if (v.inode !== seg.file.ino || v.dev !== seg.file.dev) {
        out.push({ kind: 'wrong-file', first: from, last: to, expected: `${seg.name} (${seg.file.dev} inode ${seg.file.ino})`, found: `${v.path || '(anonymous)'} (${v.dev} inode ${v.inode})` });
        continue;
      }
      const addr = base + BigInt(from) * bpi;
      const want = seg.offset + BigInt(from - seg.first) * bpi;
      const got = v.offset + (addr - v.start);
      if (got !== want) {
        out.push({ kind: 'wrong-offset', first: from, last: to, expected: `${seg.name} at file offset ${hex(want)}`, found: `file offset ${hex(got)} of ${v.path}` });
      }
    }
  }
  if (covered < end) hole(covered, end);
  const bound = 2 * input.runs + 1;
  if (vmas.length > bound) {
    out.push({ kind: 'vma-bound', first: 0, last: nrIrqs - 1, expected: `at most ${bound} VMAs (2 × ${input.runs} runs + 1)`, found: `${vmas.length} VMAs` });
  }
  return out;
}

/** One ESB region found in a process's maps by `inspectMaps`. */
export interface InspectedRegion {
  /** Region start (interrupt 0's first page). */
  readonly base: bigint;
  /** One past the last mapping of the region found. */
  readonly end: bigint;
  /** The IPI backing's name in maps (`/memfd:fake-xive-ipi`, `anon_inode:kvm-xive-…`). */
  readonly ipi: string;
  /** Interrupts [first, last] and what maps them, in address order. */
  readonly ranges: readonly { first: number; last: number; backing: string; offset: bigint; ipi: boolean }[];
  /** How many interrupts the region's size covers, (end - base) / bytesPerIrq. */
  readonly nrIrqs: number;
  /** How many VMAs make up the region (1: one mapping, nothing over it). */
  readonly mappings: number;
  /**
   * One mapping of a KVM XIVE device with nothing over it: every page is the kernel's, and the kernel
   * swaps passthrough pages itself (how QEMU maps it; an `EsbController` in kernel-managed mode too).
   */
  readonly kernelManaged: boolean;
}

/** A mapping of a KVM XIVE device's TIMA (page offset 0), as /proc/PID/maps shows it. */
export interface TimaMapping {
  /** First byte. */
  readonly start: bigint;
  /** One past the last byte. */
  readonly end: bigint;
  /** The device's name in maps (`anon_inode:kvm-xive-native`). */
  readonly path: string;
}

/** The TIMA mappings of KVM XIVE devices in a process's maps (page offset 0, KVM_XIVE_TIMA_PAGE_OFFSET). */
export function timaMappings(maps: readonly MapsEntry[]): TimaMapping[] {
  return maps.filter((m) => /^anon_inode:kvm-xive/.test(m.path) && m.offset === 0n).map((m) => ({ start: m.start, end: m.end, path: m.path }));
}

/** Whether a maps entry is the IPI ESB pages of a XIVE device (the fake's memfd or KVM's device). */
function ipiEsbBase(m: MapsEntry, pageSize: bigint): bigint | null {
  if (m.path.startsWith('/memfd:fake-xive-ipi')) return 0n;
  // KVM's XIVE device: page offset 0 is the TIMA, ESB pages start at page offset 4.
  if (/^anon_inode:.*xive/.test(m.path) && m.offset >= 4n * pageSize) return 4n * pageSize;
  return null;
}

/**
 * Find the ESB regions in a process's maps: runs of adjacent VMAs anchored on IPI ESB mappings,
 * with every other mapping inside them shown as an overlay.
 */
export function inspectMaps(maps: readonly MapsEntry[], bytesPerIrq: bigint, pageSize: bigint): InspectedRegion[] {
  const sorted = [...maps].sort((a, b) => (a.start < b.start ? -1 : 1));
  const regions: InspectedRegion[] = [];
  let i = 0;
  while (i < sorted.length) {
    const m = sorted[i] as MapsEntry;
    const esbBase = ipiEsbBase(m, pageSize);
    if (esbBase === null) {
      i++;
      continue;
    }
    const base = m.start - (m.offset - esbBase);
    // Extend backwards over adjacent overlays that belong to the region (interrupts before the first IPI VMA).
    let j = i;
    while (j > 0 && (sorted[j - 1] as MapsEntry).end === (sorted[j] as MapsEntry).start && (sorted[j - 1] as MapsEntry).start >= base) j--;
    let k = i;
    const sameRegion = (x: MapsEntry): boolean => {
      const b = ipiEsbBase(x, pageSize);
      return b === null || (x.path === m.path && x.start - (x.offset - b) === base);
    };
    while (k + 1 < sorted.length && (sorted[k + 1] as MapsEntry).start === (sorted[k] as MapsEntry).end && sameRegion(sorted[k + 1] as MapsEntry)) k++;
    // Trailing overlays after the last IPI VMA are only taken while they look like shared ESB pages.
    while (k > i && ipiEsbBase(sorted[k] as MapsEntry, pageSize) === null && !(sorted[k] as MapsEntry).perms.endsWith('s')) k--;
    const ranges = sorted.slice(j, k + 1).map((v) => {
      const isIpi = ipiEsbBase(v, pageSize) !== null;
      return {
        first: Number((v.start - base) / bytesPerIrq),
        last: Number((v.end - base) / bytesPerIrq) - 1,
        backing: isIpi ? 'ipi' : v.path || '(anonymous)',
        offset: v.offset,
        ipi: isIpi,
      };
    });
    const end = (sorted[k] as MapsEntry).end;
    const kernelManaged = ranges.length === 1 && m.path.startsWith('anon_inode:');
    regions.push({ base, end, ipi: m.path, ranges, nrIrqs: Number((end - base) / bytesPerIrq), mappings: ranges.length, kernelManaged });
    i = k + 1;
  }
  return regions;
}
