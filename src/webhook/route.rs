//! Which kube-scheduler profile schedules a pod, decided at creation: the pods nodetopo's
//! extender places (members of a LeaderWorkerSet, DisaggregatedSet, Grove or llm-d group that ask
//! for a managed GPU resource) go to the profile that scores every feasible node; every other
//! pod keeps the profile it named, so kube-scheduler keeps its default node sampling for them.
//!
//! Why a profile and not one setting for all: below `percentageOfNodesToScore: 100`,
//! kube-scheduler stops filtering at a sample of the nodes that rotates from pod to pod, and a
//! group's domain is often missing from the sample the extender is shown. Scoring every node
//! costs about three quarters of kube-scheduler's throughput at 5,000 nodes (BENCHMARKS.md), so
//! only the pods that need it should pay. Grove makes its pods with `default-scheduler`, and
//! LeaderWorkerSet and DisaggregatedSet users rarely name a profile: the webhook does it for
//! them, and only for pods still on the default profile (a pod that names another scheduler,
//! KAI's or Volcano's, is left alone). Pure: an `AdmissionReview` in, the answer out.

use k8s_openapi::api::core::v1::{Container, Pod};

use serde_json::{Value, json};

use super::{WebhookError, review};
use crate::extender::group::group_of;

/// The profile every pod gets that names none.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// The profile group pods are sent to, unless configured otherwise.
pub const DEFAULT_GROUP_PROFILE: &str = "nodetopo-groups";
/// The resource whose pods the extender manages, unless configured otherwise (the scheduler
/// configuration's `managedResources`).
pub const DEFAULT_RESOURCE: &str = "nvidia.com/gpu";

/// Where group pods go, and which pods count as ones the extender places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The profile (`schedulerName`) group pods get.
    pub profile: String,
    /// The profile whose pods may be moved: the one kube-scheduler gives pods that name none.
    pub from: String,
    /// Extended resources the extender manages: a pod asks for at least one of them.
    pub resources: Vec<String>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            profile: DEFAULT_GROUP_PROFILE.to_string(),
            from: DEFAULT_SCHEDULER.to_string(),
            resources: vec![DEFAULT_RESOURCE.to_string()],
        }
    }
}

/// What was decided for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Sent to the group profile.
    Routed,
    /// Already names the group profile.
    AlreadyThere,
    /// Not a member of a pod group nodetopo knows.
    NotGrouped,
    /// A group member that asks for none of the managed resources.
    NoManagedResource,
    /// Names another scheduler (kept).
    OtherScheduler,
    /// Not a Pod CREATE.
    Ignored,
}

impl Route {
    /// The metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::AlreadyThere => "already_there",
            Self::NotGrouped => "not_grouped",
            Self::NoManagedResource => "no_managed_resource",
            Self::OtherScheduler => "other_scheduler",
            Self::Ignored => "ignored",
        }
    }
}

/// Whether any container (init containers too) asks for one of `resources`, in its requests
/// or its limits (an extended resource's request defaults to its limit).
fn asks_for(pod: &Pod, resources: &[String]) -> bool {
    let asks = |c: &Container| {
        c.resources.as_ref().is_some_and(|r| {
            r.requests
                .iter()
                .flatten()
                .chain(r.limits.iter().flatten())
                .any(|(k, q)| {
                    resources.iter().any(|name| name == k) && q.0.trim() != "0" && !q.0.is_empty()
                })
        })
    };
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(asks)
    })
}

/// The profile decision for `pod`.
pub fn route(pod: &Pod, cfg: &RouteConfig) -> Route {
    let named = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_SCHEDULER);
    if named == cfg.profile {
        return Route::AlreadyThere;
    }
    if named != cfg.from {
        return Route::OtherScheduler;
    }
    if group_of(pod).is_none() {
        return Route::NotGrouped;
    }
    if !asks_for(pod, &cfg.resources) {
        return Route::NoManagedResource;
    }
    Route::Routed
}

