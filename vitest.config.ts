import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['__test__/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Crash tests spawn child processes; two cores, so keep file parallelism modest.
    maxWorkers: 2,
    // @langchain/langgraph-checkpoint-validation registers its specs through vitest globals.
    globals: true,
  },
})
