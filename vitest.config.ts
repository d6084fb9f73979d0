import { defineConfig } from "vitest/config";

// Tests start real servers, processes and redis-servers on loopback: give them room on a loaded
// 2-core machine, and never assert on timing.
export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "tests/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    pool: "forks",
    maxWorkers: 2,
  },
});
