# syntax=docker/dockerfile:1
# Build a static binary, then ship it alone on a distroless base as non-root.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/equalizer ./cmd/equalizer

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/equalizer /equalizer
USER nonroot:nonroot
# Inside a container the admin API must listen beyond loopback to be
# reachable; protect it with EQUALIZER_ADMIN_TOKEN.
ENV EQUALIZER_LISTEN=:8080 \
    EQUALIZER_ADMIN_LISTEN=:8090
EXPOSE 8080 8090
ENTRYPOINT ["/equalizer"]
