// Memslots: the pure slot-id allocator, then registration on a real VM (where /dev/kvm works):
// per-slot call counts, freed ids reused, and the kernel's refusals as RemapErrors naming the slot.
import { expect } from 'chai';
import { RemapError, errnoOf, errnoValue } from '../src/errors.js';
import { KVM_CAP, KvmSystem, MemslotTable, SlotIdAllocator, UserMemory, type KvmVm } from '../src/kvm/index.js';
import { realNative } from '../src/native/index.js';
import { kvmUnusable } from './kvm-fixtures.js';

describe('SlotIdAllocator', () => {
  it('hands out ids from 0 upwards', () => {
    const a = new SlotIdAllocator(8);
    expect([a.allocate(), a.allocate(), a.allocate()]).to.deep.equal([0, 1, 2]);
    expect(a.inUse).to.equal(3);
  });

  it('reuses freed ids, lowest first, before new ones', () => {
    const a = new SlotIdAllocator(8);
    for (let i = 0; i < 5; i++) a.allocate();
    a.free(3);
    a.free(1);
    expect([a.allocate(), a.allocate(), a.allocate()]).to.deep.equal([1, 3, 5]);
    expect(a.isAllocated(3)).to.equal(true);
  });

  it('refuses to go past the KVM_CAP_NR_MEMSLOTS limit, and works again after a free', () => {
    const a = new SlotIdAllocator(2);
    a.allocate();
    a.allocate();
    expect(() => a.allocate()).to.throw(RemapError, /all 2 memslot ids are in use/);
    a.free(0);
    expect(a.allocate()).to.equal(0);
  });

  it('refuses to free an id it did not hand out, and a nonsense limit', () => {
    const a = new SlotIdAllocator(4);
    expect(() => a.free(0)).to.throw(RangeError);
    a.allocate();
    a.free(0);
    expect(() => a.free(0)).to.throw(RangeError);
    expect(() => new SlotIdAllocator(0)).to.throw(RangeError);
    expect(() => new SlotIdAllocator(1.5)).to.throw(RangeError);
  });
});


const unusable = kvmUnusable();

describe(`MemslotTable on a real VM${unusable ? ` (skipped: ${unusable})` : ''}`, function () {
  let sys: KvmSystem;
  let vm: KvmVm;
  let mem: UserMemory;
  const ps = BigInt(realNative.pageSize);

  before(function () {
    if (unusable) this.skip();
  });

  beforeEach(() => {
    sys = KvmSystem.open();
    vm = sys.createVm();
    mem = UserMemory.map(realNative, 16n * ps, 'memslot test memory');
  });

  afterEach(() => {
    vm?.close();
    sys?.close();
    mem?.close();
  });

  it('reads its limit from KVM_CAP_NR_MEMSLOTS', () => {
    const t = MemslotTable.open(vm);
    expect(t.limit).to.equal(vm.checkExtension(KVM_CAP.NR_MEMSLOTS)).and.to.be.greaterThan(1);
  });

  it('counts one KVM_SET_USER_MEMORY_REGION per registration and per deletion, and reuses the freed id', () => {
    const t = MemslotTable.open(vm);
    const a = t.add({ guestPhysAddr: 0n, size: 4n * ps, userspaceAddr: mem.addr });
    const b = t.add({ guestPhysAddr: 1n << 30n, size: 4n * ps, userspaceAddr: mem.addr + 4n * ps });
    expect([a.slot, b.slot]).to.deep.equal([0, 1]);
    expect([t.updates(0), t.updates(1), t.totalUpdates]).to.deep.equal([1, 1, 2]);
    t.remove(0);
    expect(t.updates(0)).to.equal(2);
    expect(t.get(0)).to.equal(undefined);
    const c = t.add({ guestPhysAddr: 2n << 30n, size: ps, userspaceAddr: mem.addr });
    expect(c.slot).to.equal(0);
    expect(t.updates(0)).to.equal(3);
    expect(t.slots.map((m) => m.slot)).to.deep.equal([0, 1]);
  });

  it('moves a slot to another host range with two calls (delete, re-add at the same guest range and flags)', () => {
    const t = MemslotTable.open(vm);
    const a = t.add({ guestPhysAddr: 1n << 30n, size: 4n * ps, userspaceAddr: mem.addr });
    const moved = t.move(a.slot, mem.addr + 8n * ps);
    expect(moved).to.deep.equal({ slot: a.slot, guestPhysAddr: 1n << 30n, size: 4n * ps, userspaceAddr: mem.addr + 8n * ps, flags: 0 });
    expect(t.updates(a.slot)).to.equal(3);
    expect(t.get(a.slot)).to.equal(moved);
    expect(() => t.move(9, mem.addr)).to.throw(RangeError);
  });

  it('turns an overlap (EEXIST) into E_KVM naming the slot and range, and gives the id back', () => {
    const t = MemslotTable.open(vm);
    t.add({ guestPhysAddr: 0x10_0000n, size: 4n * ps, userspaceAddr: mem.addr });
    let err: unknown;
    try {
      t.add({ guestPhysAddr: 0x10_0000n + ps, size: 4n * ps, userspaceAddr: mem.addr + 4n * ps });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(RemapError).with.property('code', 'E_KVM');
    expect(errnoOf(err)).to.equal(errnoValue('EEXIST'));
    expect((err as Error).message).to.contain('slot 1 (guest 0x101000+0x4000').and.contain('overlaps slot 0 (guest 0x100000+0x4000');
    expect(t.updates(1)).to.equal(1); // the refused call is counted
    expect(t.add({ guestPhysAddr: 0x20_0000n, size: ps, userspaceAddr: mem.addr }).slot).to.equal(1);
  });

  it('turns a misaligned slot (EINVAL) into E_KVM that says so', () => {
    const t = MemslotTable.open(vm);
    expect(() => t.add({ guestPhysAddr: 0x1001n, size: ps, userspaceAddr: mem.addr }))
      .to.throw(RemapError, /slot 0 \(guest 0x1001\+0x1000 <- host 0x[0-9a-f]+\).*EINVAL.*misaligned/);
    expect(() => t.add({ guestPhysAddr: 0n, size: ps, userspaceAddr: mem.addr + 8n })).to.throw(RemapError, /EINVAL/);
  });

  it('refuses an empty slot before the kernel sees it, and an unknown slot on remove', () => {
    const t = MemslotTable.open(vm);
    expect(() => t.add({ guestPhysAddr: 0n, size: 0n, userspaceAddr: mem.addr })).to.throw(RangeError, /positive/);
    expect(() => t.remove(7)).to.throw(RangeError);
    expect(t.totalUpdates).to.equal(0);
  });
});
