/** Re-export of lib/format/envelope.ts for the modules that import the index envelope from here. */
export * from '../format/envelope.js'
