/**
 * Everything the stand-ins in native-stubs/ and the tests build on, including what the public
 * entry point (`index.ts`) keeps out of the API: the native layer, shared fds, argument checks.
 */
export * from './index.js';
export { SharedFd } from './source.js';
export { checkIrq, checkIrqRange, show } from './validate.js';
export { realNative, parseMaps, mapsIn, OwnedRanges } from './native/index.js';
export * from './native/types.js';
