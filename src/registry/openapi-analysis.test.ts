import { describe, expect, it } from "vitest";
import { analyzeOpenApi, type OpenApiAnalysisLimits } from "./openapi-analysis.js";
import { decodeSummary } from "./openapi-summary-codec.js";

type Json = Record<string, unknown>;

const limits: OpenApiAnalysisLimits = { maxOperations: 1000, maxBaselineBytes: 1024 * 1024 };

/** A document with `count` operations, GET /r0 … GET /r{count-1}, each answering 200. */
function document(count: number, extra: Json = {}): Buffer {
  const paths: Json = {};
  for (let index = 0; index < count; index++) {
    paths[`/r${index}`] = { get: { responses: { "200": { description: "ok" } } } };
  }
  return Buffer.from(
    JSON.stringify({ openapi: "3.0.3", info: { title: "t", version: "1" }, paths, ...extra }),
  );
}

function analyze(body: Buffer, baseline?: { hash: string; summary: Uint8Array }, bounds = limits) {
  return analyzeOpenApi({ body, contentType: "application/json", baseline, limits: bounds });
}

describe("analyzeOpenApi", () => {
  it("gives the first summary, then nothing for the same document, then a diff", () => {
    const first = analyze(document(3));
    expect(first).toMatchObject({ against: "none", operationCount: 3 });
    expect(first.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(Object.keys(decodeSummary(first.summary as Uint8Array) ?? {})).toEqual([
      "GET /r0",
      "GET /r1",
      "GET /r2",
    ]);
    const baseline = { hash: first.hash, summary: first.summary as Uint8Array };

    expect(analyze(document(3), baseline)).toEqual({
      hash: first.hash,
      operationCount: 3,
      against: "same",
    });

    const moved = analyze(document(2), baseline);
    expect(moved).toMatchObject({ against: "moved", operationCount: 2 });
    expect(moved.diff).toMatchObject({ removed: ["GET /r2"], removedCount: 1, breaking: true });

    // Prose only: the hash moves, the operations do not.
    const reworded = analyze(document(3, { externalDocs: { url: "https://x" } }), baseline);
    expect(reworded.against).toBe("moved");
    expect(reworded.diff).toMatchObject({ addedCount: 0, removedCount: 0, changedCount: 0 });
  });

  it("reads a baseline it cannot decode as none, and records a new one", () => {
    const fresh = analyze(document(2), {
      hash: "0".repeat(64),
      summary: Buffer.from('{"GET /r0":"x"}'),
    });
    expect(fresh.against).toBe("none");
    expect(fresh.summary).toBeDefined();
    const corrupted = Buffer.from(fresh.summary as Uint8Array);
    corrupted[corrupted.length - 1] = (corrupted.at(-1) ?? 0) ^ 0xff;
    expect(analyze(document(3), { hash: "1".repeat(64), summary: corrupted }).against).toBe("none");
  });

  it("refuses a document with more operations than allowed, whatever its baseline", () => {
    expect(() => analyze(document(11), undefined, { ...limits, maxOperations: 10 })).toThrow(
      expect.objectContaining({
        kind: "invalid",
        message: "OpenAPI document has 11 operations, more than 10",
      }),
    );
  });

  it("refuses a summary larger than a baseline may take, naming both sizes", () => {
    const size = (analyze(document(200)).summary as Uint8Array).byteLength;
    expect(analyze(document(200), undefined, { ...limits, maxBaselineBytes: size }).against).toBe(
      "none",
    );
    expect(() =>
      analyze(document(200), undefined, { ...limits, maxBaselineBytes: size - 1 }),
    ).toThrow(
      expect.objectContaining({
        kind: "invalid",
        message: `OpenAPI baseline would take ${size} bytes, more than ${size - 1}`,
      }),
    );
  });

  it("keeps a summary small: the 1,000 operations here take a few KB", () => {
    const summary = analyze(document(1000)).summary as Uint8Array;
    expect(summary.byteLength).toBeLessThan(8 * 1024);
    expect(Object.keys(decodeSummary(summary) ?? {})).toHaveLength(1000);
  });
});
