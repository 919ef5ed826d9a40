# One of Scale's images, for those who build with Docker. The repository's
# own command, `make images` (cmd/images), needs no Docker engine and builds
# the same shape: a static binary, the CA certificates, the non-root user
# 65532, no shell.
#
#   docker build --build-arg BINARY=extract -t scale-extract .
#
# BINARY is one of scale, ingest, extract, similarity, api, chaos-runner.
FROM golang:1.27.3-bookworm AS build
ARG BINARY=scale
ARG VERSION=dev
WORKDIR /src
COPY . .
RUN case "$BINARY" in \
      chaos-runner) dir=services/chaos-runner pkg=. ;; \
      scale) dir=. pkg=./cmd/scale ;; \
      ingest|extract|similarity|api) dir=. pkg=./services/$BINARY/cmd/$BINARY ;; \
      *) echo "unknown BINARY $BINARY" >&2; exit 1 ;; \
    esac && \
    cd "$dir" && CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -buildid= -X github.com/scale-dev/scale/internal/buildinfo.version=$VERSION" -o "/out/$BINARY" "$pkg" && \
    ln -s "$BINARY" /out/service

# The binary is /usr/local/bin/$BINARY, as in `make images` (docker-compose's
# health checks call it by that name); the entrypoint, which cannot name a
# build argument, is a link to it.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/service"]
