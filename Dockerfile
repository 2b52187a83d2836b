# syntax=docker/dockerfile:1
# collection-operator: one static-ish binary (glibc) in a distroless, non-root image.
#
#   docker build -t collection-operator:0.1.0 .
#
# The tag is the crate version (Cargo.toml), which is also the Helm chart's appVersion and
# its default image tag (charts/collection-operator). Needs BuildKit (the default builder)
# for the cache mounts. No protoc needed: build.rs compiles the .proto files with protox.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Everything cargo needs; .dockerignore keeps target/, venvs, data and tests out.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
# Symbols stay (names in backtraces), the debug line tables of the release profile do not.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/collection-operator /out/collection-operator

# glibc + libgcc + CA certificates, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="collection-operator" \
      org.opencontainers.image.description="Declarative Milvus-style collection aliases on Kubernetes" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/collection-operator /usr/local/bin/collection-operator
USER 65532:65532
# 19530: the coordinator's gRPC port (`coordinator`, `up`); 8080: the operator's /metrics,
# /healthz and /readyz (`operator`).
EXPOSE 19530 8080
ENTRYPOINT ["/usr/local/bin/collection-operator"]
# The chart passes `operator ...`; `docker run IMAGE coordinator --listen 0.0.0.0:19530`
# runs the coordinator (its data directory must be a writable volume).
CMD ["--help"]
