//! The extender's JSON input (kube-scheduler's `ExtenderArgs`, in both modes): any body either
//! fails to decode or is filtered and prioritized without panicking, and every host the answer
//! names is one of the request's candidates.
#![no_main]

use std::{collections::BTreeSet, sync::Arc};

use libfuzzer_sys::fuzz_target;
use nodetopo::extender::{
    Extender,
    placed::MemoryPlacementIndex,
    policy::Weights,
    view::{ClusterView, LabelKeys, SharedView},
    wire::ExtenderRequest,
};

fuzz_target!(|data: &[u8]| {
    let Ok(args) = serde_json::from_slice::<ExtenderRequest>(data) else {
        return;
    };
    let view = SharedView::new(ClusterView::new(LabelKeys {
        prefix: "nodetopo.io".into(),
        block_label: Some("leaf".into()),
    }));
    let ext = Extender::new(view, Arc::new(MemoryPlacementIndex::new()), Weights::default());
    let names: BTreeSet<String> = args.candidate_names().iter().cloned().collect();
    let _ = args.node_labels();
    let (filtered, _) = ext.filter(&args);
    for n in filtered.node_names.iter().flatten() {
        assert!(names.contains(n), "{n} was not a candidate");
    }
    let (scores, _) = ext.prioritize(&args);
    for h in &scores {
        assert!(names.contains(&h.host), "{} was not a candidate", h.host);
    }
    let _ = ext.evaluate(&args);
});
