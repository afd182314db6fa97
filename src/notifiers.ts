/**
 * Notifiers and pins: how the parts of a VMM that shadow the region's mappings (a migration
 * tracker, a backend that was handed a trigger page's address, tracing) stay correct while
 * interrupts are attached and detached (ARCHITECTURE.md §6; seeds 000, 001, 003).
 *
 * A component registers an `EsbNotifier` on an `EsbController`: a filter (interrupt range, event
 * kinds), handlers, and what it can handle. Registration is refused up front (E_NOTIFIER) when
 * the region does more than that — the `iommu_idx` lesson of seeds/001: bail out at registration,
 * not by silently working wrong. With `{ replay: true }` it gets the current passthrough runs at
 * once as `map` events (QEMU's memory_region_iommu_replay).
 *
 * Data flow of one change, when notifiers are registered (with none, the controller skips all of
 * this after one null check):
 *
 *   validate → `unmap` events, one per contiguous run whose backing changes, delivered event by
 *   event to each matching notifier in registration order → no pin may survive on a changing
 *   interrupt → [controller: one mmap, commit the table] → `map` events of the new backing.
 *
 * Unmap handlers run before the mmap, so a veto (an unmap handler throws: E_VETO) or a surviving
 * pin (E_PINNED) stops the change before anything is mapped: no rollback system call is needed.
 * Every notifier whose unmap handler had already returned then gets a `map` event with reason
 * `'rollback'` re-announcing the old pages, in reverse order; a tracker that only applies `map`
 * and `unmap` stays right without knowing about vetoes (a pin released in an unmap handler stays
 * released; its owner may pin again when it gets the rollback `map`). A failed mmap that the controller undid
 * (E_MAP) is announced the same way. If even the restore failed (E_DEGRADED), only the events
 * wholly outside the degraded span are re-announced; inside it no `map` follows: the pages may
 * really be gone.
 *
 * A pin holds one interrupt's current pages for a consumer (seeds/003). Only a notifier that takes
 * `unmap` events for that interrupt may own pins; when the interrupt is about to change, the owner
 * gets the `unmap` synchronously and must release the pin before returning. Disposing a notifier
 * releases its pins. `close()` delivers `destroy` to every notifier, then drops them and their pins,
 * and cuts every handle loose: a handle kept after close reaches nothing (seeds/000).
 */
import { disposeSymbol } from './dispose.js';
import { RemapError, isRemapError } from './errors.js';
import type { Backing, Run } from './run-table.js';
import type { EsbGeometry } from './geometry.js';
import type { PageSource } from './source.js';
import { traceFailure } from './tracing.js';
import { checkIrqRange, describeThrown, show } from './validate.js';

export { disposeSymbol } from './dispose.js';

/** The kinds of event a notifier can take. */
export type NotifierEventKind = 'map' | 'unmap' | 'destroy';

/** What backs the pages an event talks about. */
export type EventBacking =
  | { readonly kind: 'ipi' }
  | {
      readonly kind: 'passthrough';
      /** The source's name without the interrupt index (e.g. `pt1`, `fd17`). */
      readonly device: string;
      /** The source's name of the event's first interrupt (e.g. `pt1:16`). */
      readonly source: string;
      /** File offset of the event's first interrupt's pages in the source. */
      readonly sourceOffset: bigint;
    };

/**
 * Why a map or unmap event is delivered: the change (`attach`, `detach`), a `replay` at
 * registration, or a `rollback` — the old pages re-announced because the change was vetoed, met a
 * surviving pin, or its mmap failed and was undone.
 */
export type MappingReason = 'attach' | 'detach' | 'replay' | 'rollback';

