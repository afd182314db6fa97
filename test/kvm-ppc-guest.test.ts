// The POWER KVM guest's pure parts, on any host: the hand-assembled instructions (checked word for
// word against binutils' powerpc64le objdump), the code slot's image, and the checks `create` makes
// before any system call. The guest itself runs only on a POWER9+ KVM-HV host: see
// native-stubs/power9/ppc-guest-checks.mjs (run in the emulated POWER9 by native-stubs/power9/run.sh).
import { expect } from 'chai';
import { RemapError } from '../src/errors.js';
import { realNative, type NativeLayer } from '../src/native/index.js';
import { KvmPpcGuest, PPC_GUEST_LOOP, PPC_GUEST_MAILBOX, PPC_GUEST_MSR, XR_HCALL, exceptionStub, loopCode, ppcGuestImage } from '../native-stubs/kvm-ppc-guest.js';
import { NOP, SPR, addi, b, insnBytes, ld, ldbrx, li, mfspr, sc } from '../native-stubs/ppc64-insns.js';
import { withNoKvmEnv } from './kvm-fixtures.js';

describe('ppc64 instruction encoders', () => {
  // [assembly as objdump prints it, encoder result, the word objdump decodes it from]
  const cases: [string, number, number][] = [
    ['li r4,768', li(4, 0x300), 0x38800300],
    ['li r3,-1', li(3, -1), 0x3860ffff],
    ['li r3,30720', li(3, 0x7800), 0x38607800],
    ['addi r1,r1,-32', addi(1, 1, -32), 0x3821ffe0],
    ['ld r5,12288(0)', ld(5, 0x3000, 0), 0xe8a03000],
    ['ld r3,8(r1)', ld(3, 8, 1), 0xe8610008],
    ['ldbrx r4,0,r5', ldbrx(4, 0, 5), 0x7c802c28],
    ['ldbrx r31,r30,r29', ldbrx(31, 30, 29), 0x7ffeec28],
    ['mfsrr0 r5', mfspr(5, SPR.SRR0), 0x7cba02a6],
    ['mfsrr1 r6', mfspr(6, SPR.SRR1), 0x7cdb02a6],
    ['mfdar r7', mfspr(7, SPR.DAR), 0x7cf302a6],
    ['mfdsisr r8', mfspr(8, SPR.DSISR), 0x7d1202a6],
    ['mflr r0', mfspr(0, 8), 0x7c0802a6],
    ['mfpir r3 (mfspr r3,1023)', mfspr(3, 1023), 0x7c7ffaa6],
    ['sc', sc(0), 0x44000002],
    ['sc 1', sc(1), 0x44000022],
    ['b .-16', b(-16), 0x4bfffff0],
    ['b .+8', b(8), 0x48000008],
    ['nop', NOP, 0x60000000],
  ];
  for (const [asm, got, want] of cases) {
    it(`encodes ${asm} as 0x${want.toString(16).padStart(8, '0')}`, () => {
      expect(got).to.equal(want);
    });
  }

  it('refuses what does not fit its field', () => {
    expect(() => li(32, 0)).to.throw(RangeError, /r32/);
    expect(() => li(3, 0x8000)).to.throw(RangeError, /signed 16-bit/);
    expect(() => li(3, -0x8001)).to.throw(RangeError);
    expect(() => ld(3, 6, 1)).to.throw(RangeError, /multiple of 4/);
    expect(() => ldbrx(3, -1, 4)).to.throw(RangeError);
    expect(() => mfspr(3, 1024)).to.throw(RangeError);
    expect(() => b(2)).to.throw(RangeError);
    expect(() => b(0x2000000)).to.throw(RangeError);
    expect(() => sc(2 as 0)).to.throw(RangeError);
  });

  it('lays words out little-endian, as the guest (MSR.LE) fetches them', () => {
    expect([...insnBytes([sc(1), 0x01020304])]).to.deep.equal([0x22, 0x00, 0x00, 0x44, 0x04, 0x03, 0x02, 0x01]);
  });
});

