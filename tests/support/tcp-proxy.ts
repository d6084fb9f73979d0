import { connect, createServer, type Socket } from "node:net";

/**
 * How a cut link fails:
 * - "reset": every open connection is reset and new ones are reset as soon as they are accepted
 *   (a peer that is down, or a firewall that rejects);
 * - "blackhole": connections stay open but nothing crosses in either direction, and new ones are
 *   accepted but carry nothing (a partition that drops packets: only timeouts and pings notice).
 *   On heal, what was held back is delivered, as TCP would retransmit it.
 */
export type CutMode = "reset" | "blackhole";

/** A TCP forwarder on 127.0.0.1 whose link to its target can be cut and healed. */
export interface TcpProxy {
  readonly port: number;
  /** `http://127.0.0.1:<port>`: a peer URL that reaches the target through the proxy. */
  readonly url: string;
  /** Connections accepted so far, cut ones included. */
  readonly accepted: number;
  /** Connections open now. */
  readonly open: number;
  /** Whether the link is cut, and how. */
  readonly cutMode: CutMode | undefined;
  /** Cuts the link (see {@link CutMode}). Cutting a cut link again changes only its mode. */
  cut(mode?: CutMode): void;
  /** Lets traffic through again, to open and new connections alike. */
  heal(): void;
  /** Resets every connection and stops listening. Idempotent. */
  close(): Promise<void>;
}

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
}

/**
 * Starts a proxy on a free loopback port forwarding to `127.0.0.1:<targetPort>` (a function: read
 * at each connection, so the target's port may be chosen after the proxy holds its own). The
 * target need not listen yet: a connection made while nothing listens there is reset, as a direct
 * one would be.
 */
export async function startTcpProxy(targetPort: number | (() => number)): Promise<TcpProxy> {
  const target = typeof targetPort === "number" ? () => targetPort : targetPort;
  const pairs = new Set<Pair>();
  let mode: CutMode | undefined;
  let accepted = 0;
  let closed = false;

  const hold = (pair: Pair) => {
    pair.client.pause();
    pair.upstream.pause();
  };
  const release = (pair: Pair) => {
    pair.client.resume();
    pair.upstream.resume();
  };
  const reset = (pair: Pair) => {
    pairs.delete(pair);
    pair.client.resetAndDestroy();
    pair.upstream.resetAndDestroy();
  };

  const server = createServer({ pauseOnConnect: true }, (client) => {
    accepted++;
    if (mode === "reset" || closed) {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect({ host: "127.0.0.1", port: target() });
    const pair: Pair = { client, upstream };
    pairs.add(pair);
    forward(client, upstream, () => mode === undefined);
    forward(upstream, client, () => mode === undefined);
    const end = () => {
      if (pairs.delete(pair)) {
        // A reset on one side shows as a reset on the other, as on a direct connection.
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    if (mode === "blackhole") hold(pair);
    else release(pair);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (typeof address !== "object" || address === null) throw new Error("the proxy has no port");
  const port = address.port;

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get accepted() {
      return accepted;
    },
    get open() {
      return pairs.size;
    },
    get cutMode() {
      return mode;
    },
    cut(next = "reset") {
      mode = next;
      for (const pair of [...pairs]) {
        if (next === "reset") reset(pair);
        else hold(pair);
      }
    },
    heal() {
      mode = undefined;
      for (const pair of pairs) release(pair);
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const pair of [...pairs]) reset(pair);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Copies `from` to `to`, with backpressure, while `flowing()` (a held pair stays paused). */
function forward(from: Socket, to: Socket, flowing: () => boolean): void {
  from.on("data", (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on("drain", () => {
    if (flowing()) from.resume();
  });
  from.on("end", () => to.end());
}
