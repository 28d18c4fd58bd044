# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a small Debian image
# as an unprivileged user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p clacks-server \
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
# The management port stays on loopback unless a token is configured:
# run with CLACKS_MANAGEMENT_ADDR=0.0.0.0:7999 and CLACKS_MANAGEMENT_TOKEN=...
ENV DATABASE_URL=sqlite:///data/clacks.db \
    CLACKS_CLIENT_ADDR=0.0.0.0:8000 \
    CLACKS_MANAGEMENT_ADDR=127.0.0.1:7999 \
    CLACKS_LOG_FORMAT=json
EXPOSE 8000 7999
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/clacks"]
CMD ["serve"]
