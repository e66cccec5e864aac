//! The Kubernetes client of every nodetopo process (agent, extender, webhook).
//!
//! kube's client retries 429, 503 and 504 answers on its own, inside one request and out of
//! sight: the caller sees one slow success or one error, its metrics count one attempt, and a
//! throttled process sends a burst of requests where it meant one. nodetopo turns that retry off
//! everywhere and retries where the failure is visible: the agent's label writer with its
//! backoff and the server's `Retry-After`, the extender's and the webhook's watches with
//! kube-runtime's watcher backoff, each failed attempt logged with its cause.

/// `config` with kube's own retry of 429, 503 and 504 answers turned off.
pub fn without_hidden_retry(mut config: kube::Config) -> kube::Config {
    config.default_retry = false;
    config
}

/// The in-cluster or kubeconfig configuration, with kube's own retry turned off.
pub async fn inferred_config() -> Result<kube::Config, kube::Error> {
    kube::Config::infer()
        .await
        .map(without_hidden_retry)
        .map_err(kube::Error::InferConfig)
}

/// A client from the in-cluster or kubeconfig configuration, with kube's own retry turned off.
pub async fn client() -> Result<kube::Client, kube::Error> {
    kube::Client::try_from(inferred_config().await?)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use k8s_openapi::api::core::v1::Node;
    use kube::{Api, api::ListParams};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An API server on loopback that throttles every request, and counts them.
    async fn throttling_server() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            got.drain(..end + 4);
                            counter.fetch_add(1, Ordering::SeqCst);
                            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"slow down","reason":"TooManyRequests","code":429}"#;
                            let answer = format!(
                                "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n\
                                 Retry-After: 0\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if s.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    async fn list_once(config: kube::Config) -> Result<(), kube::Error> {
        let client = kube::Client::try_from(config).unwrap();
        Api::<Node>::all(client)
            .list(&ListParams::default())
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn a_throttled_request_is_one_request_and_its_error() {
        let (url, seen) = throttling_server().await;
        let config = kube::Config::new(url.parse().unwrap());

        // kube's default: the 429 is retried inside the call (up to 15 times, backing off to
        // minutes), which the caller cannot see; within 2 s it has sent several requests.
        let call = tokio::time::timeout(Duration::from_secs(2), list_once(config.clone())).await;
        let hidden = seen.swap(0, Ordering::SeqCst);
        assert!(
            hidden > 1,
            "kube's default sent {hidden} request(s) for one call ({call:?})"
        );

        // Ours: one request, and the 429 reaches the caller, who retries where it shows.
        let err = list_once(without_hidden_retry(config)).await.unwrap_err();
        assert_eq!(seen.load(Ordering::SeqCst), 1, "{err}");
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 429),
            "the caller sees the 429: {err}"
        );
    }
}
