//! The scheduler extender: kube-scheduler asks it to filter and score nodes for a pod, and it
//! answers from the agents' topology.
//!
//! Data flow: sources ([`source`]) send [`view::ViewEvent`]s into the [`view::ClusterView`];
//! pod events feed the [`placement::PlacementIndex`]; for each request, [`Extender`] resolves
//! the candidates and calls the pure [`policy`]; [`server`] speaks the HTTP wire format
//! ([`wire`]).

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;

pub mod cluster;
pub mod facts;
pub mod group;
pub mod grpc;
pub mod placement;
pub mod policy;
pub mod server;
pub mod source;
pub mod view;
pub mod wire;

use placement::PlacementIndex;
use policy::{Candidate, PodContext, ScoreBreakdown, Weights};
use view::SharedView;
use wire::{ExtenderArgs, ExtenderFilterResult, HostPriority, HostPriorityList};

/// The extender's state: the view, the placements and the weights.
#[derive(Clone)]
pub struct Extender {
    /// The cluster view.
    pub view: SharedView,
    /// Placed pods.
    pub placements: Arc<dyn PlacementIndex>,
    /// Score weights.
    pub weights: Weights,
}

/// The whole explanation of one request.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The pod, `<namespace>/<name>`.
    pub pod: Option<String>,
    /// What the policy knew about the pod.
    pub context: PodContext,
    /// Rejected nodes and why.
    pub rejected: BTreeMap<String, String>,
    /// Scores of the nodes that passed.
    pub scores: Vec<ScoreBreakdown>,
}

impl Extender {
    /// Filters and scores the request's candidates. Unknown nodes are rejected with a reason.
    pub fn evaluate(&self, args: &ExtenderArgs) -> Explanation {
        self.evaluate_with(args, true)
    }

    /// [`Self::evaluate`]; without `reasons` the rejected map stays empty (prioritize).
    fn evaluate_with(&self, args: &ExtenderArgs, reasons: bool) -> Explanation {
        let names = args.candidate_names();
        let labels = args.node_labels();
        let pod = args.pod.clone().unwrap_or_default();
        self.view.read(|view| {
            let ctx = policy::pod_context(&pod, view, self.placements.as_ref(), &labels);
            let resolved: Vec<_> = names
                .iter()
                .map(|n| (n, view.resolve(n, labels.get(n))))
                .collect();
            let mut rejected = BTreeMap::new();
            let mut passed = Vec::with_capacity(resolved.len());
            for (name, r) in &resolved {
                let known = r.is_some() || labels.contains_key(*name);
                if !known && !reasons {
                    continue;
                }
                if !known {
                    rejected.insert(
                        (*name).clone(),
                        "unknown node: not in the extender's view and no Node object in the request"
                            .to_string(),
                    );
                    continue;
                }
                let facts = r.as_ref().map(|r| r.facts.as_ref());
                // A pod that needs nothing from the topology passes any known node.
                let needs = ctx.requires_gpu || ctx.requires_rdma;
                match (needs, policy::filter_node(&ctx, facts)) {
                    (false, _) | (true, Ok(())) => passed.push(Candidate {
                        name: name.as_str(),
                        facts,
                        freshness: r.as_ref().map(|r| r.freshness),
                    }),
                    (true, Err(why)) => {
                        if reasons {
                            rejected.insert((*name).clone(), why.to_string());
                        }
                    }
                }
            }
            let scores = policy::score_nodes(&ctx, &passed, &self.weights);
            Explanation {
                pod: group::pod_key(&pod),
                context: ctx,
                rejected,
                scores,
            }
        })
    }

    /// The `filter` verb. The rejections move into the result; the returned explanation keeps
    /// the scores.
    pub fn filter(&self, args: &ExtenderArgs) -> (ExtenderFilterResult, Explanation) {
        let mut ex = self.evaluate(args);
        let keep: std::collections::BTreeSet<String> =
            ex.scores.iter().map(|s| s.node.clone()).collect();
        let mut out = ExtenderFilterResult {
            failed_and_unresolvable_nodes: std::mem::take(&mut ex.rejected),
            ..Default::default()
        };
        if let Some(names) = &args.node_names {
            out.node_names = Some(
                names
                    .iter()
                    .filter(|n| keep.contains(*n))
                    .cloned()
                    .collect(),
            );
        } else if let Some(list) = &args.nodes {
            out.nodes = Some(wire::retain_nodes(list, &keep));
        } else {
            out.node_names = Some(Vec::new());
        }
        (out, ex)
    }

    /// The `prioritize` verb: every candidate gets a score; rejected ones get 0.
    pub fn prioritize(&self, args: &ExtenderArgs) -> (HostPriorityList, Explanation) {
        let ex = self.evaluate_with(args, false);
        let by_node: BTreeMap<&str, i64> = ex
            .scores
            .iter()
            .map(|s| (s.node.as_str(), s.score))
            .collect();
        let list = args
            .candidate_names()
            .iter()
            .map(|n| HostPriority {
                host: n.clone(),
                score: by_node.get(n.as_str()).copied().unwrap_or(0),
            })
            .collect();
        (list, ex)
    }
}