/**
 * Pages of a contiguous run of interrupts going (`unmap`, before they go) or in place (`map`,
 * after they are). Frozen; one object is shared by every notifier that gets it.
 *
 * - attach of [first, first+count): `unmap` of those IPI pages, then `map` of the passthrough run.
 * - detach: `unmap` of each passthrough run (clipped to the range asked), then `map` of the IPI
 *   pages put back, one event per contiguous stretch. IPI pages a detach maps over themselves
 *   (to keep an IPI gap one VMA) do not change and are not announced.
 */
export interface MappingEvent {
  /** `unmap`: these pages are about to go (a handler may throw to veto). `map`: they are in place. */
  readonly kind: 'map' | 'unmap';
  /** Why it is delivered. */
  readonly reason: MappingReason;
  /** The call behind it, e.g. `attachRange(100, 16)`. */
  readonly op: string;
  /** First guest interrupt. */
  readonly first: number;
  /** Number of interrupts. */
  readonly count: number;
  /** Address in this process of the first interrupt's first page (inside the memslot). */
  readonly addr: bigint;
  /** Bytes: count × bytesPerIrq. */
  readonly size: bigint;
  /** What backs them. */
  readonly backing: EventBacking;
}

/** The region is closing: its pages are about to go, every address in it with them. Frozen. */
export interface DestroyEvent {
  /** Always `destroy`. */
  readonly kind: 'destroy';
  /** `close()`. */
  readonly op: string;
  /** The memslot's address. */
  readonly addr: bigint;
  /** The memslot's size. */
  readonly size: bigint;
}

/** Any event a notifier can get. */
export type NotifierEvent = MappingEvent | DestroyEvent;

/** Which events a notifier gets. */
export interface NotifierFilter {
  /** Interrupts it watches: a map/unmap event overlapping them is delivered whole (default: all). */
  readonly irqs?: { readonly first: number; readonly count: number };
  /** Kinds it takes (default: every kind it has a handler for). */
  readonly kinds?: readonly NotifierEventKind[];
}

/** What a notifier can handle; registration is refused when the region does more. */
export interface NotifierCapabilities {
  /** ESB layouts it understands, in pages per interrupt (1: trigger only; 2: trigger + management). */
  readonly pagesPerIrq: readonly (1 | 2)[];
  /**
   * Whether it works on a region in `kernel-managed` mode, where the kernel, not an mmap, swaps the
   * pages: events then report the table and their timing relative to the kernel's swap is not
   * guaranteed. Default false.
   */
  readonly kernelManaged?: boolean;
}

/**
 * A component that shadows the region's mappings. Handlers are called synchronously, as methods of
 * this object, while the controller is busy: calling attach/detach/register/close from one gets
 * E_BUSY; backingOf, runs, pins, stats, pin, unpin and dispose work.
 */
export interface EsbNotifier {
  /** Name for messages (default `notifier#<n>`). */
  readonly name?: string;
  /** Which events it gets. */
  readonly filter?: NotifierFilter;
  /** What it can handle. */
  readonly handles: NotifierCapabilities;
  /**
   * Pages are about to go. Throwing vetoes the change (E_VETO, with this error as `cause`). A pin
   * owner must release its pins on these interrupts before returning.
   */
  unmap?(event: MappingEvent): void;
  /** Pages are in place (after a change, a replay, or a rollback). Must not throw (see E_NOTIFIER). */
  map?(event: MappingEvent): void;
  /** The region is closing; the notifier is dropped right after. */
  destroy?(event: DestroyEvent): void;
}

/** Options of `EsbController.register`. */
export interface RegisterOptions {
  /** Deliver the current passthrough runs (in the filter's range) at once, as `map` events with reason `replay`. */
  readonly replay?: boolean;
}

/** A registered notifier: dispose of it to stop its events and release its pins. */
export interface NotifierHandle {
  /** The notifier's name. */
  readonly name: string;
  /** False once disposed or the region closed. */
  readonly active: boolean;
  /** Unregister and release this notifier's pins. Safe to repeat, and after close. */
  dispose(): void;
  /** Same as `dispose()` (for `using`). */
  [Symbol.dispose](): void;
}

