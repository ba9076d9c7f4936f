# syntax=docker/dockerfile:1
# The wharf image: one binary for every role (`wharf api`, `worker …`, `scheduler`, `migrate`,
# `serve`), as the Helm chart in charts/wharf runs it.
#
#   docker build -t ghcr.io/wharf-dev/wharf:0.1.0 .
#   docker run --rm -p 4000:4000 -v wharf-data:/data ghcr.io/wharf-dev/wharf:0.1.0   # `wharf serve`
#
# The default feature `local-embeddings` compiles the offline embedding model into the binary
# (pocket-encoder bundles its weights and tokenizer): nothing is downloaded at run time. Build
# with `--build-arg CARGO_FLAGS=--no-default-features` for a smaller binary without it (the
# embeddings pool then needs OPENAI_* or GEMINI_API_KEY).

# The workspace needs Rust 1.94 or newer (rust-version in Cargo.toml).
ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS build
ARG CARGO_FLAGS=""
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit); the binary leaves the
# target cache through /out. The full rust image (not -slim) brings the C and C++ compilers
# that the bundled SQLite, ring and the tokenizer's onig and esaxx build with.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin wharf ${CARGO_FLAGS} \
    && install -D -m 0755 target/release/wharf /out/wharf

# Same Debian release as the builder, so the binary's glibc is there; it links nothing else
# (libc, libm, libgcc_s).
FROM debian:bookworm-slim
# ca-certificates: the AWS SDK's HTTPS client (SES, S3) trusts the system store
# (rustls-native-certs); the other clients carry webpki roots of their own.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 wharf \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wharf \
    && mkdir /data \
    && chown 10001:10001 /data
COPY --from=build /out/wharf /usr/local/bin/wharf
# WHARF_DATA_DIR: the SQLite file of `serve`, its outbox and key file. WHARF_HOST: `serve`
# would otherwise listen on the container's loopback only (the chart sets both anyway).
ENV WHARF_DATA_DIR=/data \
    WHARF_HOST=0.0.0.0
VOLUME ["/data"]
WORKDIR /data
# Numeric, so that Kubernetes' runAsNonRoot can verify it; the chart's pods run as 10001 too.
USER 10001:10001
# PORT (the API) and METRICS_PORT (/metrics and /healthz of workers and the scheduler).
EXPOSE 4000 9090
ENTRYPOINT ["wharf"]
CMD ["serve"]
