import { expect } from 'chai';
import { esbGeometry, esbOffset, esbSpan, RemapError } from 'xive-remap';

const KiB = 1024n;

describe('ESB geometry', () => {
  const ok: [shift: number, host: number, pages: number, page: bigint, perIrq: bigint][] = [
    [12, 4096, 1, 4n * KiB, 4n * KiB],
    [13, 4096, 2, 4n * KiB, 8n * KiB],
    [16, 4096, 1, 64n * KiB, 64n * KiB],
    [17, 4096, 2, 64n * KiB, 128n * KiB],
    [16, 65536, 1, 64n * KiB, 64n * KiB],
    [17, 65536, 2, 64n * KiB, 128n * KiB],
  ];
  for (const [shift, host, pages, page, perIrq] of ok) {
    it(`esbShift ${shift} on ${host}-byte host pages is ${pages} page(s) of ${page} bytes`, () => {
      const g = esbGeometry(shift, host);
      expect(g).to.deep.equal({ esbShift: shift, pagesPerIrq: pages, esbPageSize: page, bytesPerIrq: perIrq, hostPageSize: BigInt(host) });
      expect(Object.isFrozen(g)).to.equal(true);
    });
  }

  const bad: [shift: number, host: number, why: RegExp][] = [
    [12, 65536, /smaller than the 65536-byte host page/],
    [13, 65536, /smaller than the 65536-byte host page/],
    [14, 4096, /not one of/],
    [17.5, 4096, /not one of/],
    [NaN, 4096, /not one of/],
    [17, 3000, /not a power of two/],
  ];
  for (const [shift, host, why] of bad) {
    it(`refuses esbShift ${shift} on ${host}-byte pages with E_GEOMETRY`, () => {
      let err: unknown;
      try {
        esbGeometry(shift, host);
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(RemapError);
      expect((err as RemapError).code).to.equal('E_GEOMETRY');
      expect((err as RemapError).message).to.match(why);
    });
  }

  const offsets: [shift: number, irq: number, page: 0 | 1, off: bigint][] = [
    [17, 0, 0, 0n],
    [17, 0, 1, 64n * KiB],
    [17, 3, 1, 3n * 128n * KiB + 64n * KiB],
    [16, 5, 0, 5n * 64n * KiB],
    [13, (1 << 20) - 1, 1, BigInt((1 << 20) - 1) * 8n * KiB + 4n * KiB],
  ];
  for (const [shift, irq, page, off] of offsets) {
    it(`puts page ${page} of interrupt ${irq} at 0x${off.toString(16)} with esbShift ${shift}`, () => {
      expect(esbOffset(esbGeometry(shift, 4096), irq, page)).to.equal(off);
    });
  }

  it('spans a 1Mi-interrupt region with esbShift 13 in 8 GiB (beyond 2^32: bigint)', () => {
    expect(esbSpan(esbGeometry(13, 4096), 1 << 20)).to.equal(8n << 30n);
    expect(esbSpan(esbGeometry(17, 65536), 1 << 20)).to.equal(128n << 30n);
  });
});
