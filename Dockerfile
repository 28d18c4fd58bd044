# syntax=docker/dockerfile:1
# Clacks in a container: built in the Rust image, run from a small Debian
# image as an unprivileged user; nothing is downloaded at run time.
# docker-compose.yml runs two nodes behind HAProxy. CI (scripts/deploy-check.sh)
# runs this file's ENTRYPOINT, CMD and HEALTHCHECK against the release binary:
# keep them in exec (JSON) form, which it reads from here.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The browser assets are checked in (web/build.sh), so the build needs no npm.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p clacks-server --bin clacks \
    && cp target/release/clacks /usr/local/bin/clacks

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home clacks
COPY --from=build /usr/local/bin/clacks /usr/local/bin/clacks
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# Alone, it keeps SQLite in the volume and the management port inside the
# container. Behind a balancer (docker-compose.yml): a shared database,
# CLACKS_MANAGEMENT_ADDR=0.0.0.0:7999 with CLACKS_MANAGEMENT_TOKEN (required
# off loopback), and CLACKS_TRUSTED_PROXIES naming the balancer.
ENV DATABASE_URL=sqlite:///data/clacks.db \
    CLACKS_CLIENT_ADDR=0.0.0.0:8000 \
    CLACKS_MANAGEMENT_ADDR=127.0.0.1:7999 \
    CLACKS_LOG_FORMAT=json
EXPOSE 8000 7999
# Liveness: the client port answers /healthz (on the port CLACKS_CLIENT_ADDR
# names). Readiness (the database answers) is /readyz on the management
# port, which the balancer checks; a database outage must not get nodes
# restarted.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${CLACKS_CLIENT_ADDR##*:}\" && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q '^HTTP/1\\.[01] 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/clacks"]
CMD ["serve"]
