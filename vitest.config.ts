import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start real processes on loopback: keep parallelism modest on 2 cores.
    maxWorkers: 2,
    reporters: ["default"],
  },
});