/** A pinned interrupt: its pages stay as they are until the pin is released. */
export interface Pin {
  /** The guest interrupt. */
  readonly irq: number;
  /** Name of the owning notifier. */
  readonly owner: string;
  /** Address in this process of the interrupt's first (trigger) page. */
  readonly addr: bigint;
  /** Bytes of its pages (bytesPerIrq). */
  readonly size: bigint;
  /** What backed it when pinned (and still does while `held`). */
  readonly backing: Backing;
  /** False once released (unpin, the owner disposed, or the region closed). */
  readonly held: boolean;
  /** Release the pin. Safe to repeat, and after close. */
  unpin(): void;
  /** Same as `unpin()` (for `using`). */
  [Symbol.dispose](): void;
}

/** One pin as `esb.pins()` lists it (information only: it cannot release the pin). */
export interface PinInfo {
  /** The guest interrupt. */
  readonly irq: number;
  /** Name of the owning notifier. */
  readonly owner: string;
  /** Address of the interrupt's first page. */
  readonly addr: bigint;
  /** Bytes of its pages. */
  readonly size: bigint;
}

/** What the hub needs to know of its region: constants from open to close, never the controller itself. */
export interface RegionInfo {
  /** Device name, for messages. */
  readonly name: string;
  /** memslot.userspaceAddr. */
  readonly addr: bigint;
  /** Number of guest interrupts. */
  readonly nrIrqs: number;
  /** ESB layout. */
  readonly geometry: EsbGeometry;
  /** The controller's mode. */
  readonly mode: 'overlay' | 'kernel-managed';
}

/** A run of the controller's table, as far as notifications need it. */
export type RunLike = Run<PageSource>;

const KIND_BITS: Readonly<Record<NotifierEventKind, number>> = { map: 1, unmap: 2, destroy: 4 };
const IPI_BACKING: EventBacking = Object.freeze({ kind: 'ipi' });

interface Entry {
  readonly name: string;
  /** Null once disposed or dropped at close: the hub never calls it again. */
  notifier: EsbNotifier | null;
  readonly first: number;
  readonly end: number;
  readonly kinds: number;
  readonly pins: Set<PinImpl>;
  readonly handle: HandleImpl;
}

/** The name a notifier will be known by (for the `register(...)` op string); never throws, whatever the notifier's getters do. */
export function notifierName(notifier: unknown, fallback = 'notifier'): string {
  try {
    const n = (notifier as { name?: unknown } | null | undefined)?.name;
    return typeof n === 'string' && n !== '' ? n : fallback;
  } catch {
    return fallback;
  }
}

function handlerOf(n: EsbNotifier, kind: NotifierEventKind): ((e: never) => void) | undefined {
  const fn = (n as unknown as Record<string, unknown>)[kind];
  return typeof fn === 'function' ? (fn as (e: never) => void) : undefined;
}

function wants(entry: Entry, e: NotifierEvent): boolean {
  if (entry.notifier === null || (entry.kinds & KIND_BITS[e.kind]) === 0) return false;
  return e.kind === 'destroy' || (e.first < entry.end && e.first + e.count > entry.first);
}

function irqs(e: NotifierEvent): string {
  if (e.kind === 'destroy') return 'the region';
  return e.count === 1 ? `interrupt ${e.first}` : `interrupts ${e.first}..${e.first + e.count - 1}`;
}

class HandleImpl implements NotifierHandle {
  #hub: NotifierHub | null;
  #entry: Entry | null = null;

  /** A brand check (a Proxy of a handle is not one, and its traps are never called). */
  static is(v: unknown): v is HandleImpl {
    return typeof v === 'object' && v !== null && #entry in v;
  }

  constructor(
    hub: NotifierHub,
    /** @inheritdoc */
    readonly name: string,
  ) {
    this.#hub = hub;
  }

  /** @internal */
  bind(entry: Entry): void {
    this.#entry = entry;
  }

