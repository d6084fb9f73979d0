// The production bundle (scripts/bundle.mjs, run by `npm run build`) as tests see it: built by the
// same script, and its chunks traced back to the packages they hold.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { repoRoot } from "./process.js";

/** `dist/bundle/main.js`, by absolute path: what `npm start` runs. */
export const bundleMain = `${repoRoot}dist/bundle/main.js`;

/**
 * Builds dist/bundle/ with scripts/bundle.mjs, as `npm run build` does (without tsc: esbuild does
 * not type-check, and `npx tsc --noEmit` checks the same sources in CI).
 * @throws Error with esbuild's output when the build fails or takes over 2 minutes.
 */
export async function buildBundle(): Promise<void> {
  await promisify(execFile)(process.execPath, [`${repoRoot}scripts/bundle.mjs`], {
    cwd: repoRoot,
    timeout: 120_000,
  });
}

interface Metafile {
  readonly outputs: Record<string, { readonly inputs: Record<string, unknown> }>;
}

/**
 * The packages whose code is in the files of the bundle among `files` (file URLs or paths, as the
 * loads recorder reports them), from dist/bundle/meta.json: loading a chunk loads every package
 * in it. Files outside the bundle are ignored.
 */
export async function packagesInBundleFiles(files: readonly string[]): Promise<string[]> {
  const meta = JSON.parse(await readFile(`${repoRoot}dist/bundle/meta.json`, "utf8")) as Metafile;
  const packages = new Set<string>();
  for (const file of files) {
    const path = file.startsWith("file:") ? fileURLToPath(file) : file;
    const output = meta.outputs[relative(repoRoot, path)];
    for (const input of Object.keys(output?.inputs ?? {})) {
      // The innermost node_modules folder names the package (nested copies included).
      const found = [...input.matchAll(/node_modules\/((?:@[^/]+\/)?[^/]+)\//g)].at(-1)?.[1];
      if (found !== undefined) packages.add(found);
    }
  }
  return [...packages].sort();
}
