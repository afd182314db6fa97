/**
 * The native layer: typed system calls (see `types.ts` for the contract, `libc.ts` for the real
 * implementation). Everything else in xive-remap reaches the kernel only through a `NativeLayer`.
 */
export * from './types.js';
export { parseMaps, mapsIn, OwnedRanges } from './maps.js';
export { realNative } from './libc.js';
