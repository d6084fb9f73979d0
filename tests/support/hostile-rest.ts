// Hostile REST requests for one route of the gateway, generated from the route's binding (verb,
// path template, body rule) and its input descriptor, and a client that sends them as written.
import type { DescMessage } from "@bufbuild/protobuf";
import fc from "fast-check";
import { Agent, request } from "undici";
import type { RestRoute } from "../../src/gateway/rest-gateway.js";
import { sketch } from "./hostile-checks.js";
import {
  boundaryString,
  deepJson,
  echoThreshold,
  garbageBytes,
  type HostileJson,
  hostileMessageJson,
  jsonText,
  longString,
  longStringsIn,
  messageJson,
  plausibleMessageJson,
} from "./hostile-messages.js";

/** One REST request as it goes on the wire. */
export interface RestCase {
  readonly verb: string;
  /** Path and query, percent-encoded where the generator meant it to be. */
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string | Uint8Array;
  /** Strings of the request longer than the echo threshold: no error may repeat them. */
  readonly longStrings: readonly string[];
}

/** Percent-encodes every byte of the UTF-8 form but the unreserved ones; lone surrogates too. */
export function percentEncoded(text: string): string {
  let out = "";
  for (const byte of Buffer.from(text, "utf8")) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** A path segment: a boundary string encoded, or raw text the router must refuse cleanly. */
const pathSegment: fc.Arbitrary<{ text: string; long: string[] }> = fc.oneof(
  { weight: 4, arbitrary: boundaryString.map((s) => ({ text: percentEncoded(s), long: [s] })) },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom("%", "%zz", "%C0%AF", "%00", "%2F", "..", ".", "%FF%FE", "a%", "%u0041")
      .map((text) => ({ text, long: [] })),
  },
  { weight: 1, arbitrary: longString.map((s) => ({ text: percentEncoded(s), long: [s] })) },
);

/** The text of a query value: a scalar as text, anything else as its JSON. */
function queryText(value: HostileJson): string {
  return typeof value === "string" ? value : jsonText(value);
}

/** Query parameters: fields of the input (dotted for nested ones), unknown names, repeats. */
function queryOf(input: DescMessage): fc.Arbitrary<{ text: string; long: string[] }> {
  const fromFields = fc.oneof(messageJson(input), plausibleMessageJson(input)).map((json) => {
    const pairs: [string, string][] = [];
    for (const [key, value] of Object.entries(json as Record<string, HostileJson>)) {
      if (Array.isArray(value))
        for (const item of value.slice(0, 3)) pairs.push([key, queryText(item)]);
      else if (typeof value === "object" && value !== null) {
        for (const [sub, v] of Object.entries(value).slice(0, 3))
          pairs.push([`${key}.${sub}`, queryText(v)]);
      } else pairs.push([key, queryText(value)]);
    }
    return pairs;
  });
  const extra = fc.array(
    fc.tuple(
      fc.oneof(
        fc.constantFrom(...input.fields.map((f) => f.name), "x", "", "a.b.c", "__proto__"),
        boundaryString,
      ),
      fc.oneof(boundaryString, fc.constantFrom("", "true", "-1", "1e400", "0x10", "NaN")),
    ),
    { maxLength: 3 },
  );
  return fc.oneof(
    {
      weight: 5,
      arbitrary: fc.tuple(fromFields, extra).map(([pairs, more]) => {
        const all = [...pairs, ...more];
        return {
          text: all.map(([k, v]) => `${percentEncoded(k)}=${percentEncoded(v)}`).join("&"),
          long: all.flat().filter((s) => s.length > echoThreshold),
        };
      }),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom("%", "a=%zz", "&&==&", "a[b]=1", "a=1&a=2&a=3", "=x", "%00=%00")
        .map((text) => ({ text, long: [] })),
    },
  );
}

/** A body: JSON (hostile or in shape), or raw bytes the JSON parser must refuse cleanly. */
function bodyOf(input: DescMessage): fc.Arbitrary<{
  body: string | Uint8Array;
  contentType: string | undefined;
  encoding?: string;
  long: string[];
}> {
  const json = fc
    .oneof(messageJson(input), hostileMessageJson(input), plausibleMessageJson(input))
    .map((value) => ({
      body: jsonText(value),
      contentType: "application/json" as string | undefined,
      long: longStringsIn(value),
    }));
  const raw = fc.oneof(
    json.chain(({ body }) =>
      fc.nat({ max: Math.max(0, body.length - 1) }).map((cut) => ({
        body: body.slice(0, cut),
        contentType: "application/json" as string | undefined,
        long: [],
      })),
    ),
    garbageBytes.map((bytes) => ({ body: bytes, contentType: "application/json", long: [] })),
    fc
      .tuple(
        fc.constantFrom(
          undefined,
          "text/plain",
          "application/xml",
          "application/x-www-form-urlencoded",
          "multipart/form-data; boundary=x",
          "application/json; charset=latin1",
          "application/grpc",
          "application/proto",
          "",
        ),
        fc.oneof(garbageBytes, fc.constant(new TextEncoder().encode("{}"))),
      )
      .map(([contentType, body]) => ({ body, contentType, long: [] })),
    fc
      .constantFrom("gzip", "br", "deflate, gzip", "identity")
      .map((encoding) => ({ body: "{}", contentType: "application/json", encoding, long: [] })),
    deepJson.map((deep) => ({ body: deep.text, contentType: "application/json", long: [] })),
  );
  return fc.oneof({ weight: 3, arbitrary: json }, { weight: 1, arbitrary: raw });
}

