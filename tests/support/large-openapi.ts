/** What {@link largeOpenApiDocument} builds. */
export interface LargeOpenApiOptions {
  /** Operations in the document; four per path (GET, PUT, POST, DELETE). Default 85,000. */
  readonly operations?: number;
  /**
   * Drift from the document with the same `operations`: the first `drift` operations are gone and
   * as many new ones follow the last. Default 0.
   */
  readonly drift?: number;
}

const methods = ["get", "put", "post", "delete"] as const;

/**
 * The JSON text of an OpenAPI 3 document shaped like the one of issue 7 (item 2): with the
 * defaults, 85,000 small operations in about 5.1 MB, under the default `OPENAPI_MAX_BYTES`. Many
 * tiny operations are the worst case for a poll: parsing, summarising and diffing cost grows with
 * the operations, the bytes stay under the fetch limit.
 */
export function largeOpenApiDocument(options: LargeOpenApiOptions = {}): string {
  const operations = options.operations ?? 85_000;
  const drift = options.drift ?? 0;
  const paths: string[] = [];
  let path = "";
  let members: string[] = [];
  for (let index = drift; index < operations + drift; index++) {
    const name = `/inventory/v1/items${Math.floor(index / methods.length)}`;
    if (name !== path && members.length > 0) {
      paths.push(`${JSON.stringify(path)}:{${members.join(",")}}`);
      members = [];
    }
    path = name;
    const method = methods[index % methods.length] as string;
    members.push(`"${method}":{"responses":{"200":{"description":"${index}"}}}`);
  }
  if (members.length > 0) paths.push(`${JSON.stringify(path)}:{${members.join(",")}}`);
  return `{"openapi":"3.0.3","info":{"title":"inventory","version":"1.0.0"},"paths":{${paths.join(",")}}}`;
}