  /** @internal The hub and entry, if this handle is still live. */
  live(): [NotifierHub, Entry] | null {
    return this.#hub && this.#entry ? [this.#hub, this.#entry] : null;
  }

  /** @internal Cut loose: reaches nothing any more. */
  cut(): void {
    this.#hub = null;
    this.#entry = null;
  }

  get active(): boolean {
    return this.#hub !== null;
  }

  dispose(): void {
    const live = this.live();
    this.cut();
    if (live) live[0].drop(live[1]);
  }

  [disposeSymbol](): void {
    this.dispose();
  }
}

class PinImpl implements Pin {
  #hub: NotifierHub | null;

  constructor(
    hub: NotifierHub,
    readonly irq: number,
    /** @internal */
    readonly entry: Entry,
    readonly addr: bigint,
    readonly size: bigint,
    readonly backing: Backing,
  ) {
    this.#hub = hub;
  }

  get owner(): string {
    return this.entry.name;
  }

  get held(): boolean {
    return this.#hub !== null;
  }

  /** @internal Mark released (the hub has already forgotten it). */
  cut(): void {
    this.#hub = null;
  }

  unpin(): void {
    const hub = this.#hub;
    this.#hub = null;
    hub?.unpin(this);
  }

  [disposeSymbol](): void {
    this.unpin();
  }
}

/**
 * A change whose `unmap` events were delivered and accepted: the controller maps, commits and calls
 * `done()`, or undoes its mmap and calls `cancel()`.
 */
export class PendingChange {
  constructor(
    private readonly hub: NotifierHub,
    private readonly op: string,
    private readonly delivered: readonly (readonly [Entry, MappingEvent])[],
    private readonly mapEvents: () => MappingEvent[],
  ) {}

  /**
   * The table is committed: deliver the `map` events. Every matching notifier gets them even if one
   * throws; then the first error is thrown.
   * @throws RemapError E_NOTIFIER if a map handler threw (the change was made: backingOf shows it)
   */
  done(): void {
    const failures = this.hub.deliver(this.mapEvents());
    if (failures.length > 0) {
      const [entry, event, err] = failures[0] as Failure;
      throw new RemapError(
        'E_NOTIFIER',
        `${this.op}: the change was made (backingOf shows it), but notifier "${entry.name}" threw on the map of ${irqs(event)} (${describeThrown(err)})${failures.length > 1 ? ` and ${failures.length - 1} more handler(s) threw` : ''}; map handlers must not throw`,
        { cause: err },
      );
    }
  }

  /**
   * The change did not happen and the old pages are back: re-announce them to whoever took the
   * unmap. With `broken` (a failed restore left [first, end) possibly a hole), only the events that
   * lie wholly outside it are re-announced: no `map` may name pages that may be gone. Never throws.
   */
  cancel(broken?: { readonly first: number; readonly end: number }): void {
    const keep = broken ? this.delivered.filter(([, e]) => e.first + e.count <= broken.first || e.first >= broken.end) : this.delivered;
    this.hub.rollback(this.op, keep);
  }
}

type Failure = readonly [Entry, NotifierEvent, unknown];

/**
 * The notifiers and pins of one region (one per controller, made at the first `register`). Owns
 * O(notifiers + pins) memory. The notifier list is an immutable snapshot, replaced on register and
 * dispose, so a delivery iterates the list it started with; a notifier disposed meanwhile gets
 * nothing more.
 */
export class NotifierHub {
  #entries: readonly Entry[] = [];
  /** Pins by interrupt; an interrupt with no pin has no entry. */
  readonly #pins = new Map<number, Set<PinImpl>>();
  #pinCount = 0;
  #serial = 0;
  /** Changes refused by a veto or a surviving pin (counted in `stats().failures`). */
  refusals = 0;

  constructor(
    /** The region's constants. */
    readonly region: RegionInfo,
  ) {}