describe('KvmPpcGuest code slot', () => {
  const image = ppcGuestImage();
  const word = (at: number): number => new DataView(image.buffer, image.byteOffset).getUint32(at, true);

  it('runs the loop at 0x2000: ld r5 from the mailbox, ldbrx r4 from it, hcall LOADED, branch back', () => {
    expect(loopCode()).to.deep.equal([0xe8a03000, 0x7c802c28, 0x38607800, 0x44000022, 0x4bfffff0]);
    expect([0, 4, 8, 12, 16].map((o) => word(Number(PPC_GUEST_LOOP) + o))).to.deep.equal(loopCode());
    expect(XR_HCALL.LOADED).to.equal(0x7800);
  });

  it('puts an exception stub every 0x20 bytes below the loop, each naming its own vector', () => {
    for (let v = 0; v < Number(PPC_GUEST_LOOP); v += 0x20) {
      const stub = exceptionStub(v);
      expect(stub.length * 4, 'a stub fits its 0x20 bytes').to.be.at.most(0x20);
      expect(stub.map((_, i) => word(v + i * 4)), `stub at 0x${v.toString(16)}`).to.deep.equal(stub);
    }
    expect(exceptionStub(0x300)).to.deep.equal([0x38800300, 0x7cba02a6, 0x7cdb02a6, 0x7cf302a6, 0x7d1202a6, 0x38607804, 0x44000022]);
  });

  it('leaves the mailbox zero, and runs the guest 64-bit, little-endian, in real mode with interrupts and FP off', () => {
    expect(image.length).to.equal(0x4000);
    expect(Buffer.from(image).readBigUInt64LE(Number(PPC_GUEST_MAILBOX))).to.equal(0n);
    expect(PPC_GUEST_MSR).to.equal(0x8000000000001001n); // SF | ME | LE; IR, DR, EE, PR, FP clear
  });
});

describe('KvmPpcGuest off POWER', () => {
  const ppcNative: NativeLayer = { ...realNative, arch: 'ppc64', pageSize: 65536 };
  const memslot = { userspaceAddr: 0x7fff_0000_0000n, size: 0x20_0000n };

  it(`usable() says why not (${process.arch} host)`, function () {
    if (process.arch === 'ppc64') this.skip();
    // The architecture's reason (XIVE_REMAP_NO_KVM would take precedence: test/no-kvm.test.ts).
    expect(withNoKvmEnv(undefined, () => KvmPpcGuest.usable())).to.match(/needs a ppc64 host; this one is /);
  });

  it('create() throws E_DEVICE_UNAVAILABLE off ppc64, before any system call', function () {
    if (process.arch === 'ppc64') this.skip();
    expect(() => KvmPpcGuest.create({ memslot })).to.throw(RemapError, /needs a ppc64 host/).with.property('code', 'E_DEVICE_UNAVAILABLE');
  });

  it('create() refuses a bad region or placement with RangeError before any system call', () => {
    const bad: [string, Parameters<typeof KvmPpcGuest.create>[0], RegExp][] = [
      ['empty', { memslot: { ...memslot, size: 0n }, native: ppcNative }, /non-empty/],
      ['size off the 64 KiB page', { memslot: { ...memslot, size: 0x1000n }, native: ppcNative }, /aligned/],
      ['host address off the page', { memslot: { ...memslot, userspaceAddr: memslot.userspaceAddr + 0x1000n }, native: ppcNative }, /aligned/],
      ['over the code slot', { memslot, guestPhysAddr: 0n, native: ppcNative }, /code slot/],
      ['gpa off the page', { memslot, guestPhysAddr: (4n << 30n) + 0x1000n, native: ppcNative }, /aligned/],
      ['past 2^52', { memslot, guestPhysAddr: (1n << 52n) - 0x10_0000n, native: ppcNative }, /2\^52/],
      ['slots without vm', { memslot, native: ppcNative, slots: {} as never }, /slots/],
    ];
    for (const [what, opts, message] of bad) expect(() => KvmPpcGuest.create(opts), what).to.throw(RangeError, message);
  });
});
