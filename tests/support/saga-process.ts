// A process that uses the Redis saga store directly, as an orchestrator's workflow engine would,
// for the multi-process tests (run with `node --import tsx`). Configured by its environment:
//   REDIS_URL, SAGA_PREFIX (the key prefix), SAGA_MODE:
//   - "race": reads saga SAGA_ID, prints "ready", waits for a line "go" on stdin, then moves each
//     step in turn to SAGA_TO (RUNNING: taking it over; COMPLETED), at the version it read, and
//     prints one JSON line: {"outcomes": ["won" | <error kind>, ...]} (by step index); then exits.
//   - "write": creates sagas one after another and drives each to an end (or leaves it running),
//     printing {"sagaId", "status", "version"} after every write Redis acknowledged; never exits.
import { createInterface } from "node:readline";
import { pino } from "pino";
import { DomainError } from "../../src/errors/domain-error.js";
import { createRedisClient } from "../../src/redis/redis-client.js";
import type { SagaStatus, SagaStepStatus } from "../../src/sagas/model.js";
import { createRedisSagaStore } from "../../src/sagas/redis-saga-store.js";
import type { SagaStore } from "../../src/sagas/saga-store.js";

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set`);
  return value;
};

const url = env("REDIS_URL");
const redis = createRedisClient(
  { url, port: Number(new URL(url).port) },
  pino({ level: "silent" }),
);
const store = createRedisSagaStore({ redis }, { keyPrefix: env("SAGA_PREFIX") });
await store.open();

const print = (line: unknown) => process.stdout.write(`${JSON.stringify(line)}\n`);

if (env("SAGA_MODE") === "race")
  await race(store, env("SAGA_ID"), env("SAGA_TO") as SagaStepStatus);
else await write(store);

async function race(store: SagaStore, sagaId: string, to: SagaStepStatus): Promise<void> {
  const saga = await store.get(sagaId);
  if (saga === undefined) throw new Error(`no saga ${sagaId}`);
  const lines = createInterface({ input: process.stdin });
  const go = new Promise<void>((resolve) => {
    lines.on("line", (line) => {
      if (line.trim() === "go") resolve();
    });
  });
  print("ready");
  await go;
  lines.close();
  // One step after the other, in the same order in both processes: they race for each step in
  // turn, whichever's write reaches Redis first winning it.
  const outcomes: string[] = [];
  for (const step of saga.steps) {
    outcomes.push(
      await store.transitionStep(sagaId, step.index, { expectedVersion: step.version, to }).then(
        () => "won",
        (error: unknown) => (error instanceof DomainError ? error.kind : String(error)),
      ),
    );
  }
  print({ outcomes });
  await store.close();
  redis.disconnect();
}

async function write(store: SagaStore): Promise<never> {
  for (let n = 0; ; n++) {
    const sagaId = `w-${process.pid}-${n}`;
    const created = await store.create({
      sagaId,
      name: "ingestion",
      runId: sagaId,
      steps: [{ name: "github" }, { name: "jira" }, { name: "index", group: 1 }],
    });
    print({ sagaId, status: created.status, version: created.version });
    const moveSaga = async (to: SagaStatus) => {
      const saga = await store.get(sagaId);
      const moved = await store.transition(sagaId, { expectedVersion: saga?.version ?? 0, to });
      print({ sagaId, status: moved.status, version: moved.version });
    };
    const moveStep = async (index: number, to: SagaStepStatus) => {
      const saga = await store.get(sagaId);
      const version = saga?.steps[index]?.version ?? 0;
      const moved = await store.transitionStep(sagaId, index, { expectedVersion: version, to });
      print({ sagaId, status: moved.saga.status, version: moved.saga.version });
    };
    await moveSaga("RUNNING");
    await moveStep(0, "RUNNING");
    await moveStep(0, "COMPLETED");
    switch (n % 5) {
      case 0:
        for (const index of [1, 2]) {
          await moveStep(index, "RUNNING");
          await moveStep(index, "COMPLETED");
        }
        await moveSaga("COMPLETED");
        break;
      case 1:
        await moveStep(1, "RUNNING");
        await moveStep(1, "FAILED");
        await moveSaga("COMPENSATING");
        await moveStep(0, "COMPENSATING");
        await moveStep(0, "COMPENSATED");
        await moveSaga("COMPENSATED");
        break;
      case 2:
        await moveSaga("ABORTED");
        break;
      case 3:
        await moveStep(1, "RUNNING");
        break;
      default:
        await moveSaga("COMPENSATING");
        await moveStep(0, "COMPENSATING");
        await moveStep(0, "FAILED");
        await moveSaga("FAILED");
    }
  }
}