  /** Notifiers registered now. */
  get count(): number {
    return this.#entries.length;
  }

  /** Pins held now. */
  get pinCount(): number {
    return this.#pinCount;
  }

  /**
   * Check what `notifier` declares against the region, insert it, and replay if asked.
   * @throws RemapError E_NOTIFIER (malformed, cannot handle the region, or its replay threw: then it is not registered); E_IRQ_RANGE (filter)
   */
  register(op: string, notifier: EsbNotifier, options: RegisterOptions, runs: readonly RunLike[], broken: { readonly first: number; readonly end: number } | null = null): NotifierHandle {
    let declared: { name: string; first: number; count: number; kinds: number; replay: boolean };
    try {
      declared = this.#declared(op, notifier, options);
    } catch (e) {
      // A getter of the notifier (handles, filter, name, a handler) or of the options threw:
      // refuse it like any other malformed notifier, with what it threw as the cause.
      if (isRemapError(e)) throw e;
      throw new RemapError('E_NOTIFIER', `${op}: refused: reading its declaration threw (${describeThrown(e)})`, { cause: e });
    }
    const { name, first, count, kinds, replay } = declared;
    const handle = new HandleImpl(this, name);
    const entry: Entry = { name, notifier, first, end: first + count, kinds, pins: new Set(), handle };
    handle.bind(entry);
    this.#entries = [...this.#entries, entry];
    if (replay) {
      // No `map` for interrupts a failed restore may have left a hole: a handler reading them would fault.
      const events: MappingEvent[] = [];
      const push = (r: RunLike, s: number, e: number): void => {
        // A run overlapping the filter's range is delivered whole, as a change's events are.
        if (s < e && s < entry.end && e > first) events.push(this.#event('map', 'replay', op, s, e - s, this.#passthrough(r.source, s - r.first)));
      };
      for (const r of runs) {
        const e = r.first + r.count;
        if (broken && r.first < broken.end && e > broken.first) {
          push(r, r.first, broken.first);
          push(r, broken.end, e);
        } else push(r, r.first, e);
      }
      for (const e of events) {
        try {
          (handlerOf(notifier, 'map') as (e: MappingEvent) => void).call(notifier, e);
        } catch (err) {
          handle.dispose();
          throw new RemapError('E_NOTIFIER', `${op}: the notifier's map handler threw during the replay of ${irqs(e)} (${describeThrown(err)}); it is not registered`, { cause: err });
        }
      }
    }
    return handle;
  }

  /** What a notifier declares, checked against the region. @throws RemapError E_NOTIFIER, E_IRQ_RANGE; anything a getter throws */
  #declared(op: string, notifier: EsbNotifier, options: RegisterOptions): { name: string; first: number; count: number; kinds: number; replay: boolean } {
    const refuse: (why: string) => never = (why) => {
      throw new RemapError('E_NOTIFIER', `${op}: refused: ${why}`);
    };
    if (typeof notifier !== 'object' || notifier === null) refuse(`the notifier is ${show(notifier)}, not an object`);
    const caps = notifier.handles as NotifierCapabilities | undefined;
    if (typeof caps !== 'object' || caps === null || !Array.isArray(caps.pagesPerIrq)) {
      refuse('it does not declare what it handles ({ handles: { pagesPerIrq: [...] } })');
    }
    const g = this.region.geometry;
    if (!caps.pagesPerIrq.includes(g.pagesPerIrq)) {
      refuse(
        `the region has ${g.pagesPerIrq} ESB page(s) per interrupt (esbShift ${g.esbShift}); the notifier handles ${caps.pagesPerIrq.length ? caps.pagesPerIrq.join(' or ') : 'none'}`,
      );
    }
    if (this.region.mode === 'kernel-managed' && caps.kernelManaged !== true) {
      refuse('the region is kernel-managed (the kernel swaps the pages itself) and the notifier does not declare handles.kernelManaged');
    }
    let kinds = 0;
    const filter = notifier.filter ?? {};
    for (const kind of ['map', 'unmap', 'destroy'] as const) {
      const v = (notifier as unknown as Record<string, unknown>)[kind];
      if (v !== undefined && typeof v !== 'function') refuse(`its ${kind} handler is ${show(v)}, not a function`);
    }
    if (filter.kinds !== undefined) {
      if (!Array.isArray(filter.kinds)) refuse(`filter.kinds is ${show(filter.kinds)}, not an array`);
      for (const kind of filter.kinds as unknown[]) {
        if (kind !== 'map' && kind !== 'unmap' && kind !== 'destroy') refuse(`filter.kinds lists ${show(kind)}; kinds are map, unmap, destroy`);
        if (!handlerOf(notifier, kind)) refuse(`filter.kinds lists ${kind} but it has no ${kind} handler`);
        kinds |= KIND_BITS[kind];
      }
    } else {
      for (const kind of ['map', 'unmap', 'destroy'] as const) if (handlerOf(notifier, kind)) kinds |= KIND_BITS[kind];
    }
    if (kinds === 0) refuse('it takes no event (no map, unmap or destroy handler)');
    if (kinds & KIND_BITS.unmap && !(kinds & KIND_BITS.map)) {
      refuse('it takes unmap but not map events: a vetoed change is undone by re-announcing the old pages with a map, which it would miss');
    }
    const replay = (options as RegisterOptions | null)?.replay === true;
    if (replay && !(kinds & KIND_BITS.map)) refuse('it asks for a replay but takes no map events');
    let first = 0;
    let count = this.region.nrIrqs;
    if (filter.irqs !== undefined) [first, count] = checkIrqRange(`${op}: filter.irqs`, filter.irqs?.first, filter.irqs?.count, this.region.nrIrqs);
    const n = (notifier as { name?: unknown }).name;
    const name = typeof n === 'string' && n !== '' ? n : `notifier#${++this.#serial}`;
    return { name, first, count, kinds, replay };
  }