/// Answers the `AdmissionReview` in `body` (a Pod CREATE): always allowed, with a JSON patch
/// that sets `spec.schedulerName` to the group profile when [`route`] says so.
pub fn review_route(body: &[u8], cfg: &RouteConfig) -> Result<(Route, Value), WebhookError> {
    let (api_version, req) = review::read::<Value>(body)?;
    let decision = match req.object.as_ref().filter(|_| req.is_pod_create("")) {
        None => Route::Ignored,
        Some(object) => {
            let mut pod: Pod =
                serde_json::from_value(object.clone()).map_err(WebhookError::BadReview)?;
            // A Pod's namespace is often only in the request (the object has none yet).
            if pod.metadata.namespace.is_none() {
                pod.metadata.namespace = req.namespace.clone();
            }
            route(&pod, cfg)
        }
    };
    let patch = match decision {
        Route::Routed => {
            vec![json!({"op": "add", "path": "/spec/schedulerName", "value": cfg.profile})]
        }
        _ => Vec::new(),
    };
    let response = review::answer(api_version.as_deref(), &req.uid, &patch)?;
    Ok((decision, response))
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    fn pod(labels: Value, scheduler: Option<&str>, gpus: Option<&str>) -> Pod {
        let mut resources = json!({});
        if let Some(n) = gpus {
            resources = json!({"limits": {"nvidia.com/gpu": n}});
        }
        let mut spec = json!({"containers": [{"name": "vllm", "resources": resources}]});
        if let Some(s) = scheduler {
            spec["schedulerName"] = json!(s);
        }
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "inference", "labels": labels},
            "spec": spec,
        }))
        .unwrap()
    }

    fn lws() -> Value {
        json!({"leaderworkerset.sigs.k8s.io/name": "decode",
               "leaderworkerset.sigs.k8s.io/group-index": "0",
               "leaderworkerset.sigs.k8s.io/group-key": "abc"})
    }

    fn grove() -> Value {
        json!({"grove.io/podgang": "ds-0", "grove.io/podclique": "ds-0-decode",
               "app.kubernetes.io/part-of": "ds"})
    }

    #[test]
    fn group_members_asking_for_gpus_go_to_the_group_profile() {
        let cfg = RouteConfig::default();
        for labels in [lws(), grove()] {
            assert_eq!(
                route(&pod(labels.clone(), None, Some("8")), &cfg),
                Route::Routed
            );
            assert_eq!(
                route(&pod(labels, Some("default-scheduler"), Some("4")), &cfg),
                Route::Routed
            );
        }
    }

    #[test]
    fn every_other_pod_keeps_its_profile() {
        let cfg = RouteConfig::default();
        assert_eq!(
            route(&pod(json!({}), None, Some("8")), &cfg),
            Route::NotGrouped
        );
        assert_eq!(
            route(&pod(lws(), None, None), &cfg),
            Route::NoManagedResource
        );
        assert_eq!(
            route(&pod(lws(), None, Some("0")), &cfg),
            Route::NoManagedResource
        );
        assert_eq!(
            route(&pod(lws(), Some("kai-scheduler"), Some("8")), &cfg),
            Route::OtherScheduler
        );
        assert_eq!(
            route(&pod(lws(), Some("nodetopo-groups"), Some("8")), &cfg),
            Route::AlreadyThere
        );
        let other = RouteConfig {
            resources: vec!["amd.com/gpu".into()],
            ..RouteConfig::default()
        };
        assert_eq!(
            route(&pod(lws(), None, Some("8")), &other),
            Route::NoManagedResource
        );
    }

    #[test]
    fn an_init_container_request_counts() {
        let mut p = pod(lws(), None, None);
        let init: Container = serde_json::from_value(json!({
            "name": "nodetopo-env", "resources": {"requests": {"nvidia.com/gpu": "8"}}}))
        .unwrap();
        p.spec.as_mut().unwrap().init_containers = Some(vec![init]);
        assert_eq!(route(&p, &RouteConfig::default()), Route::Routed);
    }

    fn review_of(object: Value, resource: &str, sub: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "operation": "CREATE", "namespace": "inference",
                        "resource": {"group": "", "version": "v1", "resource": resource},
                        "subResource": sub, "object": object},
        }))
        .unwrap()
    }

    #[test]
    fn the_answer_patches_only_the_scheduler_name() {
        let cfg = RouteConfig::default();
        let object = serde_json::to_value(pod(lws(), None, Some("8"))).unwrap();
        let (d, answer) = review_route(&review_of(object, "pods", None), &cfg).unwrap();
        assert_eq!(d, Route::Routed);
        assert_eq!(answer["response"]["uid"], "u1");
        assert_eq!(answer["response"]["allowed"], true);
        let patch = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/spec/schedulerName", "value": "nodetopo-groups"}])
        );

        let cpu = serde_json::to_value(pod(json!({}), None, None)).unwrap();
        let (d, answer) = review_route(&review_of(cpu, "pods", None), &cfg).unwrap();
        assert_eq!(d, Route::NotGrouped);
        assert!(answer["response"].get("patch").is_none());

        let binding = json!({"target": {"kind": "Node", "name": "n"}});
        let (d, answer) = review_route(&review_of(binding, "pods", Some("binding")), &cfg).unwrap();
        assert_eq!(d, Route::Ignored);
        assert_eq!(answer["response"]["allowed"], true);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cfg = RouteConfig::default();
        assert!(matches!(
            review_route(b"{", &cfg),
            Err(WebhookError::BadReview(_))
        ));
        assert!(matches!(
            review_route(b"{}", &cfg),
            Err(WebhookError::NoRequest)
        ));
        let bad_pod = review_of(json!({"spec": {"containers": "nope"}}), "pods", None);
        assert!(matches!(
            review_route(&bad_pod, &cfg),
            Err(WebhookError::BadReview(_))
        ));
    }
}
