import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    // Keeps every test's files for one secrets scan at the end (tests/global-setup.ts).
    globalSetup: ["tests/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start real processes on loopback: keep parallelism modest on 2 cores.
    maxWorkers: 2,
    reporters: ["default"],
  },
});
