import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventLog } from "../events/event-log.js";
import type { RegistryChange, ReplicationCursor } from "../registry/model.js";
import type { RegistryStore } from "../registry/registry-store.js";
import type { AntiEntropyPeer } from "./anti-entropy.js";
import type { ReplicationMerger } from "./merge.js";
import type { ReplicationMessage } from "./replication-feed.js";

/**
 * The most changes a node accepts in one batch from a peer: a larger batch is refused as a
 * malformed message is (the stream fails, and resumes from the cursor). Eight times what this
 * version sends, so that a later version may send larger batches to this one.
 */
export const maxReceivedBatchChanges = 4_096;

/** State of the link to one peer, as /peers shows it. */
export type PeerState = "CONNECTING" | "SYNCING" | "LIVE" | "BACKOFF" | "UNAUTHENTICATED";

/** Everything a link needs from a peer, whatever carries the calls (gRPC in production). */
export interface PeerTransport extends AntiEntropyPeer {
  /**
   * Opens the peer's replication stream, asking for batches; ends or throws when the link breaks.
   * A batch of more than {@link maxReceivedBatchChanges} fails the stream (kind "invalid"), and a
   * malformed change in a batch fails it after the changes before it, as it would alone.
   */
  replicate(
    request: {
      readonly nodeId: string;
      readonly incarnationId: string;
      readonly fromHistoryId: string;
      readonly fromRevision: number;
    },
    signal: AbortSignal,
  ): AsyncIterable<ReplicationMessage>;
  close(): void;
}

