import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // End-to-end tests start real servers on fixed loopback addresses; run files one at a time
    // so that two suites never fight over a port or a data directory.
    fileParallelism: false,
  },
});
