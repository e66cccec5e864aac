//! `nodetopo webhook`: the mutating admission webhook that copies topology labels from a Pod's
//! Node onto the Pod at binding time (`POST /mutate`) and sends the pod groups the extender
//! places to their own scheduler profile at creation (`POST /route`). Flags become a
//! [`WebhookConfig`], then the servers run until SIGTERM or Ctrl-C.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Args;
use nodetopo::{
    labels::{DEFAULT_PREFIX, Key},
    webhook::{
        WebhookConfig, consumer,
        mutate::{DEFAULT_KEYS, MutationConfig},
        route::{DEFAULT_GROUP_PROFILE, DEFAULT_RESOURCE, DEFAULT_SCHEDULER, RouteConfig},
        tls::ReloadingCert,
    },
};

/// Flags of `nodetopo webhook`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Address of the HTTPS admission endpoint (`POST /mutate`).
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Address of the plain HTTP endpoints `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:9751")]
    metrics_listen: SocketAddr,
    /// PEM certificate chain served to the API server.
    #[arg(long, default_value = "/etc/nodetopo/tls/tls.crt")]
    tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, default_value = "/etc/nodetopo/tls/tls.key")]
    tls_key: PathBuf,
    /// How often the certificate files are checked for a renewal.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    tls_reload: Duration,
    /// Prefix of the agent's Node labels.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    label_prefix: String,
    /// Prefix of the labels written on Pods (default: --label-prefix).
    #[arg(long)]
    pod_label_prefix: Option<String>,
    /// The agent's labels to copy (names under --label-prefix), comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_key, default_values_t = DEFAULT_KEYS)]
    keys: Vec<Key>,
    /// A leaf or block Node label to copy as well, `KEY` or `KEY=NAME` (written as
    /// `<pod prefix>/NAME`, NAME defaulting to the key's name part); repeatable.
    #[arg(long, value_delimiter = ',')]
    block_label: Vec<String>,
    /// Also write the keys a consumer reads on its own Pod: `llm-d[:rack=SOURCE]` or
    /// `dynamo[:DOMAIN=SOURCE|none,...]`; repeatable. SOURCE: `nvlink-domain`,
    /// `nvlink-cluster`, `leaf`, `host` or a Node label key. A value the Pod already has under
    /// such a key is kept.
    #[arg(long)]
    consumer: Vec<String>,
    /// Also write `POD_KEY` with the value of SOURCE (as in --consumer); repeatable. A value
    /// the Pod already has under POD_KEY is kept.
    #[arg(long, value_name = "POD_KEY=SOURCE")]
    pod_key: Vec<String>,
    /// How long a binding waits for its Pod's labels (read only when consumer keys are
    /// configured) before they are left out.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pod_lookup_timeout: Duration,
    /// `POST /route`: the kube-scheduler profile that pod-group members asking for a managed
    /// resource get (the profile that scores every node and calls the extender).
    #[arg(long, default_value = DEFAULT_GROUP_PROFILE)]
    group_profile: String,
    /// `POST /route`: only pods on this profile are moved (the one pods get that name none).
    #[arg(long, default_value = DEFAULT_SCHEDULER)]
    route_from: String,
    /// `POST /route`: the extender's managed resources (the scheduler configuration's
    /// `managedResources`), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_RESOURCE)]
    group_resources: Vec<String>,
    /// How long requests in flight get to finish on SIGTERM.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

fn parse_key(s: &str) -> Result<Key, String> {
    s.trim().parse().map_err(|_| {
        let known: Vec<&str> = Key::all().map(Key::name).collect();
        format!("not a nodetopo label (one of {})", known.join(", "))
    })
}

fn config(args: WebhookArgs) -> anyhow::Result<WebhookConfig> {
    let pod_prefix = args
        .pod_label_prefix
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| args.label_prefix.clone());
    let blocks: Vec<String> = args
        .block_label
        .into_iter()
        .filter(|k| !k.is_empty())
        .collect();
    let mutation = MutationConfig::new(&args.label_prefix, &pod_prefix, &args.keys, &blocks)
        .context("--label-prefix, --pod-label-prefix, --keys or --block-label")?;
    anyhow::ensure!(
        !mutation.rules().is_empty(),
        "--keys and --block-label name no label to copy"
    );
    let mut consumers = Vec::new();
    for spec in args.consumer.iter().filter(|s| !s.trim().is_empty()) {
        consumers.extend(
            consumer::parse_consumer(spec, &args.label_prefix)
                .with_context(|| format!("--consumer {spec}"))?,
        );
    }
    for spec in args.pod_key.iter().filter(|s| !s.trim().is_empty()) {
        consumers.push(
            consumer::parse_pod_key(spec, &args.label_prefix)
                .with_context(|| format!("--pod-key {spec}"))?,
        );
    }
    let mutation = mutation
        .with_consumers(consumers)
        .context("--consumer and --pod-key")?;
    let resources: Vec<String> = args
        .group_resources
        .into_iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    anyhow::ensure!(!resources.is_empty(), "--group-resources names no resource");
    anyhow::ensure!(
        !args.group_profile.is_empty() && args.group_profile != args.route_from,
        "--group-profile must name a profile other than --route-from ({})",
        args.route_from
    );
    let route = RouteConfig {
        profile: args.group_profile,
        from: args.route_from,
        resources,
    };
    let cert = ReloadingCert::new(&args.tls_cert, &args.tls_key).context("--tls-cert/--tls-key")?;
    Ok(WebhookConfig {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        cert: Arc::new(cert),
        tls_reload: args.tls_reload,
        mutation,
        route,
        pod_lookup_timeout: args.pod_lookup_timeout,
        grace: args.grace,
    })
}

/// Runs the webhook until a shutdown signal.
pub fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let cfg = config(args)?;
    super::runtime()?.block_on(nodetopo::webhook::run(cfg))?;
    Ok(())
}