/** Why a peer call failed, as the transport classifies it. */
export class PeerCallError extends Error {
  override readonly name = "PeerCallError";
  constructor(
    readonly kind: "unauthenticated" | "unavailable" | "invalid" | "other",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What /peers reports for one peer. */
export interface PeerStatus {
  readonly url: string;
  readonly nodeId: string;
  readonly state: PeerState;
  /**
   * Unix ms of the last message received from the peer; 0 before any. An attempt to connect is no
   * contact: a peer that is down, or stopped with its port still accepting, keeps the time of its
   * last message.
   */
  readonly lastContact: number;
  /** The peer's revision we have applied up to. */
  readonly appliedRevision: number;
  /** Changes the peer has that we have not applied yet. */
  readonly lagChanges: number;
  /** How long we have been behind the peer, in ms; 0 when caught up. */
  readonly lagMs: number;
  readonly lastError: string;
  readonly historyId: string;
  readonly reconnects: number;
  readonly appliedChanges: number;
  /** Changes received from the peer, applied or not (a measure of the stream's traffic). */
  readonly receivedChanges: number;
}

export interface PeerLinkOptions {
  /** First wait before reconnecting; doubles per failure up to `maxBackoffMs`. Default 200 ms. */
  initialBackoffMs: number;
  /** Default 10 s. */
  maxBackoffMs: number;
  /** A link with no message for this long is considered dead and reconnects. Default 6 s. */
  silenceTimeoutMs: number;
  /** The cursor is persisted at most this often while changes stream in. Default 200 ms. */
  cursorFlushMs: number;
}

const defaults: PeerLinkOptions = Object.freeze({
  initialBackoffMs: 200,
  maxBackoffMs: 10_000,
  silenceTimeoutMs: 6_000,
  cursorFlushMs: 200,
});

/**
 * The pull side of replication with one peer: keeps a Replicate stream open to it, merges every
 * change it sends, and persists the cursor it has applied so that a reconnect (or a restart of
 * this node) resumes where it stopped, asking for a snapshot only when the peer cannot serve the
 * gap. Reconnects with exponential backoff and jitter; a silent peer is dropped after
 * `silenceTimeoutMs` (the peer sends keepalives), and so is an attempt that gets no answer.
 * Losing the peer is logged once at warn, regaining it once at info, whatever the number of
 * attempts in between (each attempt's failure is logged at debug).
 */
export class PeerLink {
  private readonly options: PeerLinkOptions;
  private state: PeerState = "CONNECTING";
  private peerNodeId = "";
  private peerHistoryId = "";
  private lastContact = 0;
  private applied = 0;
  private peerRevision = 0;
  private behindSince = 0;
  private lastError = "";
  /** Whether the link last reached the peer (logged on change); undefined before any attempt. */
  private reachable: boolean | undefined;
  private reconnects = 0;
  private appliedChanges = 0;
  private receivedChanges = 0;
  private cursor: ReplicationCursor | undefined;
  private cursorDirty = false;
  private cursorFlushedAt = 0;
  private stopped = false;
  private abort: AbortController | undefined;
  private loop: Promise<void> | undefined;
  private sleeper: { timer: NodeJS.Timeout; wake: () => void } | undefined;

  constructor(
    readonly url: string,
    private readonly deps: {
      readonly transport: PeerTransport;
      readonly store: RegistryStore;
      readonly merger: ReplicationMerger;
      readonly clock: Clock;
      readonly events: EventLog;
      readonly logger: Logger;
      readonly nodeId: string;
      readonly incarnationId: string;
      readonly random?: () => number;
    },
    options: Partial<PeerLinkOptions> = {},
  ) {
    this.options = { ...defaults, ...options };
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Ends the stream, persists the cursor and waits for the loop to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    if (this.sleeper) {
      clearTimeout(this.sleeper.timer);
      this.sleeper.wake();
    }
    await this.loop;
    await this.flushCursor(true).catch(() => {});
    this.deps.transport.close();
  }

  status(): PeerStatus {
    const now = this.deps.clock.now();
    const lagChanges = Math.max(0, this.peerRevision - this.applied);
    return {
      url: this.url,
      nodeId: this.peerNodeId,
      state: this.state,
      lastContact: this.lastContact,
      appliedRevision: this.applied,
      lagChanges,
      lagMs: lagChanges > 0 && this.behindSince > 0 ? now - this.behindSince : 0,
      lastError: this.lastError,
      historyId: this.peerHistoryId,
      reconnects: this.reconnects,
      appliedChanges: this.appliedChanges,
      receivedChanges: this.receivedChanges,
    };
  }

  private async run(): Promise<void> {
    let failures = 0;
    this.cursor = await this.deps.store.getCursor(this.url).catch(() => undefined);
    if (this.cursor) {
      this.applied = this.cursor.revision;
      this.peerHistoryId = this.cursor.historyId;
    }
    while (!this.stopped) {
      this.state = "CONNECTING";
      const connected = await this.follow();
      if (this.stopped) return;
      failures = connected ? 1 : failures + 1;
      this.reconnects++;
      if ((this.state as PeerState) !== "UNAUTHENTICATED") this.state = "BACKOFF";
      const base = Math.min(
        this.options.maxBackoffMs,
        this.options.initialBackoffMs * 2 ** Math.min(failures - 1, 16),
      );
      // Full jitter: peers that failed together do not all come back together.
      await this.sleep(base / 2 + (this.deps.random ?? Math.random)() * (base / 2));
    }
  }

  /** One stream: returns whether it got as far as the peer's hello. */
  private async follow(): Promise<boolean> {
    const abort = new AbortController();
    this.abort = abort;
    let helloSeen = false;
    let silence: NodeJS.Timeout | undefined;
    // Armed before the first message too: a peer that accepts the connection and never answers
    // (stopped, overloaded) is given up on like one that goes quiet later. One timer per stream,
    // pushed back by every message (a snapshot is thousands of them: no new timer for each).
    const expectWithinSilence = () => {
      if (silence !== undefined) {
        silence.refresh();
        return;
      }
      silence = setTimeout(
        () => abort.abort(new PeerCallError("unavailable", "the peer went silent")),
        this.options.silenceTimeoutMs,
      );
      silence.unref();
    };
    try {
      expectWithinSilence();
      const stream = this.deps.transport.replicate(
        {
          nodeId: this.deps.nodeId,
          incarnationId: this.deps.incarnationId,
          fromHistoryId: this.cursor?.historyId ?? "",
          fromRevision: this.cursor?.revision ?? 0,
        },
        abort.signal,
      );
      for await (const message of stream) {
        if (message.kind === "hello") {
          // Throws for a hello from this very node: that is no contact with a peer.
          this.onHello(message);
          helloSeen = true;
        }
        this.lastContact = this.deps.clock.now();
        expectWithinSilence();
        if (message.kind !== "hello") await this.onMessage(message);
      }
      // The peer ended the stream (it is draining): reconnect, to it or when it is back.
      if (!this.stopped) this.fail(new PeerCallError("unavailable", "the peer closed the stream"));
    } catch (error) {
      // A stream we aborted for silence fails with the transport's error: ours says why.
      const reason: unknown = abort.signal.aborted ? abort.signal.reason : undefined;
      if (!this.stopped) this.fail(reason instanceof PeerCallError ? reason : error);
    } finally {
      clearTimeout(silence);
      await this.flushCursor(true).catch(() => {});
      if (helloSeen && !this.stopped) {
        this.deps.events.append({
          type: "replication.peer.disconnected",
          subject: this.url,
          payload: { url: this.url, node_id: this.peerNodeId, error: this.lastError },
        });
      }
    }
    return helloSeen;
  }

  private onHello(hello: Extract<ReplicationMessage, { kind: "hello" }>): void {
    if (hello.nodeId === this.deps.nodeId) {
      // A configured peer URL that reaches this very node: replicating with oneself is pointless.
      throw new PeerCallError("invalid", "the peer is this node");
    }
    this.peerNodeId = hello.nodeId;
    this.peerHistoryId = hello.historyId;
    this.lastError = "";
    if (hello.snapshot) {
      // The peer's history is new to us (or our cursor is too old): start over from its snapshot,
      // and measure lag against this history's revisions only.
      this.applied = 0;
      this.cursor = undefined;
      this.peerRevision = hello.revision;
      this.behindSince = 0;
    }
    this.noteRevision(hello.revision);
    this.state = hello.snapshot ? "SYNCING" : "LIVE";
    this.noteReachable();
    this.deps.events.append({
      type: "replication.peer.connected",
      subject: this.url,
      payload: { url: this.url, node_id: hello.nodeId, snapshot: hello.snapshot },
    });
  }

  private async onMessage(message: Exclude<ReplicationMessage, { kind: "hello" }>): Promise<void> {
    switch (message.kind) {
      case "change":
        await this.onChanges([message.change]);
        break;
      case "batch":
        await this.onChanges(message.changes);
        break;
      case "snapshot_end":
        this.advance(message.revision);
        this.state = "LIVE";
        this.deps.events.append({
          type: "replication.snapshot_applied",
          subject: this.url,
          payload: { url: this.url, node_id: this.peerNodeId, revision: message.revision },
        });
        break;
      case "keepalive":
        // Everything up to it we need has come (the peer passes over our own changes).
        this.noteRevision(message.revision);
        if (this.state === "LIVE") this.advance(message.revision);
        break;
    }
    // Nothing to write during a snapshot (the cursor moves at its end): no call, no await.
    if (this.cursorDirty) await this.flushCursor(false);
  }

  /**
   * Merges changes in order, each counted as received and, if so, applied; the cursor and lag
   * then move once, to the last change merged (also when a later one fails to merge: the link
   * resumes after the last one merged).
   */
  private async onChanges(changes: readonly RegistryChange[]): Promise<void> {
    let merged: number | undefined;
    try {
      for (const change of changes) {
        this.receivedChanges++;
        const outcome = await this.deps.merger.merge(change, this.peerNodeId);
        if (outcome === "applied") this.appliedChanges++;
        merged = change.revision;
      }
    } finally {
      if (merged !== undefined) {
        this.noteRevision(merged);
        // During a snapshot the cursor moves only at its end: a snapshot cut short starts over.
        if (this.state !== "SYNCING") this.advance(merged);
      }
    }
  }

  private noteRevision(revision: number): void {
    if (revision > this.peerRevision) this.peerRevision = revision;
    if (this.peerRevision > this.applied && this.behindSince === 0) {
      this.behindSince = this.deps.clock.now();
    }
  }

  private advance(revision: number): void {
    if (revision < this.applied) return;
    this.applied = revision;
    if (this.applied >= this.peerRevision) this.behindSince = 0;
    this.cursor = { historyId: this.peerHistoryId, revision };
    this.cursorDirty = true;
  }

  private async flushCursor(force: boolean): Promise<void> {
    if (!this.cursorDirty || this.cursor === undefined) return;
    const now = this.deps.clock.now();
    if (!force && now - this.cursorFlushedAt < this.options.cursorFlushMs) return;
    this.cursorFlushedAt = now;
    const cursor = this.cursor;
    await this.deps.store.putCursor(this.url, cursor);
    // Still dirty if the cursor moved while it was being written (or the write failed: thrown).
    if (this.cursor === cursor) this.cursorDirty = false;
  }

  private fail(error: unknown): void {
    if (error instanceof PeerCallError && error.kind === "unauthenticated") {
      this.state = "UNAUTHENTICATED";
    }
    this.lastError = safeMessage(error);
    const fields = { peer: this.url, peer_node_id: this.peerNodeId, err: this.lastError };
    if (this.reachable !== false) {
      this.deps.logger.warn(fields, "replication peer unreachable");
      this.reachable = false;
    }
    this.deps.logger.debug(fields, "replication attempt failed");
  }

  /** Logs the peer as reached when it was not (or not yet known) to be. */
  private noteReachable(): void {
    if (this.reachable === true) return;
    this.reachable = true;
    this.deps.logger.info(
      { peer: this.url, peer_node_id: this.peerNodeId },
      "replication peer reachable",
    );
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.sleeper = undefined;
        resolve();
      }, ms);
      timer.unref();
      this.sleeper = { timer, wake: resolve };
    });
  }
}

/** What /peers may say about a failure: the transport's or domain's message, nothing raw. */
function safeMessage(error: unknown): string {
  if (error instanceof PeerCallError || error instanceof DomainError) return error.message;
  return "replication failed";
}
