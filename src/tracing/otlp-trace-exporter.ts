// The OTLP/HTTP span exporter, loaded on demand through this module of ours
// (`import("./otlp-trace-exporter.js")`) rather than by importing the package dynamically: the
// package resolves to its CommonJS build, and the bundle's chunk of a CommonJS package exports only
// `default`, whereas a static named import of one works from source, compiled and bundled alike.
export { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
