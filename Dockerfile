# syntax=docker/dockerfile:1
# Multi-stage build: a cached dependency layer, then the binary, then a slim non-root runtime.
#
#   docker build -t partner-sync .
#   docker run --rm --stop-timeout 45 -p 8080:8080 -p 127.0.0.1:9464:9464 \
#     -e DATABASE_URL=… -e PARTNER_SYNC__… partner-sync

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The simulated partners (`partner-sync sandbox`, `demo`) are a default cargo feature, which the
# compose trial uses; a production image leaves them out:
#   docker build --build-arg FEATURES=--no-default-features -t partner-sync .
ARG FEATURES=
# Dependencies only change with the manifests and Cargo.lock: build them against stub sources in
# their own layer. Cargo reads every target the manifests declare (the lib, the bin, the
# `mirror_pass` bench and the sandbox crate), so each needs a stub file; tests/ is only
# auto-discovered and may be absent.
COPY Cargo.toml Cargo.lock ./
COPY crates/partner-sync-sandbox/Cargo.toml crates/partner-sync-sandbox/
RUN mkdir -p src benches crates/partner-sync-sandbox/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs crates/partner-sync-sandbox/src/lib.rs \
 && echo 'fn main() {}' > benches/mirror_pass.rs \
 && cargo build --release --locked -p partner-sync $FEATURES \
 && rm -rf src benches crates/partner-sync-sandbox/src
# Compile-time inputs: config/default.toml (include_str!) and migrations/ (sqlx::migrate!) are
# embedded in the binary (build.rs rebuilds it when a migration changes), and benches/ must
# exist for the manifest's [[bench]].
COPY build.rs ./
COPY src src
COPY crates crates
COPY migrations migrations
COPY config config
COPY benches benches
# The stub artefacts are newer than the copied sources; touching makes cargo rebuild the crates.
RUN touch src/main.rs src/lib.rs crates/partner-sync-sandbox/src/lib.rs \
 && cargo build --release --locked -p partner-sync --bin partner-sync $FEATURES

# Same Debian release as the build image, so the binary finds the glibc it was linked against.
FROM debian:bookworm-slim AS runtime
# The HTTPS clients (reqwest, sqlx) trust the Mozilla roots compiled into the binary
# (webpki-roots); the system CA bundle is there for anything else that needs it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 partner-sync \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin partner-sync
COPY --from=build /src/target/release/partner-sync /usr/local/bin/partner-sync
# Settings layered over the built-in defaults. Environment variables win over the file
# (DATABASE_URL, PARTNER_SYNC__<SECTION>__<KEY>); to replace the file, mount another one and
# point PARTNER_SYNC_CONFIG at it. Credentials never belong in the image.
COPY config/production.toml /etc/partner-sync/production.toml
ENV PARTNER_SYNC_CONFIG=/etc/partner-sync/production.toml
USER 10001:10001
# The public HTTP server (server.listen = 0.0.0.0:8080): the OAuth callback, customer links and
# /healthz. The operations server (server.ops_listen = 0.0.0.0:9464): /metrics, /readyz and
# /healthz, to be published to Prometheus and probes only, never to the internet.
EXPOSE 8080 9464
# `partner-sync healthcheck` GETs http://127.0.0.1:<port>/healthz on both listeners (no curl
# here) and fails unless both answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["partner-sync", "healthcheck"]
# SIGTERM stops the daemon gracefully (daemon.shutdown_grace, 30 s, plus 5 s to record the runs):
# give it a stop timeout above that (docker run --stop-timeout 45, compose stop_grace_period).
STOPSIGNAL SIGTERM
# Exec form: the binary is PID 1 and receives the signals itself (SIGTERM, SIGHUP, SIGUSR1/2).
ENTRYPOINT ["/usr/local/bin/partner-sync"]
CMD ["run"]
