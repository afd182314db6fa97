/**
 * Checking the region against the kernel's view (pure: the caller reads /proc and fstat).
 * `auditRegion` takes what the run table promises — for each segment of interrupts, the file and
 * offset its pages must come from, and that file's size now (`backingFile` of its fstat) — and
 * the VMAs of /proc/PID/maps, and returns every discrepancy: a hole, a VMA boundary inside an
 * interrupt, a page from the wrong file or offset, pages past the end of a file that shrank under
 * the region (a load there SIGBUSes), or more VMAs than the bound 2 × runs + 1. `inspectMaps` goes
 * the other way for `xive-remap inspect`: from another process's maps alone, it finds ESB regions
 * and what overlays them.
 */
import type { FileStat, MapsEntry } from './native/types.js';
import { fdKind } from './source.js';

/** A file as /proc/PID/maps names it: `major:minor` (hex) and inode. */
export interface FileId {
  /** `major:minor` in hex, two digits each at least, as the kernel prints it. */
  readonly dev: string;
  /** Inode number. */
  readonly ino: bigint;
  /**
   * The file's size now, for a file whose size bounds what may be mapped from it (a regular file
   * or memfd); absent for device fds (character devices, anonymous inodes), whose fstat size is 0.
   */
  readonly size?: bigint;
}

/** The maps-style `major:minor` of an st_dev from fstat (glibc's new_decode_dev). */
export function devString(stDev: bigint): string {
  const major = ((stDev >> 8n) & 0xfffn) | ((stDev >> 32n) & ~0xfffn);
  const minor = (stDev & 0xffn) | ((stDev >> 12n) & ~0xffn);
  const hex = (v: bigint): string => v.toString(16).padStart(2, '0');
  return `${hex(major)}:${hex(minor)}`;
}

/** What the audit needs of a backing file, from its fstat now: its identity in maps, and its size where that bounds the pages. */
export function backingFile(st: FileStat): FileId {
  const id = { dev: devString(st.dev), ino: st.ino };
  return fdKind(st.mode) === 'file' ? { ...id, size: st.size } : id;
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
  /**
   * `hole`: no mapping; `split`: a VMA boundary inside an interrupt; `wrong-file` / `wrong-offset`:
   * other pages than promised; `past-eof`: pages mapped past the end of their file, which shrank
   * after it was validated (a load from them SIGBUSes); `vma-bound`: more VMAs than 2 × runs + 1.
   */
  readonly kind: 'hole' | 'split' | 'wrong-file' | 'wrong-offset' | 'vma-bound' | 'past-eof';
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
  /** K of an amortized VMA bound (2 × runs + 1 + K; never-merging devices, see the controller); 0 if absent. */
  readonly slack?: number;
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
  for (const seg of segments) {
    const size = seg.file.size;
    const segEnd = seg.offset + BigInt(seg.count) * bpi;
    if (size === undefined || segEnd <= size) continue;
    // Interrupts whose pages all lie before the end are fine; the first one cut (or wholly past) is not.
    const whole = size > seg.offset ? (size - seg.offset) / bpi : 0n;
    out.push({
      kind: 'past-eof',
      first: seg.first + Number(whole),
      last: seg.first + seg.count - 1,
      expected: `${seg.name}: a file of at least ${hex(segEnd)} bytes (pages to that offset are mapped)`,
      found: `the file (${seg.file.dev} inode ${seg.file.ino}) ends at ${hex(size)}: a load from these interrupts would SIGBUS`,
    });
  }
  const slack = input.slack ?? 0;
  const bound = 2 * input.runs + 1 + slack;
  if (vmas.length > bound) {
    out.push({ kind: 'vma-bound', first: 0, last: nrIrqs - 1, expected: `at most ${bound} VMAs (2 × ${input.runs} runs + 1${slack ? ` + ${slack}` : ''})`, found: `${vmas.length} VMAs` });
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
 * with every other mapping inside them shown as an overlay. A region's interrupt 0 is at its base
 * (an IPI VMA's address minus its file offset into the ESB range); maps do not say where a region
 * ends, so where two regions sit back to back the lower one ends at the upper one's base: overlays
 * below that base are the lower region's last interrupts, those at or above it the upper one's
 * first, and a VMA the kernel merged across the seam is split there. (An upper region with no IPI
 * page left at all has no base to find; its overlays are then shown as the lower region's.)
 */
export function inspectMaps(maps: readonly MapsEntry[], bytesPerIrq: bigint, pageSize: bigint): InspectedRegion[] {
  const sorted = [...maps].sort((a, b) => (a.start < b.start ? -1 : 1));
  const at = (n: number): MapsEntry => sorted[n] as MapsEntry;
  const baseOf = (x: MapsEntry): bigint | null => {
    const b = ipiEsbBase(x, pageSize);
    return b === null ? null : x.start - (x.offset - b);
  };
  const adjacent = (n: number): boolean => at(n - 1).end === at(n).start; // entry n touches entry n - 1
  const regions: InspectedRegion[] = [];
  let floor = 0n; // where the previous region ended: nothing below it belongs to the next one
  let i = 0;
  while (i < sorted.length) {
    const m = at(i);
    const base = baseOf(m);
    if (base === null) {
      i++;
      continue;
    }
    const low = base > floor ? base : floor;
    // Back over adjacent overlays that reach at or above the base (interrupts before the first IPI VMA).
    let j = i;
    while (j > 0 && adjacent(j) && at(j - 1).end > low && baseOf(at(j - 1)) === null) j--;
    // Forward over overlays and this region's own IPI VMAs, up to a gap or another region's IPI VMA.
    let k = i;
    let high: bigint | null = null; // the next region's base, when it follows without a gap
    while (k + 1 < sorted.length && adjacent(k + 1)) {
      const next = at(k + 1);
      const b = baseOf(next);
      if (b !== null && !(next.path === m.path && b === base)) {
        high = b > base ? b : next.start;
        break;
      }
      k++;
    }
    // Overlays at or past the next region's base are that region's first interrupts.
    while (k > i && high !== null && at(k).start >= high) k--;
    // Trailing overlays after the last IPI VMA are only taken while they look like shared ESB pages.
    while (k > i && baseOf(at(k)) === null && !at(k).perms.endsWith('s')) k--;
    const ranges = sorted.slice(j, k + 1).map((v) => {
      const s = v.start > low ? v.start : low;
      const e = high !== null && v.end > high ? high : v.end;
      const isIpi = baseOf(v) !== null;
      return {
        first: Number((s - base) / bytesPerIrq),
        last: Number((e - base) / bytesPerIrq) - 1,
        backing: isIpi ? 'ipi' : v.path || '(anonymous)',
        offset: v.offset + (s - v.start),
        ipi: isIpi,
      };
    });
    const end = high !== null && at(k).end > high ? high : at(k).end;
    const kernelManaged = ranges.length === 1 && m.path.startsWith('anon_inode:');
    regions.push({ base, end, ipi: m.path, ranges, nrIrqs: Number((end - base) / bytesPerIrq), mappings: ranges.length, kernelManaged });
    floor = end;
    i = k + 1;
  }
  return regions;
}
