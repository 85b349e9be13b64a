# syntax=docker/dockerfile:1
# Multi-stage: a static (musl) release build, then only the binary on a distroless non-root base.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN rustup target add "$(uname -m)-unknown-linux-musl"
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "$(uname -m)-unknown-linux-musl" --bin mcp-operator \
    && cp "target/$(uname -m)-unknown-linux-musl/release/mcp-operator" /mcp-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /mcp-operator /mcp-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/mcp-operator"]
