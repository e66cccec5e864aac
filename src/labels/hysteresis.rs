//! Hysteresis for the fabric labels: a new fabric state, NVLink domain or cluster is written only
//! once consecutive probes agree on it, so a fabric that flaps (`COMPLETED` ↔ `IN_PROGRESS`
//! while the fabric manager re-trains a link) does not flap the labels that place pods.
//!
//! Every other label follows the probe at once. The first label set is taken as it is: there is
//! nothing to keep yet.

use super::{Key, Labels};

/// The label names held back until confirmed: those derived from the multi-node NVLink fabric
/// (and the compatibility keys that carry the domain).
fn is_fabric_key(prefix: &str, key: &str) -> bool {
    let own = [Key::NvlinkFabric, Key::NvlinkDomain, Key::NvlinkCluster]
        .iter()
        .any(|k| key == k.under(prefix));
    own || key == super::compat::TOPOGRAPH_DOMAIN || key == super::compat::GFD_CLIQUE
}

/// Holds fabric label changes until `confirm` consecutive probes showed the same new values.
#[derive(Debug, Clone)]
pub struct FabricHysteresis {
    prefix: String,
    confirm: u32,
    published: Option<Labels>,
    candidate: Option<(Labels, u32)>,
}

impl FabricHysteresis {
    /// Changes must be seen on `confirm` consecutive probes (at least 1; 1 turns hysteresis off).
    pub fn new(prefix: &str, confirm: u32) -> Self {
        Self {
            prefix: prefix.to_string(),
            confirm: confirm.max(1),
            published: None,
            candidate: None,
        }
    }

    fn fabric_part(&self, labels: &Labels) -> Labels {
        labels
            .iter()
            .filter(|(k, _)| is_fabric_key(&self.prefix, &k.to_string()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// True while a fabric change is waiting for confirmation.
    pub fn is_holding(&self) -> bool {
        self.candidate.is_some()
    }

    /// The labels to publish after a probe that wants `desired`.
    pub fn update(&mut self, desired: Labels) -> Labels {
        let Some(published) = &self.published else {
            self.published = Some(desired.clone());
            return desired;
        };
        let want = self.fabric_part(&desired);
        let have = self.fabric_part(published);
        let fabric = if want == have {
            self.candidate = None;
            have
        } else {
            let seen = match &self.candidate {
                Some((c, n)) if *c == want => n + 1,
                _ => 1,
            };
            if seen >= self.confirm {
                self.candidate = None;
                want
            } else {
                self.candidate = Some((want, seen));
                have
            }
        };
        let mut out: Labels = desired
            .into_iter()
            .filter(|(k, _)| !is_fabric_key(&self.prefix, &k.to_string()))
            .collect();
        out.extend(fabric);
        self.published = Some(out.clone());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{LabelKey, LabelValue};

    fn set(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (LabelKey::parse(k).unwrap(), LabelValue::new(v).unwrap()))
            .collect()
    }

    fn ready() -> Labels {
        set(&[
            ("nodetopo.io/gpu.count", "4"),
            ("nodetopo.io/nvlink.fabric", "ready"),
            ("nodetopo.io/nvlink.domain", "c1.7"),
            ("nodetopo.io/nvlink.cluster", "c1"),
        ])
    }

    fn pending() -> Labels {
        set(&[
            ("nodetopo.io/gpu.count", "4"),
            ("nodetopo.io/nvlink.fabric", "pending"),
            ("nodetopo.io/nvlink.cluster", "c1"),
        ])
    }

    #[test]
    fn a_flapping_fabric_keeps_the_last_confirmed_labels() {
        let mut h = FabricHysteresis::new("nodetopo.io", 2);
        assert_eq!(
            h.update(ready()),
            ready(),
            "the first set is taken as it is"
        );
        for _ in 0..10 {
            assert_eq!(h.update(pending()), ready());
            assert!(h.is_holding());
            assert_eq!(h.update(ready()), ready());
            assert!(!h.is_holding());
        }
    }

    #[test]
    fn a_lasting_change_is_published_on_the_confirming_probe() {
        let mut h = FabricHysteresis::new("nodetopo.io", 2);
        h.update(ready());
        assert_eq!(h.update(pending()), ready());
        assert_eq!(h.update(pending()), pending(), "seen twice: published");
        assert_eq!(h.update(pending()), pending());
        assert_eq!(h.update(ready()), pending());
        assert_eq!(h.update(ready()), ready());
    }

    #[test]
    fn other_labels_follow_at_once_while_the_fabric_is_held() {
        let mut h = FabricHysteresis::new("nodetopo.io", 2);
        h.update(ready());
        let mut fewer = pending();
        fewer.insert(
            LabelKey::parse("nodetopo.io/gpu.count").unwrap(),
            LabelValue::new("3").unwrap(),
        );
        let mut want = ready();
        want.insert(
            LabelKey::parse("nodetopo.io/gpu.count").unwrap(),
            LabelValue::new("3").unwrap(),
        );
        assert_eq!(h.update(fewer), want);
    }

    #[test]
    fn a_new_candidate_restarts_the_count_and_one_turns_it_off() {
        let mut h = FabricHysteresis::new("nodetopo.io", 3);
        h.update(ready());
        let degraded = set(&[
            ("nodetopo.io/gpu.count", "4"),
            ("nodetopo.io/nvlink.fabric", "degraded"),
        ]);
        assert_eq!(h.update(pending()), ready());
        assert_eq!(h.update(degraded.clone()), ready());
        assert_eq!(h.update(degraded.clone()), ready());
        assert_eq!(h.update(degraded.clone()), degraded);
        let mut off = FabricHysteresis::new("nodetopo.io", 1);
        off.update(ready());
        assert_eq!(off.update(pending()), pending());
    }
}
