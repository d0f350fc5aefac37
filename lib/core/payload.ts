/** Re-export of lib/format/payload.ts for the modules that import the COMMIT payload from here. */
export * from '../format/payload.js'
