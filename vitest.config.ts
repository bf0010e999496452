import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // two cores: multi-node tests are CPU-heavy, run files one or two at a time
    maxWorkers: 2,
    reporters: ['default']
  }
})