/**
 * Hostile requests for one route: its verb (now and then another), its path with generated
 * variables, generated query parameters, and for routes with a body rule a generated body. A GET
 * gets a body once in a while too. `token` goes in as a bearer token when given.
 */
export function restCaseOf(route: RestRoute, token: string | undefined): fc.Arbitrary<RestCase> {
  const input = route.target.method.input;
  const variables = (route.path.match(/\{[^}]+\}/g) ?? []).length;
  const takesBody = route.mapping.body !== "";
  return fc
    .record({
      verb: fc.oneof(
        { weight: 12, arbitrary: fc.constant(route.method as string) },
        {
          weight: 1,
          arbitrary: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"),
        },
      ),
      segments: fc.array(pathSegment, { minLength: variables, maxLength: variables }),
      query: fc.option(queryOf(input), { freq: takesBody ? 8 : 2, nil: undefined }),
      body: fc.option(bodyOf(input), { freq: takesBody ? 12 : 1, nil: undefined }),
      timeout: fc.option(fc.constantFrom("1S", "-1m", "99999999999H", "x", "1"), {
        freq: 20,
        nil: undefined,
      }),
    })
    .map(({ verb, segments, query, body, timeout }) => {
      let i = 0;
      const path = route.path.replace(/\{[^}]+\}/g, () => segments[i++]?.text ?? "x");
      const headers: Record<string, string> = {};
      if (token !== undefined) headers.authorization = `Bearer ${token}`;
      if (timeout !== undefined) headers["grpc-timeout"] = timeout;
      const sendsBody = body !== undefined && verb !== "GET" && verb !== "HEAD";
      if (sendsBody && body.contentType !== undefined) headers["content-type"] = body.contentType;
      if (sendsBody && body.encoding !== undefined) headers["content-encoding"] = body.encoding;
      const built: RestCase = {
        verb,
        url: query === undefined || query.text === "" ? path : `${path}?${query.text}`,
        headers,
        ...(sendsBody ? { body: body.body } : {}),
        longStrings: [
          ...segments.flatMap((s) => s.long),
          ...(query?.long ?? []),
          ...(sendsBody ? body.long : []),
        ].filter((s) => s.length > echoThreshold),
      };
      return withSketch(built);
    });
}

/** A case that fast-check prints short: a failure report must not be megabytes of input. */
function withSketch(c: RestCase): RestCase {
  const body =
    c.body === undefined
      ? ""
      : ` body ${typeof c.body === "string" ? sketch(c.body, 200) : `<${c.body.length} bytes>`}`;
  const shown = `${c.verb} ${sketch(c.url, 200)} ${JSON.stringify(c.headers)}${body}`;
  return Object.assign(c, { [fc.toStringMethod]: () => shown });
}

/** One REST answer; `text` is cut at {@link maxReadBytes} for streams that go on. */
export interface RestAnswer {
  readonly status: number;
  readonly text: string;
}

/** How much of a streaming answer is read before the client leaves. */
export const maxReadBytes = 64 * 1024;

/**
 * A client for hostile requests: undici sends paths, verbs and bodies as written (fetch would
 * refuse a GET with a body). A stream is read up to {@link maxReadBytes} and then left; a stream
 * that sends nothing within `streamWaitMs` is left too (its status comes with its first message),
 * and answers `undefined`: an open stream, not a failure.
 */
export function createRestClient(
  base: string,
  options: { streamWaitMs: number; patienceMs: number },
) {
  const agent = new Agent({ connections: 8, pipelining: 0 });
  return {
    async send(
      c: RestCase,
      streaming: boolean,
      streamWaitMs = options.streamWaitMs,
    ): Promise<RestAnswer | undefined> {
      const controller = new AbortController();
      const wait = streaming ? streamWaitMs : options.patienceMs;
      const timer = setTimeout(() => controller.abort(), wait);
      try {
        const response = await request(`${base}${c.url}`, {
          method: c.verb as "GET",
          headers: c.headers,
          ...(c.body === undefined ? {} : { body: c.body }),
          signal: controller.signal,
          dispatcher: agent,
        });
        const text = await readBounded(response.body, streaming);
        return { status: response.statusCode, text };
      } catch (error) {
        // A stream that was still silent when the client left: open, not failed.
        if (streaming && controller.signal.aborted) return undefined;
        throw error;
      } finally {
        clearTimeout(timer);
      }
    },
    close: () => agent.close(),
  };
}

/**
 * The body's text, up to {@link maxReadBytes}; of a stream, up to its first line (its status and
 * first message, or its error), then the client leaves.
 */
async function readBounded(
  body: AsyncIterable<Buffer> & { destroy(): unknown },
  streaming: boolean,
): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    chunks.push(chunk);
    size += chunk.length;
    if (size >= maxReadBytes || (streaming && chunk.includes(10))) {
      body.destroy();
      break;
    }
  }
  return Buffer.concat(chunks).toString("utf8");
}
