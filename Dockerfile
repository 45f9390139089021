# Portico in a small, non-root image.
#   docker build -t portico .
#   docker run -p 3000:3000 -v $PWD/config.yaml:/etc/portico/config.yaml:ro \
#     -e PORTICO_SESSION_KEY=$(openssl rand -hex 32) portico
# The runtime image has no shell and no Node.js or Python: it suits gateways whose targets are remote
# (`mcp`, `sse`, `openapi`). For stdio targets started with npx or uvx, base the last stage on an image
# that has them (e.g. node:22-bookworm-slim) and keep `USER 65532`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p portico \
    && cp target/release/portico /usr/local/bin/portico

# glibc 2.36 (the binary's packed relocations need >= 2.36), CA certificates, user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/portico /usr/local/bin/portico
USER 65532:65532
EXPOSE 3000 15020 15021
ENTRYPOINT ["/usr/local/bin/portico"]
CMD ["-f", "/etc/portico/config.yaml"]
