# syntax=docker/dockerfile:1
# The nodetopo image: the agent and the scheduler extender in one binary, built with RDMA verbs
# and libibumad (the InfiniBand leaf, su and block by SMP queries).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libibverbs-dev librdmacm-dev libibumad-dev libclang-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features verbs,umad \
 && install -m 0755 target/release/nodetopo /usr/local/bin/nodetopo

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libibverbs1 ibverbs-providers libibumad3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/nodetopo /usr/local/bin/nodetopo
# Non-root by default; the chart and daemonset/ set the same user.
USER 65532:65532
EXPOSE 9750 9751 8888
ENTRYPOINT ["/usr/local/bin/nodetopo"]
CMD ["agent"]