  /**
   * Pin `irq` for `owner`.
   * @throws RemapError E_NOTIFIER unless `owner` is a live notifier of this region that takes unmap events for `irq`
   */
  pin(op: string, irq: number, owner: NotifierHandle, backing: Backing): Pin {
    const isHandle = HandleImpl.is(owner);
    const live = isHandle ? owner.live() : null;
    if (!live || live[0] !== this) {
      throw new RemapError(
        'E_NOTIFIER',
        `${op}: the owner ${isHandle ? `"${owner.name}" is disposed or registered on another region` : `(${show(owner)}) is not a notifier handle`}; a pin needs a notifier registered here that takes unmap events for interrupt ${irq}`,
      );
    }
    const entry = live[1];
    if (!(entry.kinds & KIND_BITS.unmap) || irq < entry.first || irq >= entry.end) {
      throw new RemapError(
        'E_NOTIFIER',
        `${op}: notifier "${entry.name}" ${entry.kinds & KIND_BITS.unmap ? `watches interrupts ${entry.first}..${entry.end - 1}, not ${irq}` : 'takes no unmap events'}, so it could not be told to release the pin`,
      );
    }
    const g = this.region.geometry;
    const pin = new PinImpl(this, irq, entry, this.region.addr + BigInt(irq) * g.bytesPerIrq, g.bytesPerIrq, backing);
    entry.pins.add(pin);
    let set = this.#pins.get(irq);
    if (!set) this.#pins.set(irq, (set = new Set()));
    set.add(pin);
    this.#pinCount++;
    return Object.freeze(pin);
  }

