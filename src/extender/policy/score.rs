//! The soft rules: each candidate node's 0..=10 score, and how it was made.

use std::collections::HashMap;

use serde::Serialize;

use super::{DOMAIN_LEVELS, DomainId, DomainKeys, Level, PodContext, Weights, proximity};
use crate::extender::{facts::NodeFacts, view::Freshness, wire::MAX_EXTENDER_PRIORITY};

/// One candidate, as the policy sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The node's name.
    pub name: &'a str,
    /// Facts, when known.
    pub facts: Option<&'a NodeFacts>,
    /// How current the facts are; `None` when there are none.
    pub freshness: Option<Freshness>,
    /// GPUs the node already gives to placed group pods.
    pub used_gpus: u32,
    /// Its domain keys ([`DomainKeys::of`] its facts; the view keeps them with the facts).
    pub keys: DomainKeys,
}

impl<'a> Candidate<'a> {
    /// A candidate whose domain keys are computed from `facts` now.
    pub fn new(
        name: &'a str,
        facts: Option<&'a NodeFacts>,
        freshness: Option<Freshness>,
        used_gpus: u32,
    ) -> Self {
        Self {
            name,
            facts,
            freshness,
            used_gpus,
            keys: facts.map(DomainKeys::of).unwrap_or_default(),
        }
    }
}

/// The score of one node and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreBreakdown {
    /// The node's name.
    pub node: String,
    /// Final score, 0..=10.
    pub score: i64,
    /// Within-group term, 0..=1 (mean level value to the placed members).
    pub within_group: f64,
    /// Counterpart term, 0..=1 (best level value to a counterpart pod).
    pub counterpart: f64,
    /// Capacity term, 0..=1.
    pub capacity: f64,
    /// Closest level to any placed member.
    pub nearest_member: Level,
    /// The domain level that can hold the rest of the group, if any.
    pub capacity_level: Level,
    /// Freshness of the facts used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
    /// Why the node scored 0 without being scored, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Scores every candidate (in input order). Candidates without facts score 0.
pub fn score_nodes(
    ctx: &PodContext,
    candidates: &[Candidate<'_>],
    w: &Weights,
) -> Vec<ScoreBreakdown> {
    let counts = if ctx.remaining.is_some() {
        domain_counts(candidates, ctx.gpus)
    } else {
        HashMap::new()
    };
    // Only the terms that apply to this pod count, so that the first pod of a group (no
    // members yet) still spreads its scores over 0..=10.
    let active = |on: bool, weight: f64| if on { weight } else { 0.0 };
    let total = active(!ctx.members.is_empty(), w.within_group)
        + active(!ctx.counterparts.is_empty(), w.counterpart)
        + active(ctx.remaining.is_some(), w.capacity);
    candidates
        .iter()
        .map(|c| match c.facts {
            Some(f) => score_node(ctx, c, f, &counts, w, total),
            None => ScoreBreakdown {
                node: c.name.to_string(),
                score: 0,
                within_group: 0.0,
                counterpart: 0.0,
                capacity: 0.0,
                nearest_member: Level::None,
                capacity_level: Level::None,
                freshness: c.freshness,
                note: Some("no topology facts".into()),
            },
        })
        .collect()
}

/// Capacity: per domain at each level, the pods of `gpus` GPUs its candidates can still take
/// (each candidate at least one: kube-scheduler passed it).
fn domain_counts(candidates: &[Candidate<'_>], gpus: u32) -> HashMap<DomainId, u32> {
    let mut counts: HashMap<DomainId, u32> = HashMap::new();
    for c in candidates {
        let Some(f) = c.facts else { continue };
        let free = f.gpu_count.saturating_sub(c.used_gpus);
        let slots = free.checked_div(gpus).unwrap_or(1).max(1);
        for id in c.keys.slots().into_iter().flatten() {
            let e = counts.entry(id).or_default();
            *e = e.saturating_add(slots);
        }
    }
    counts
}

/// The tightest level at which a node's domain (`keys`) still has room for the group's
/// remaining pods.
fn capacity_level(keys: &DomainKeys, remaining: u32, counts: &HashMap<DomainId, u32>) -> Level {
    DOMAIN_LEVELS
        .iter()
        .enumerate()
        .find_map(|(slot, lvl)| {
            let n = counts.get(&keys.at(slot)?).copied().unwrap_or(0);
            (n >= remaining).then_some(*lvl)
        })
        .unwrap_or(Level::None)
}

/// One candidate's score from its facts.
fn score_node(
    ctx: &PodContext,
    c: &Candidate<'_>,
    f: &NodeFacts,
    counts: &HashMap<DomainId, u32>,
    w: &Weights,
    total: f64,
) -> ScoreBreakdown {
    let levels: Vec<Level> = ctx.members.iter().map(|m| proximity(f, &m.facts)).collect();
    let within = if levels.is_empty() {
        0.0
    } else {
        levels.iter().map(|l| w.level_value(*l)).sum::<f64>() / levels.len() as f64
    };
    let nearest_member = levels.iter().copied().max().unwrap_or(Level::None);
    let counterpart = ctx
        .counterparts
        .iter()
        .map(|p| w.level_value(proximity(f, &p.facts)))
        .fold(0.0, f64::max);
    let capacity_level = ctx
        .remaining
        .map_or(Level::None, |rem| capacity_level(&c.keys, rem, counts));
    let capacity = w.level_value(capacity_level);
    let raw = if total > 0.0 {
        (w.within_group * within + w.counterpart * counterpart + w.capacity * capacity) / total
    } else {
        0.0
    };
    let score = (raw * MAX_EXTENDER_PRIORITY as f64).round();
    let score = if score.is_finite() {
        (score as i64).clamp(0, MAX_EXTENDER_PRIORITY)
    } else {
        0
    };
    ScoreBreakdown {
        node: c.name.to_string(),
        score,
        within_group: within,
        counterpart,
        capacity,
        nearest_member,
        capacity_level,
        freshness: c.freshness,
        note: None,
    }
}
