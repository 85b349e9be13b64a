# syntax=docker/dockerfile:1
# Multi-stage: static (musl) release builds of both binaries, then each binary alone on a
# distroless non-root base. Targets: `gateway` (the MCP gateway) and the default, the operator.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN rustup target add "$(uname -m)-unknown-linux-musl"
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "$(uname -m)-unknown-linux-musl" \
      -p mcp-operator -p mcp-gateway --bin mcp-operator --bin mcp-gateway \
    && cp "target/$(uname -m)-unknown-linux-musl/release/mcp-operator" /mcp-operator \
    && cp "target/$(uname -m)-unknown-linux-musl/release/mcp-gateway" /mcp-gateway

# The gateway: a sidecar in server pods, and (with --install-to) the init container that copies
# itself into stdio server containers.
FROM gcr.io/distroless/static-debian12:nonroot AS gateway
COPY --from=build /mcp-gateway /mcp-gateway
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/mcp-gateway"]

FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=build /mcp-operator /mcp-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/mcp-operator"]
