import http, { type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * How the fake answers `GET /health`: 200, 503, or never (the request is held until the client
 * gives up or the fake closes).
 */
export type FakeHealth = "healthy" | "unhealthy" | "slow";

/** How the fake answers `GET /openapi.json`. */
export type FakeOpenApi =
  /** This body, with this content type (default `application/json`), and this status (200). */
  | {
      readonly kind: "document";
      readonly body: string | Buffer;
      readonly contentType?: string;
      readonly status?: number;
    }
  /** Headers never come: the request is held until the client gives up or the fake closes. */
  | { readonly kind: "hang" }
  /**
   * `bytes` of JSON-looking filler, written 64 KiB at a time as the client reads, with a
   * `content-length` only when `declareLength` (default false: chunked, so the client must count).
   */
  | { readonly kind: "huge"; readonly bytes: number; readonly declareLength?: boolean };

/** One request the fake received. */
export interface FakeRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
}

/** What happened to one `huge` answer. */
export interface HugeTransfer {
  /** Bytes handed to the socket so far. */
  sent: number;
  /** True once every byte was written. */
  completed: boolean;
  /** True once the connection closed, whoever closed it. */
  closed: boolean;
}

/** A downstream service on loopback whose health and OpenAPI document a test controls. */
export interface FakeService {
  /** `http://127.0.0.1:<port>`, without a trailing slash. */
  readonly url: string;
  /** `{url}/openapi.json`. */
  readonly openapiUrl: string;
  /** What `GET /health` answers from now on. Default "healthy". */
  setHealth(health: FakeHealth): void;
  /** What `GET /openapi.json` answers from now on. Default: a 404. */
  setOpenApi(openapi: FakeOpenApi): void;
  /** Serves `document` as JSON (a shorthand of `setOpenApi`). */
  serveDocument(document: unknown): void;
  /** Every request received, oldest first. */
  readonly requests: readonly FakeRequest[];
  /** Every `huge` answer started, oldest first. */
  readonly hugeTransfers: readonly HugeTransfer[];
  /** Stops listening and drops every connection, held requests included. Idempotent. */
  close(): Promise<void>;
}

const chunkSize = 64 * 1024;

/**
 * Starts a fake downstream service on 127.0.0.1 and a free port. Any other path answers 404.
 */
export async function startFakeService(): Promise<FakeService> {
  let health: FakeHealth = "healthy";
  let openapi: FakeOpenApi = { kind: "document", body: "not found", status: 404 };
  const requests: FakeRequest[] = [];
  const hugeTransfers: HugeTransfer[] = [];

  const server = http.createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0] ?? "/";
    requests.push({ method: request.method ?? "GET", path, headers: request.headers });
    response.on("error", () => {});
    if (path === "/health") answerHealth(response, health);
    else if (path === "/openapi.json") answerOpenApi(response, openapi, hugeTransfers);
    else respond(response, 404, "text/plain", "not found");
  });
  // A client may reset a connection the fake is writing to; that is the client's right.
  server.on("clientError", (_error, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  let closing: Promise<void> | undefined;
  return {
    url,
    openapiUrl: `${url}/openapi.json`,
    setHealth(next) {
      health = next;
    },
    setOpenApi(next) {
      openapi = next;
    },
    serveDocument(document) {
      openapi = { kind: "document", body: JSON.stringify(document) };
    },
    requests,
    hugeTransfers,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

function answerHealth(response: http.ServerResponse, health: FakeHealth): void {
  if (health === "slow") return; // held: the prober's timeout, or close(), ends it
  if (health === "healthy") respond(response, 200, "application/json", '{"status":"ok"}');
  else respond(response, 503, "application/json", '{"status":"unavailable"}');
}

function answerOpenApi(
  response: http.ServerResponse,
  openapi: FakeOpenApi,
  transfers: HugeTransfer[],
): void {
  switch (openapi.kind) {
    case "hang":
      return;
    case "document":
      respond(
        response,
        openapi.status ?? 200,
        openapi.contentType ?? "application/json",
        openapi.body,
      );
      return;
    default: {
      const transfer: HugeTransfer = { sent: 0, completed: false, closed: false };
      transfers.push(transfer);
      void sendHuge(response, openapi.bytes, openapi.declareLength ?? false, transfer);
    }
  }
}

async function sendHuge(
  response: http.ServerResponse,
  bytes: number,
  declareLength: boolean,
  transfer: HugeTransfer,
): Promise<void> {
  response.once("close", () => {
    transfer.closed = true;
  });
  response.writeHead(200, {
    "content-type": "application/json",
    ...(declareLength ? { "content-length": String(bytes) } : {}),
  });
  const prefix = Buffer.from('{"openapi":"3.0.3","paths":{},"x-filler":"');
  const filler = Buffer.alloc(chunkSize, "a");
  while (transfer.sent < bytes && !transfer.closed) {
    const chunk = transfer.sent === 0 ? prefix : filler.subarray(0, bytes - transfer.sent);
    transfer.sent += chunk.length;
    if (!response.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          response.off("drain", done);
          response.off("close", done);
          resolve();
        };
        response.on("drain", done);
        response.on("close", done);
      });
    }
  }
  if (transfer.closed) return;
  transfer.completed = true;
  response.end();
}

function respond(
  response: http.ServerResponse,
  status: number,
  contentType: string,
  body: string | Buffer,
): void {
  response.writeHead(status, { "content-type": contentType });
  response.end(body);
}
