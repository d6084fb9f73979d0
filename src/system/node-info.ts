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

/**
 * The package's own name, version and description, read once at start from the nearest
 * package.json above this module (src/ when run from source, dist/src/ when compiled).
 */
export const packageInfo: PackageJson = readPackageJson(new URL(".", import.meta.url));

function readPackageJson(start: URL): PackageJson {
  for (let dir = start; ; dir = new URL("..", dir)) {
    try {
      return JSON.parse(readFileSync(new URL("package.json", dir), "utf8")) as PackageJson;
    } catch (error) {
      if (dir.pathname === "/") throw error;
    }
  }
}
