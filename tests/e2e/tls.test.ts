import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { credentials } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SystemService } from "../../gen/orchestrator/v1/system_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";

// TLS on the one port: ALPN picks HTTP/1.1 or HTTP/2, and gRPC rides HTTP/2, all with a
// certificate made for this run.

function opensslVersion(): string | undefined {
  try {
    return execFileSync("openssl", ["version"], { encoding: "utf8" }).trim();
  } catch {
    return undefined;
  }
}

const openssl = opensslVersion();

/** A self-signed certificate for CN=localhost, SAN IP:127.0.0.1 and DNS:localhost. */
function makeCertificate(dir: string): { certFile: string; keyFile: string } {
  const certFile = join(dir, "cert.pem");
  const keyFile = join(dir, "key.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      certFile,
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ],
    { stdio: "ignore" },
  );
  return { certFile, keyFile };
}

interface HttpsReply {
  readonly status: number;
  readonly body: string;
  readonly alpn: string | false | null;
  readonly authorized: boolean;
}

/** GET over HTTPS on a connection of its own that offers only "http/1.1" in ALPN. */
function httpsGet(url: string, ca: Buffer): Promise<HttpsReply> {
  const agent = new https.Agent({ ca, ALPNProtocols: ["http/1.1"], keepAlive: false });
  return new Promise<HttpsReply>((resolve, reject) => {
    const request = https.get(url, { agent }, (response) => {
      const socket = response.socket as TLSSocket;
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () =>
        resolve({
          status: response.statusCode ?? 0,
          body,
          alpn: socket.alpnProtocol,
          authorized: socket.authorized,
        }),
      );
      response.on("error", reject);
    });
    request.on("error", reject);
  }).finally(() => agent.destroy());
}

describe.skipIf(openssl === undefined)(`TLS (${openssl ?? "openssl missing"})`, () => {
  let dir = "";
  let cert: Buffer;
  let node: RunningOrchestrator;
  let httpsUrl = "";

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "orchestrator-tls-"));
    const files = makeCertificate(dir);
    cert = readFileSync(files.certFile);
    node = await startOrchestrator({
      env: { TLS_CERT_FILE: files.certFile, TLS_KEY_FILE: files.keyFile },
    });
    httpsUrl = `https://127.0.0.1:${node.port}`;
  });
  afterAll(async () => {
    await node?.close();
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  it("serves HTTPS over HTTP/1.1 with a certificate the client verifies", async () => {
    const reply = await httpsGet(`${httpsUrl}/health`, cert);
    expect(reply.status).toBe(200);
    expect(reply.authorized).toBe(true);
    expect(reply.alpn).toBe("http/1.1");
    expect(JSON.parse(reply.body)).toMatchObject({ status: "healthy" });
  });

  it("refuses a client that does not trust the certificate", async () => {
    await expect(
      new Promise((resolve, reject) => {
        https.get(`${httpsUrl}/health`, { agent: false }, resolve).on("error", reject);
      }),
    ).rejects.toThrow(/self[- ]signed|certificate/i);
  });

  it("does not answer cleartext HTTP on the TLS port", async () => {
    const outcome = await new Promise<string>((resolve) => {
      const request = http.get(`http://127.0.0.1:${node.port}/health`, { agent: false }, (r) => {
        r.resume();
        resolve(`status ${r.statusCode}`);
      });
      request.on("error", (error) => resolve(`error ${error.message}`));
    });
    expect(outcome).toMatch(/^error /);
  });

  it("serves HTTP/2 over TLS when ALPN picks h2, and Info reports h2", async () => {
    const session = http2.connect(httpsUrl, { ca: cert });
    session.on("error", () => {});
    try {
      await new Promise<void>((resolve, reject) => {
        session.once("connect", () => resolve());
        session.once("error", reject);
      });
      expect(session.alpnProtocol).toBe("h2");
      expect(session.encrypted).toBe(true);
      const stream = session.request({ ":method": "GET", ":path": "/info" });
      const [headers, body] = await Promise.all([
        new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once("response", resolve)),
        (async () => {
          let text = "";
          for await (const chunk of stream as AsyncIterable<Buffer>) text += chunk.toString("utf8");
          return text;
        })(),
      ]);
      expect(headers[":status"]).toBe(200);
      const info = JSON.parse(body) as { protocols: string[] };
      expect(info.protocols).toContain("h2");
      expect(info.protocols).toContain("http/1.1");
      expect(info.protocols).not.toContain("h2c");
    } finally {
      session.close();
    }
  });

  it("serves gRPC (grpc-js) over TLS, with the target name overridden to the certificate's", async () => {
    const client = createGrpcJsClient(
      SystemService,
      `127.0.0.1:${node.port}`,
      credentials.createSsl(cert),
      { "grpc.ssl_target_name_override": "localhost" },
    );
    try {
      const info = await client.info({}, { deadline: new Date(Date.now() + 20_000) });
      expect(info.service).toBe("orchestrator");
      expect(info.protocols).toContain("h2");
      expect(info.protocols).toContain("grpc");
      const health = await client.health({}, { deadline: new Date(Date.now() + 20_000) });
      expect(health.status).toBe("healthy");
    } finally {
      client.close();
    }
  });
});

describe("TLS configuration errors", () => {
  it("createApp rejects a missing certificate file, naming TLS_CERT_FILE", async () => {
    const dir = mkdtempSync(join(tmpdir(), "orchestrator-tls-missing-"));
    try {
      const missing = join(dir, "no-such-cert.pem");
      await expect(
        startOrchestrator({ env: { TLS_CERT_FILE: missing, TLS_KEY_FILE: join(dir, "key.pem") } }),
      ).rejects.toThrow(/TLS_CERT_FILE/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
