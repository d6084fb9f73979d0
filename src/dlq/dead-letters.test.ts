import { describe, expect, it } from "vitest";
import { DomainError } from "../errors/domain-error.js";
import { createDeadLettersLink, type DeadLetterHandler, type DeadLetters } from "./dead-letters.js";

// A queue that records what it is given: the link's behaviour is all this test looks at.
function recordingQueue() {
  const handlers = new Map<string, DeadLetterHandler>();
  const added: string[] = [];
  const queue: DeadLetters = {
    add: async (input) => {
      added.push(input.eventType);
      return `dlq-${added.length}`;
    },
    handle: (type, handler) => {
      handlers.set(type, handler);
    },
  };
  return { queue, handlers, added };
}

describe("createDeadLettersLink", () => {
  it("hands early handlers to the queue once bound, then forwards everything", async () => {
    const link = createDeadLettersLink();
    const early: DeadLetterHandler = async () => {};
    link.deadLetters.handle("event.delivery", early);
    const refused = await link.deadLetters
      .add({ eventType: "x", payload: {}, failureReason: "r" })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(DomainError);
    expect((refused as DomainError).kind).toBe("unavailable");
    const { queue, handlers, added } = recordingQueue();
    link.bind(queue);
    expect(handlers.get("event.delivery")).toBe(early);
    expect(await link.deadLetters.add({ eventType: "x", payload: {}, failureReason: "r" })).toBe(
      "dlq-1",
    );
    link.deadLetters.handle("workflow.step", early);
    expect([...handlers.keys()]).toEqual(["event.delivery", "workflow.step"]);
    expect(added).toEqual(["x"]);
    expect(() => link.bind(queue)).toThrow(/bound already/);
    expect(() => createDeadLettersLink().deadLetters.handle("a", early)).not.toThrow();
  });
});
