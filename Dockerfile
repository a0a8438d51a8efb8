# syntax=docker/dockerfile:1
# The worker image: `stream-worker` with all its commands (run, produce, status, healthcheck,
# dead-letters, checkpoints, consumer); `run` unless another command is given.
#
#   docker build -t stream-worker .          (deploy/deploy.sh builds and pushes it to ECR)
#   docker run --rm stream-worker --help
#
# Build stage: the same cargo command as the CI's release build (deploy/local/test.sh);
# deploy/tests/test_docker.py checks that they stay the same. Debian 12 here and in the
# runtime image, so the binary's glibc matches.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo ./.cargo
COPY src ./src
COPY benches ./benches
# What `stream-worker --version` names: the context has no .git (deploy/deploy.sh passes it).
ARG STREAM_WORKER_COMMIT=unknown
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin stream-worker

# Runtime: distroless (glibc, CA certificates, no shell, no package manager, no build tools),
# as the unprivileged user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/stream-worker /usr/local/bin/stream-worker
USER 65532:65532
ENV STREAM_WORKER_LOG_FORMAT=json \
    STREAM_WORKER_METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464
# SIGTERM: finish in-flight batches, checkpoint, release leases within --shutdown-timeout.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/stream-worker", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/stream-worker"]
CMD ["run"]
