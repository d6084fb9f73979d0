import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";

/**
 * A complete implementation of `service` whose every method answers UNIMPLEMENTED (HTTP 501),
 * saying which issue brings it. Built from the descriptor, so it never lags behind the proto.
 */
export function unimplementedService<S extends DescService>(
  service: S,
  arrivesWith: string,
): ServiceImpl<S> {
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    const error = () =>
      new ConnectError(
        `${service.typeName}.${method.name} is not implemented yet (arrives with ${arrivesWith})`,
        Code.Unimplemented,
      );
    impl[method.localName] =
      method.methodKind === "unary" || method.methodKind === "client_streaming"
        ? () => Promise.reject(error())
        : // biome-ignore lint/correctness/useYield: a stream that fails before its first message
          async function* () {
            throw error();
          };
  }
  return impl as ServiceImpl<S>;
}
