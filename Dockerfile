# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run from a small Debian image as a non-root
# user. TLS is rustls with bundled roots, so the runtime needs no OpenSSL.

FROM rust:1-bookworm AS build
WORKDIR /src
# Build dependencies first so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin lsq-webhooks || true
COPY . .
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin lsq-webhooks \
    && strip target/release/lsq-webhooks

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin lsq
COPY --from=build /src/target/release/lsq-webhooks /usr/local/bin/lsq-webhooks
USER 10001:10001
# tini forwards SIGTERM to the worker, which stops taking jobs and hands back running ones.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/lsq-webhooks"]
CMD ["--help"]
