import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { unimplementedService } from "../services/unimplemented.js";
import type { ReadinessCheck } from "../system/readiness.js";

/**
 * Some or all methods of one API service, as a capability implements them. Several capabilities
 * may implement parts of one service (the infrastructure service: events, DLQ, sagas, traces);
 * a method no capability implements answers UNIMPLEMENTED.
 */
export interface ServicePart {
  readonly service: DescService;
  readonly impl: Partial<ServiceImpl<DescService>>;
}

/** Pairs a service with methods of it, type-checked here, then erased for the list. */
export function servicePart<S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
): ServicePart {
  return { service, impl: impl as Partial<ServiceImpl<DescService>> };
}

/**
 * One capability of a node: what it serves, when it is ready, how it starts and stops. The
 * composition root builds each from the configuration and the shared parts (clock, logger,
 * events, Redis), serves their methods, lists their names in `/info`, and starts them in order
 * and stops them in reverse.
 */
export interface Capability {
  /** What `/info` lists for it, e.g. ["registry", "health-checks"]. */
  readonly names: readonly string[];
  /** The API methods it implements. */
  readonly services: readonly ServicePart[];
  /** Conditions `/ready` waits for. */
  readonly readiness: readonly ReadinessCheck[];
  /** Starts its background work; the node listens once every capability has started. */
  start(): Promise<void>;
  /** Stops it; called after the port has drained, in the reverse order of start. */
  stop(): Promise<void>;
}

/**
 * The full implementation of each of `services`: the methods the capabilities implement, and an
 * UNIMPLEMENTED answer for every other one (HTTP 501), built from the descriptor so that it never
 * lags behind the protos.
 * @throws Error when two capabilities implement the same method.
 */
export function composeServices(
  services: readonly DescService[],
  capabilities: readonly Pick<Capability, "services">[],
): Map<DescService, ServiceImpl<DescService>> {
  const composed = new Map<DescService, ServiceImpl<DescService>>();
  for (const service of services) {
    const impl = { ...unimplementedService(service, "a later issue") } as Record<string, unknown>;
    const takenBy = new Map<string, number>();
    capabilities.forEach((capability, index) => {
      for (const part of capability.services) {
        if (part.service.typeName !== service.typeName) continue;
        for (const [name, method] of Object.entries(part.impl) as [string, unknown][]) {
          if (typeof method !== "function") continue;
          if (takenBy.has(name)) {
            throw new Error(`${service.typeName}.${name} is implemented by two capabilities`);
          }
          takenBy.set(name, index);
          // Bound to its own part: an implementation may keep state on itself.
          impl[name] = method.bind(part.impl);
        }
      }
    });
    composed.set(service, impl as ServiceImpl<DescService>);
  }
  return composed;
}
