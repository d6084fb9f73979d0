// undici's `request`, loaded on demand through this module of ours (`import("./undici-request.js")`)
// rather than by `import("undici")`: undici is CommonJS, and the bundle's chunk of a CommonJS
// package exports only `default`, whereas a static named import of one works from source, compiled
// and bundled alike.
export { Agent, request } from "undici";
