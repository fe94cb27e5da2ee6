# syntax=docker/dockerfile:1
# Multi-stage build: a cached dependency layer, then the binary, then a slim non-root runtime.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies only change with Cargo.lock: build them against stub sources in their own layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/mirror_pass.rs \
 && cargo build --release --locked \
 && rm -rf src benches
COPY src src
COPY migrations migrations
COPY config config
COPY benches benches
# Stub artefacts are older than the real sources; touching makes cargo rebuild the crate.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin partner-sync

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin partner-sync
COPY --from=build /src/target/release/partner-sync /usr/local/bin/partner-sync
COPY config/production.toml /etc/partner-sync/production.toml
ENV PARTNER_SYNC_CONFIG=/etc/partner-sync/production.toml
USER 10001:10001
# The HTTP server: OAuth callbacks and /healthz.
EXPOSE 8080
# The image has no curl: the binary checks its own /healthz at server.listen's port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/partner-sync", "healthcheck"]
# SIGTERM stops gracefully within daemon.shutdown_grace (30 s); give `docker stop -t 45`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/partner-sync"]
CMD ["run"]