  /** The pins held now (optionally of one interrupt), as information. */
  pins(irq?: number): PinInfo[] {
    const sets = irq === undefined ? [...this.#pins.values()] : [this.#pins.get(irq) ?? new Set<PinImpl>()];
    const out: PinInfo[] = [];
    for (const set of sets) for (const p of set) out.push(Object.freeze({ irq: p.irq, owner: p.owner, addr: p.addr, size: p.size }));
    return out.sort((a, b) => a.irq - b.irq);
  }

  /** @internal Forget a released pin. */
  unpin(pin: PinImpl): void {
    const set = this.#pins.get(pin.irq);
    if (!set?.delete(pin)) return;
    if (set.size === 0) this.#pins.delete(pin.irq);
    pin.entry.pins.delete(pin);
    this.#pinCount--;
  }

  /** @internal Unregister an entry (its handle was disposed): release its pins. */
  drop(entry: Entry): void {
    if (entry.notifier === null) return;
    entry.notifier = null;
    this.#entries = this.#entries.filter((e) => e !== entry);
    for (const p of [...entry.pins]) {
      p.cut();
      this.unpin(p);
    }
  }

  // ---- the two changes ----

  /**
   * [first, first+count) is about to go from IPI to `source`: deliver the unmap, check pins.
   * Returns null when no notifier is registered (nothing to do later either).
   * @throws RemapError E_VETO or E_PINNED; nothing has been changed and the rollback maps were delivered
   */
  attaching(op: string, first: number, count: number, source: PageSource): PendingChange | null {
    if (this.#entries.length === 0) return null;
    const unmap = [this.#event('unmap', 'attach', op, first, count, IPI_BACKING)];
    return this.#announce(op, unmap, () => [this.#event('map', 'attach', op, first, count, this.#passthrough(source, 0))]);
  }

  /**
   * The passthrough interrupts of `hit` (runs of the table) inside [first, last) are about to go
   * back to IPI: deliver one unmap per run, check pins. Null when no notifier is registered.
   * @throws RemapError E_VETO or E_PINNED, as `attaching`
   */
  detaching(op: string, hit: readonly RunLike[], first: number, last: number): PendingChange | null {
    if (this.#entries.length === 0) return null;
    const unmap: MappingEvent[] = [];
    for (const r of hit) {
      const s = Math.max(r.first, first);
      const e = Math.min(r.first + r.count, last);
      if (s < e) unmap.push(this.#event('unmap', 'detach', op, s, e - s, this.#passthrough(r.source, s - r.first)));
    }
    return this.#announce(op, unmap, () => {
      const map: MappingEvent[] = [];
      let s = -1;
      let e = -1;
      for (const u of unmap) {
        if (u.first !== e) {
          if (s >= 0) map.push(this.#event('map', 'detach', op, s, e - s, IPI_BACKING));
          s = u.first;
        }
        e = u.first + u.count;
      }
      if (s >= 0) map.push(this.#event('map', 'detach', op, s, e - s, IPI_BACKING));
      return map;
    });
  }

  #announce(op: string, unmap: readonly MappingEvent[], mapEvents: () => MappingEvent[]): PendingChange {
    const delivered: (readonly [Entry, MappingEvent])[] = [];
    for (const e of unmap) {
      for (const entry of this.#entries) {
        if (!wants(entry, e)) continue;
        try {
          (entry.notifier as EsbNotifier).unmap?.(e);
        } catch (err) {
          this.refusals++;
          this.rollback(op, delivered);
          throw new RemapError('E_VETO', `${op}: notifier "${entry.name}" vetoed the unmap of ${irqs(e)} (${describeThrown(err)}); nothing was changed`, { cause: err });
        }
        delivered.push([entry, e]);
      }
    }
    const survivor = this.#survivingPin(unmap);
    if (survivor) {
      this.refusals++;
      this.rollback(op, delivered);
      throw new RemapError(
        'E_PINNED',
        `${op}: interrupt ${survivor.irq} is still pinned by "${survivor.owner}" after its unmap notification; nothing was changed (the owner must unpin in its unmap handler)`,
      );
    }
    return new PendingChange(this, op, delivered, mapEvents);
  }

  /** A pin on an interrupt of `events`, if any survived. O(min(interrupts, pinned interrupts)) per event. */
  #survivingPin(events: readonly MappingEvent[]): PinImpl | undefined {
    if (this.#pins.size === 0) return undefined;
    for (const e of events) {
      if (e.count <= this.#pins.size) {
        for (let irq = e.first; irq < e.first + e.count; irq++) {
          const set = this.#pins.get(irq);
          if (set) return set.values().next().value;
        }
      } else {
        for (const [irq, set] of this.#pins) if (irq >= e.first && irq < e.first + e.count) return set.values().next().value;
      }
    }
    return undefined;
  }

  /**
   * Deliver events to every matching notifier of the current snapshot, in order; a handler that
   * throws does not stop the others. Returns what threw.
   */
  deliver(events: readonly NotifierEvent[]): Failure[] {
    const failures: Failure[] = [];
    for (const e of events) {
      for (const entry of this.#entries) {
        if (!wants(entry, e)) continue;
        const n = entry.notifier as EsbNotifier;
        try {
          (handlerOf(n, e.kind) as (e: NotifierEvent) => void).call(n, e);
        } catch (err) {
          failures.push([entry, e, err]);
        }
      }
    }
    return failures;
  }

  /** Re-announce the old pages, newest first, to each notifier that took an unmap. Handler errors are traced, not thrown. */
  rollback(op: string, delivered: readonly (readonly [Entry, MappingEvent])[]): void {
    const again = new Map<MappingEvent, MappingEvent>();
    for (let i = delivered.length - 1; i >= 0; i--) {
      const [entry, e] = delivered[i] as readonly [Entry, MappingEvent];
      const n = entry.notifier;
      if (n === null) continue;
      let m = again.get(e);
      if (!m) again.set(e, (m = Object.freeze({ ...e, kind: 'map', reason: 'rollback' })));
      try {
        n.map?.(m);
      } catch (err) {
        traceFailure(this.region.addr, op, new RemapError('E_NOTIFIER', `${op}: notifier "${entry.name}" threw on the rollback map of ${irqs(e)} (${describeThrown(err)})`, { cause: err }));
      }
    }
  }

  /**
   * The region is closing: deliver `destroy` to every notifier that takes it, then drop them all,
   * release every pin and cut every handle loose. Returns an E_NOTIFIER error if a destroy handler
   * threw (the others were still called), for `close()` to throw after it finished.
   */
  close(): RemapError | undefined {
    const { addr, geometry, nrIrqs } = this.region;
    const failures = this.deliver([Object.freeze({ kind: 'destroy', op: 'close()', addr, size: BigInt(nrIrqs) * geometry.bytesPerIrq })]);
    for (const entry of this.#entries) {
      entry.notifier = null;
      entry.handle.cut();
      for (const p of entry.pins) p.cut();
      entry.pins.clear();
    }
    this.#entries = [];
    this.#pins.clear();
    this.#pinCount = 0;
    if (failures.length === 0) return undefined;
    const [entry, , err] = failures[0] as Failure;
    return new RemapError('E_NOTIFIER', `close(): the region was closed, but notifier "${entry.name}" threw on destroy (${describeThrown(err)})`, { cause: err });
  }

  // ---- events ----

  #event(kind: 'map' | 'unmap', reason: MappingReason, op: string, first: number, count: number, backing: EventBacking): MappingEvent {
    const bpi = this.region.geometry.bytesPerIrq;
    return Object.freeze({ kind, reason, op, first, count, addr: this.region.addr + BigInt(first) * bpi, size: BigInt(count) * bpi, backing });
  }

  #passthrough(source: PageSource, skip: number): EventBacking {
    return Object.freeze({
      kind: 'passthrough',
      device: source.name,
      source: source.nameOf(skip),
      sourceOffset: source.offset + BigInt(skip) * this.region.geometry.bytesPerIrq,
    });
  }
}
