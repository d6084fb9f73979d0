import { afterEach, describe, expect, it } from "vitest";
import { DomainError } from "../errors/domain-error.js";
import { createOpenApiAnalyzer, type OpenApiAnalyzer } from "./openapi-analyzer.js";

/** A JSON document of `count` operations, big enough (about 60 bytes each) to own its memory. */
function document(count: number): Buffer {
  const paths: Record<string, unknown> = {};
  for (let index = 0; index < count; index++) {
    paths[`/items/${index}`] = { get: { responses: { "200": { description: `item ${index}` } } } };
  }
  return Buffer.from(
    JSON.stringify({ openapi: "3.0.3", info: { title: "t", version: "1" }, paths }),
  );
}

async function failureOf(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  return error as DomainError;
}

const opened: OpenApiAnalyzer[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((analyzer) => analyzer.close()));
});

function analyzer(options: Parameters<typeof createOpenApiAnalyzer>[0] = {}): OpenApiAnalyzer {
  const created = createOpenApiAnalyzer(options);
  opened.push(created);
  return created;
}

describe("createOpenApiAnalyzer", () => {
  it("starts its worker at the first analysis and stops it on close", async () => {
    const pool = analyzer();
    expect(pool.threads).toBe(0);

    const first = await pool.analyze({ body: document(3), contentType: "application/json" });
    expect(first).toMatchObject({ against: "none", operationCount: 3 });
    expect(pool.threads).toBe(1);

    await pool.close();
    expect(pool.threads).toBe(0);
    const refused = await failureOf(pool.analyze({ body: document(1), contentType: null }));
    expect(refused).toMatchObject({ kind: "unavailable", message: "shutting down" });
  });

  it("hands the document over rather than copying it, and compares with a baseline", async () => {
    const pool = analyzer();
    const body = document(2000);
    expect(body.byteLength).toBeGreaterThan(64 * 1024);
    const first = await pool.analyze({ body, contentType: null });
    // Transferred: this thread no longer holds the document.
    expect(body.byteLength).toBe(0);

    const summary = first.summary as Uint8Array;
    const baseline = { hash: first.hash, summary };
    const same = await pool.analyze({ body: document(2000), contentType: null, baseline });
    expect(same).toEqual({ hash: first.hash, operationCount: 2000, against: "same" });
    // The stored summary is handed over as a copy: the caller's stays intact.
    expect(summary.byteLength).toBeGreaterThan(0);

    const moved = await pool.analyze({ body: document(1990), contentType: null, baseline });
    expect(moved.against).toBe("moved");
    expect(moved.diff).toMatchObject({ removedCount: 10, breaking: true });
  });

  it("turns a refusal into an invalid error with the worker's message", async () => {
    const pool = analyzer({ maxOperations: 5 });
    const tooMany = await failureOf(pool.analyze({ body: document(6), contentType: null }));
    expect(tooMany).toMatchObject({
      kind: "invalid",
      message: "OpenAPI document has 6 operations, more than 5",
    });
    const notJson = await failureOf(
      pool.analyze({ body: Buffer.from("{"), contentType: "application/json" }),
    );
    expect(notJson).toMatchObject({
      kind: "invalid",
      message: "OpenAPI document is not valid JSON",
    });
    // Refusals do not cost the worker.
    expect(pool.threads).toBe(1);
  });

  it("analyses documents one after another on one worker by default", async () => {
    const pool = analyzer();
    const results = await Promise.all(
      [1, 2, 3, 4].map((count) => pool.analyze({ body: document(count), contentType: null })),
    );
    expect(results.map((result) => result.operationCount)).toEqual([1, 2, 3, 4]);
    expect(pool.threads).toBe(1);
  });

  it("refuses bounds that are not positive integers", () => {
    expect(() => createOpenApiAnalyzer({ workers: 0 })).toThrow(RangeError);
    expect(() => createOpenApiAnalyzer({ maxOperations: 1.5 })).toThrow(RangeError);
    expect(() => createOpenApiAnalyzer({ maxBaselineBytes: -1 })).toThrow(RangeError);
  });
});
