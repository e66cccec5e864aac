//! The extender's cluster page (`GET {prefix}/debug/view` in a browser) as an operator sees it:
//! a view of a few hundred nodes served on 127.0.0.1, loaded in headless Chromium; the DOM it
//! builds is checked and a screenshot is left under the test target directory.
//!
//! Needs Chromium (Debian `chromium`; CI installs it). Without it the browser checks are
//! skipped as `common::require` says: they fail under `CI` or `NODETOPO_REQUIRE_CHROMIUM=1`
//! (`.ci/run` sets it); the HTML itself is still checked.

mod common;

use std::{collections::BTreeMap, path::Path, process::Command, sync::Arc, time::Duration};

use nodetopo::{
    extender::{
        Extender,
        group::{GroupInfo, GroupKind, Role},
        placed::{MemoryPlacementIndex, PlacedPod, PlacementIndex, PodEvent},
        policy::Weights,
        server::{ServerConfig, router},
        view::{ClusterView, LabelKeys, SharedView, ViewEvent},
    },
    labels::Key,
    model::{Fabric, FabricState, Gpu, NodeTopology},
};

const RACKS: usize = 4;
const TRAYS: usize = 18;
const PLAIN: usize = 228;
const BLOCK: &str = "network.example.com/leaf";

fn tray(node: &str, rack: usize, state: FabricState) -> NodeTopology {
    let uuid = format!("{:032x}", 0xa000 + rack);
    NodeTopology {
        node_name: node.into(),
        gpus: (0..4)
            .map(|i| Gpu {
                index: i,
                ..Gpu::default()
            })
            .collect(),
        fabric: Fabric {
            state,
            domain: (state == FabricState::Ready).then(|| format!("{uuid}.1")),
            cluster_uuid: Some(uuid),
            clique_id: Some(1),
            ..Fabric::default()
        },
        ..NodeTopology::default()
    }
}

/// 4 racks of 18 GB200 trays (one degraded tray, one agent gone per rack) and 228 HGX nodes on
/// 6 leaves, a sixth of them known from labels only. Two groups placed.
fn cluster() -> (SharedView, Arc<MemoryPlacementIndex>) {
    let view = SharedView::new(ClusterView::new(LabelKeys {
        prefix: "nodetopo.io".into(),
        block_label: Some(BLOCK.into()),
    }));
    for r in 0..RACKS {
        for t in 0..TRAYS {
            let node = format!("gb-r{r}-t{t:02}");
            let state = if t == 5 {
                FabricState::Degraded
            } else {
                FabricState::Ready
            };
            view.apply(ViewEvent::Topology {
                node: node.clone(),
                topology: Arc::new(tray(&node, r, state)),
            });
            if t == 17 {
                view.apply(ViewEvent::Disconnected {
                    node,
                    reason: "stream closed".into(),
                });
            }
        }
    }
    for i in 0..PLAIN {
        let node = format!("hgx-{i:03}");
        let mut labels = BTreeMap::from([(BLOCK.to_string(), format!("leaf-{}", i % 6))]);
        if i % 6 == 0 {
            // Labels only: no agent stream for this node.
            labels.insert(Key::GpuCount.under("nodetopo.io"), "8".into());
            labels.insert(Key::NvlinkFabric.under("nodetopo.io"), "none".into());
        } else {
            view.apply(ViewEvent::Topology {
                node: node.clone(),
                topology: Arc::new(NodeTopology {
                    node_name: node.clone(),
                    fabric: Fabric {
                        state: FabricState::None,
                        ..Fabric::default()
                    },
                    ..NodeTopology::default()
                }),
            });
        }
        view.apply(ViewEvent::Labels { node, labels });
    }
    let placements = Arc::new(MemoryPlacementIndex::new());
    let group = |id: &str, role| GroupInfo {
        kind: GroupKind::Lws,
        group_id: id.into(),
        deployment: "serving/ds".into(),
        role: Some(role),
        size: Some(4),
    };
    for k in 0..4 {
        placements.apply(PodEvent::Placed(PlacedPod {
            pod: format!("serving/decode-{k}"),
            node: format!("gb-r1-t{:02}", k),
            group: group("serving/decode-0", Role::Decode),
            gpus: 4,
        }));
        placements.apply(PodEvent::Placed(PlacedPod {
            pod: format!("serving/prefill-{k}"),
            node: format!("hgx-{:03}", 1 + k),
            group: group("serving/prefill-0", Role::Prefill),
            gpus: 8,
        }));
    }
    (view, placements)
}

