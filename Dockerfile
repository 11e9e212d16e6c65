# syntax=docker/dockerfile:1
# The pki-operator image: built from this repository with the pinned toolchain and Cargo.lock,
# run as a non-root user from distroless (glibc, CA certificates, no shell). The operator writes
# no files at run time, so the chart's readOnlyRootFilesystem: true holds.
#
#   docker build -t pki-operator:dev .

# Bookworm, like distroless cc-debian12: the binary links the same glibc it runs on.
FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
# The workspace (the e2e crate is a member, so its manifest and sources must be present for
# cargo to load the workspace; only the operator binary is built).
COPY Cargo.toml Cargo.lock rust-toolchain.toml rustfmt.toml clippy.toml ./
COPY src ./src
COPY e2e ./e2e
COPY docs ./docs
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pki-operator \
    && cp target/release/pki-operator /pki-operator

# distroless: glibc, libgcc, /etc/ssl/certs (the platform verifier's roots for CA APIs, SMTP and
# webhooks) and a nonroot user (uid/gid 65532); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /pki-operator /usr/local/bin/pki-operator
USER 65532:65532
# Admin server (/livez, /readyz, /metrics) and the HTTP domain validation solver.
EXPOSE 8080 8089
ENTRYPOINT ["/usr/local/bin/pki-operator"]
