# Multi-stage build of the one `emporium` binary; compose.yaml runs it once per service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p emporium && cp target/release/emporium /usr/local/bin/emporium

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 emporium \
 && mkdir /keys && chown emporium /keys
COPY --from=build /usr/local/bin/emporium /usr/local/bin/emporium
USER emporium
ENV EMPORIUM_ENV=production OPS_ADDR=0.0.0.0:9080
EXPOSE 8080 9080
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD curl -fsS http://127.0.0.1:9080/readyz || exit 1
ENTRYPOINT ["emporium"]
CMD ["run", "all"]