async fn serve() -> (String, tokio::task::JoinHandle<()>) {
    let (view, placements) = cluster();
    let ext = Extender::new(view, placements, Weights::default());
    let app = router(
        ext,
        ServerConfig {
            prefix: "/nodetopo".into(),
            ..ServerConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/nodetopo/debug/view"), task)
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

fn check_dom(dom: &str) {
    let nodes = RACKS * TRAYS + PLAIN;
    assert_eq!(count(dom, "data-node="), nodes, "one tile per node");
    assert!(
        dom.contains(&format!("data-nodes=\"{nodes}\"")),
        "summary counts every node"
    );
    // Racks (NVLink clusters) come first, then the leaves of the other nodes.
    assert_eq!(count(dom, "data-box=\"NVLink cluster "), RACKS);
    assert_eq!(count(dom, "data-box=\"leaf leaf-"), 6);
    assert!(dom.find("NVLink cluster").unwrap() < dom.find("No multi-node NVLink").unwrap());
    // Colour by fabric state, stale and labels-only visible as such.
    assert_eq!(count(dom, "data-state=\"degraded\""), RACKS);
    assert_eq!(count(dom, "data-freshness=\"stale\""), RACKS);
    assert_eq!(count(dom, "data-freshness=\"labels-only\""), PLAIN / 6);
    // Each group's pods are marked on their nodes and listed.
    assert_eq!(count(dom, "data-groups=\"serving/decode-0\""), 4);
    assert_eq!(count(dom, "data-groups=\"serving/prefill-0\""), 4);
    assert_eq!(count(dom, "class=\"group\""), 2);
}

#[tokio::test]
async fn cluster_page_in_a_browser() {
    let (url, task) = serve().await;
    let client = reqwest_like(&url).await;
    // A browser's Accept header gets the page; a script still gets JSON.
    assert!(
        client.0.starts_with("<!DOCTYPE html>"),
        "{}",
        &client.0[..200.min(client.0.len())]
    );
    assert!(client.1.trim_start().starts_with('['), "JSON for scripts");
    check_dom(&client.0);

    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(common::which);
    let Some(chromium) = common::require(
        chromium,
        "Chromium (Debian package chromium)",
        "loading the cluster page in a browser",
        "NODETOPO_REQUIRE_CHROMIUM",
    ) else {
        task.abort();
        return;
    };
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pictures");
    std::fs::create_dir_all(&out_dir).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let browser = |extra: &[String]| {
        let url = url.clone();
        let profile = profile.path().to_path_buf();
        let extra = extra.to_vec();
        let chromium = chromium.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--hide-scrollbars",
                    // Loopback only: no background requests, and no host name resolves.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-default-browser-check",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(extra)
                .arg(url)
                .output()
                .unwrap()
        })
    };
    let dom = tokio::time::timeout(Duration::from_secs(120), browser(&["--dump-dom".into()]))
        .await
        .expect("chromium answers")
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8(dom.stdout).unwrap();
    check_dom(&dom);
    let shot = out_dir.join("cluster-view.png");
    let _ = std::fs::remove_file(&shot);
    let r = tokio::time::timeout(
        Duration::from_secs(120),
        browser(&[
            format!("--screenshot={}", shot.display()),
            "--window-size=1400,1900".into(),
        ]),
    )
    .await
    .expect("chromium answers")
    .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    println!("screenshot: {}", shot.display());
    task.abort();
}

/// GETs `url` twice over plain HTTP/1.1: as a browser (`Accept: text/html`) and as a script.
async fn reqwest_like(url: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut out = Vec::new();
    for accept in ["text/html,application/xhtml+xml,*/*;q=0.8", "*/*"] {
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        let req = format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // The body may be chunked.
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        out.push(body);
    }
    (out.remove(0), out.remove(0))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}
