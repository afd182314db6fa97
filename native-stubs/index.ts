/**
 * xive-remap/native-stubs: stand-ins for what only a POWER host has (memfd-backed fake XIVE and
 * passthrough devices), and helpers that read their stamps back through memory.
 */
export { FakeXiveDevice, FakePassthroughDevice } from './fake-devices.js';
export type { FakeXiveOptions, FakePassthroughOptions } from './fake-devices.js';
export { readStamp, readStampAt, expectedStamp } from './stamps.js';
export { FaultyNative, FAULTABLE_CALLS, type FaultableCall, type FaultMode, type FaultSpec, type FiredFault, type CallRecord, type Recording } from './faulty-native.js';
