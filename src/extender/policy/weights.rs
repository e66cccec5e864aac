//! The score weights: the terms of a node's score and the value of each proximity level, checked
//! when they are read.

use serde::{Deserialize, Serialize};

use super::Level;

/// Weights of the score terms and the value of each proximity level. Only the ratios matter:
/// the weighted sum is scaled to 0..=10.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// Closeness to the group's placed members.
    pub within_group: f64,
    /// Closeness to the counterpart role of the same deployment; must not exceed
    /// `within_group`.
    pub counterpart: f64,
    /// Whether the node's domain can hold the rest of the group.
    pub capacity: f64,
    /// Value of the same clique, in 0..=1.
    pub level_clique: f64,
    /// Value of the same NVLink cluster.
    pub level_cluster: f64,
    /// Value of the same leaf switch or scalable unit.
    pub level_leaf: f64,
    /// Value of the same leaf/block.
    pub level_block: f64,
    /// Value of the same RDMA fabric.
    pub level_fabric: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            within_group: 6.0,
            counterpart: 2.0,
            capacity: 2.0,
            level_clique: 1.0,
            level_cluster: 0.75,
            level_leaf: 0.6,
            level_block: 0.5,
            level_fabric: 0.25,
        }
    }
}

/// Invalid weights.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum WeightsError {
    /// A weight is negative or not finite.
    #[error("weight {name} = {value} must be a finite number >= 0")]
    Negative {
        /// Name of the weight (`within_group`, `counterpart`, `capacity`).
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A level value is outside 0..=1.
    #[error("level value {name} = {value} must be within 0..=1")]
    LevelRange {
        /// Name of the level value (`level_leaf`, ...).
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// Levels must not rank a farther level above a closer one.
    #[error(
        "level values must not increase with distance (clique >= cluster >= leaf >= block >= fabric)"
    )]
    LevelOrder,
    /// The counterpart term is larger than the within-group term.
    #[error("counterpart weight {counterpart} must not exceed within_group weight {within_group}")]
    CounterpartTooLarge {
        /// The `counterpart` weight given.
        counterpart: f64,
        /// The `within_group` weight given.
        within_group: f64,
    },
    /// All weights are zero.
    #[error("at least one of within_group, counterpart, capacity must be > 0")]
    AllZero,
}

impl Weights {
    /// Checks the weights.
    pub fn validate(&self) -> Result<(), WeightsError> {
        for (name, value) in [
            ("within_group", self.within_group),
            ("counterpart", self.counterpart),
            ("capacity", self.capacity),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(WeightsError::Negative { name, value });
            }
        }
        for (name, value) in [
            ("level_clique", self.level_clique),
            ("level_cluster", self.level_cluster),
            ("level_leaf", self.level_leaf),
            ("level_block", self.level_block),
            ("level_fabric", self.level_fabric),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(WeightsError::LevelRange { name, value });
            }
        }
        if !(self.level_clique >= self.level_cluster
            && self.level_cluster >= self.level_leaf
            && self.level_leaf >= self.level_block
            && self.level_block >= self.level_fabric)
        {
            return Err(WeightsError::LevelOrder);
        }
        if self.counterpart > self.within_group {
            return Err(WeightsError::CounterpartTooLarge {
                counterpart: self.counterpart,
                within_group: self.within_group,
            });
        }
        if self.within_group + self.counterpart + self.capacity <= 0.0 {
            return Err(WeightsError::AllZero);
        }
        Ok(())
    }

    /// The value of a level.
    pub fn level_value(&self, l: Level) -> f64 {
        match l {
            Level::Clique => self.level_clique,
            Level::Cluster => self.level_cluster,
            Level::Leaf => self.level_leaf,
            Level::Block => self.level_block,
            Level::Fabric => self.level_fabric,
            Level::None => 0.0,
        }
    }
}
