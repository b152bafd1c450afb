# Upkeep: the maintenance daemon for self-hosted Dify.
#
#   docker build -t upkeep:latest .
#
# To run it beside Dify, see docs/docker.md and docker-compose.yaml.
# Lint with scripts/lint-docker (hadolint + docker compose config).
#
# Debian trixie on both sides: its own postgresql-client is 17, which can dump
# Dify's postgres:15 and the pgvector service's PostgreSQL 16 (pg_dump refuses
# servers newer than itself; bookworm only has 15).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

# ---- toolchain + cargo-chef (cached until these ARGs change) ----------------
# Build stages carry no OCI labels; those belong to the runtime image below.
# hadolint ignore=DL3049
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install --locked "cargo-chef@${CARGO_CHEF_VERSION}"
WORKDIR /src

# ---- dependency recipe: only Cargo.toml/Cargo.lock/targets matter ------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- build ------------------------------------------------------------------
FROM chef AS builder
# Dependencies first: this layer is reused until Cargo.toml/Cargo.lock change.
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --bin upkeep --recipe-path recipe.json
# Then the crate. The whole (.dockerignore'd) tree is copied on purpose: the
# build reads more than src/ (migrations/ and sqlx.toml for sqlx::migrate!(),
# tests/fixtures/dify_schema.sql through include_str!, embedded docs
# assets, .sqlx/ if query! macros are used).
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked --bin upkeep \
    && install -D -m 0755 target/release/upkeep /out/upkeep

# ---- runtime ----------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

ARG DEBIAN_RELEASE
ARG UPKEEP_VERSION=dev
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="upkeep" \
      org.opencontainers.image.description="Maintenance daemon for self-hosted Dify: vector and storage migration, log purge, orphan cleanup, vacuum, backup, as resumable jobs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${UPKEEP_VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.base.name="debian:${DEBIAN_RELEASE}-slim"

# ca-certificates: TLS to object stores and vector stores.
# postgresql-client: pg_dump/psql for backup and restore (17 on trixie).
# tini: PID 1 that forwards SIGTERM to upkeep and reaps pg_dump children.
# Versions are not pinned on purpose: Debian replaces point releases in place
# (security updates), so a pinned version stops resolving within weeks.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-client tini \
    && rm -rf /var/lib/apt/lists/* \
    && pg_dump --version

# Dify's api image runs as uid/gid 1001 and owns its storage volume with it.
RUN groupadd --gid 1001 upkeep \
    && useradd --uid 1001 --gid 1001 --create-home --home-dir /home/upkeep --shell /usr/sbin/nologin upkeep \
    && mkdir -p /app/api/storage \
    && chown -R 1001:1001 /app/api

COPY --from=builder /out/upkeep /usr/local/bin/upkeep

# Same working directory as Dify's api container: a relative OPENDAL_FS_ROOT
# (default `storage`) resolves to /app/api/storage, where the volume is mounted.
WORKDIR /app/api
USER 1001:1001
ENV UPKEEP_LISTEN=0.0.0.0:8090
EXPOSE 8090

# Running jobs checkpoint on SIGTERM within UPKEEP_SHUTDOWN_GRACE_SECONDS (25);
# give `docker stop` at least 30 s (compose: stop_grace_period: 30s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/upkeep", "healthcheck"]

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/upkeep"]
CMD ["serve"]
