import { readFileSync } from "node:fs";

/** Who this node is: fixed for the life of the process. */
export interface NodeInfo {
  readonly service: string;
  readonly version: string;
  readonly description: string;
  readonly nodeId: string;
  /** Changes at every start, so that peers can tell a restarted node from a reconnected one. */
  readonly incarnationId: string;
  readonly environment: string;
}

interface PackageJson {
  readonly name: string;
  readonly version: string;
  readonly description: string;
}

/** The package's own name, version and description, read once at start. */
export const packageInfo: PackageJson = JSON.parse(
  readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
) as PackageJson;
