//! Multi-node NVLink (MNNVL) fabric: decoding one GPU's fabric info, and deriving the node's
//! NVLink domain from all of them. Pure functions; no NVML here.
//!
//! The domain rule is the one NVIDIA's GPU feature discovery uses for `nvidia.com/gpu.clique`:
//! `<ClusterUUID>.<CliqueId>` only when every fabric-attached GPU completed registration with
//! status SUCCESS and a non-zero ClusterUUID, and all GPUs agree. Anything else is an explicit
//! state with a reason.

use crate::model::{
    Fabric, FabricHealth, FabricHealthProblem, FabricRegistration, FabricState, GpuFabricInfo,
};

use super::{Fact, RawFabric};

const STATE_NOT_SUPPORTED: u8 = 0;
const STATE_NOT_STARTED: u8 = 1;
const STATE_IN_PROGRESS: u8 = 2;
const STATE_COMPLETED: u8 = 3;

/// Health mask fields: (shift, name). Each is a 2-bit field where 1 means "true" (a problem).
const HEALTH_FLAGS: [(u32, FabricHealthProblem); 4] = [
    (0, FabricHealthProblem::DegradedBandwidth),
    (2, FabricHealthProblem::RouteRecovery),
    (4, FabricHealthProblem::RouteUnhealthy),
    (6, FabricHealthProblem::AccessTimeoutRecovery),
];
/// Incorrect-configuration field: shift 8, 4 bits; 0 not supported, 1 none, 2.. a problem.
const HEALTH_CONFIG_SHIFT: u32 = 8;
const HEALTH_CONFIG_NAMES: [FabricHealthProblem; 6] = [
    FabricHealthProblem::IncorrectSysguid,
    FabricHealthProblem::IncorrectChassisSn,
    FabricHealthProblem::NoPartition,
    FabricHealthProblem::InsufficientNvlinks,
    FabricHealthProblem::IncompatibleGpuFirmware,
    FabricHealthProblem::InvalidLocation,
];

/// Formats 32 hex digits as a canonical UUID (8-4-4-4-12). Other input is returned unchanged.
pub fn canonical_uuid(hex: &str) -> String {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex.to_string();
    }
    let h = hex.to_ascii_lowercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn is_zero_uuid(u: &str) -> bool {
    u.chars().all(|c| c == '0' || c == '-')
}

/// Decodes one GPU's raw fabric answer into the model.
pub fn decode(raw: &RawFabric) -> GpuFabricInfo {
    let registration = match raw.state {
        STATE_NOT_SUPPORTED => FabricRegistration::NotSupported,
        STATE_NOT_STARTED => FabricRegistration::NotStarted,
        STATE_IN_PROGRESS => FabricRegistration::InProgress,
        STATE_COMPLETED => FabricRegistration::Completed,
        _ => FabricRegistration::Unknown,
    };
    let health_summary = match raw.health_summary {
        Some(1) => FabricHealth::Healthy,
        Some(2) => FabricHealth::Unhealthy,
        Some(3) => FabricHealth::LimitedCapacity,
        _ => FabricHealth::Unknown,
    };
    let mask = raw.health_mask.unwrap_or(0);
    let mut problems: Vec<FabricHealthProblem> = HEALTH_FLAGS
        .iter()
        .filter(|(shift, _)| (mask >> shift) & 0x3 == 1)
        .map(|(_, p)| p.clone())
        .collect();
    let config = (mask >> HEALTH_CONFIG_SHIFT) & 0xf;
    if config >= 2 {
        problems.push(
            HEALTH_CONFIG_NAMES
                .get(config as usize - 2)
                .cloned()
                .unwrap_or_else(|| {
                    FabricHealthProblem::Other(format!("incorrect-configuration-{config}"))
                }),
        );
    }
    match health_summary {
        FabricHealth::Unhealthy => problems.push(FabricHealthProblem::Unhealthy),
        FabricHealth::LimitedCapacity => problems.push(FabricHealthProblem::LimitedCapacity),
        _ => {}
    }
    GpuFabricInfo {
        api_version: raw.api_version,
        registration,
        status: raw.status,
        cluster_uuid: canonical_uuid(&raw.cluster_uuid),
        clique_id: raw.clique_id,
        health_mask: mask,
        health_summary,
        health_problems: problems,
    }
}

/// One GPU's input to the domain rule.
#[derive(Debug, Clone)]
pub struct GpuFabricInput<'a> {
    /// GPU index, for reasons.
    pub index: u32,
    /// The decoded fabric info, or the query failure.
    pub info: Result<&'a GpuFabricInfo, &'a str>,
}

/// Per-GPU classification used by the rule.
enum Class<'a> {
    /// Not in a fabric (unsupported, or completed with a zero ClusterUUID).
    Detached,
    Pending,
    Error(String),
    Attached {
        cluster: &'a str,
        clique: u32,
        problems: &'a [FabricHealthProblem],
    },
}

/// Derives the node's NVLink domain from every GPU's fabric info.
///
/// Precedence when GPUs differ: error, then pending, then inconsistent, then degraded; a node is
/// ready only when all fabric-attached GPUs agree and are healthy.
pub fn derive_domain(gpus: &[GpuFabricInput<'_>]) -> Fabric {
    if gpus.is_empty() {
        return fabric(FabricState::None, "no GPUs");
    }
    let classes: Vec<(u32, Class<'_>)> = gpus.iter().map(|g| (g.index, classify(g))).collect();
    if let Some(f) = not_all_registered(&classes) {
        return f;
    }
    let attached: Vec<Attached<'_>> = classes
        .iter()
        .filter_map(|(index, c)| match c {
            Class::Attached {
                cluster,
                clique,
                problems,
            } => Some(Attached {
                index: *index,
                cluster,
                clique: *clique,
                problems,
            }),
            _ => None,
        })
        .collect();
    if attached.is_empty() {
        return fabric(
            FabricState::None,
            "no GPU is in a multi-node NVLink cluster (fabric unsupported or ClusterUUID is zero)",
        );
    }
    if attached.len() != classes.len() {
        let detached = indices(&classes, |c| matches!(c, Class::Detached));
        return fabric(
            FabricState::Inconsistent,
            format!("GPU {detached} report no cluster while others do"),
        );
    }
    one_clique(&attached)
}

/// One GPU's fabric answer, classified.
fn classify<'a>(g: &GpuFabricInput<'a>) -> Class<'a> {
    let info = match g.info {
        Err(e) => return Class::Error(format!("GPU {}: fabric query failed: {e}", g.index)),
        Ok(info) => info,
    };
    match info.registration {
        FabricRegistration::NotSupported => Class::Detached,
        FabricRegistration::NotStarted | FabricRegistration::InProgress => Class::Pending,
        FabricRegistration::Unknown => Class::Error(format!(
            "GPU {}: unknown fabric registration state",
            g.index
        )),
        FabricRegistration::Completed if info.status != 0 => Class::Error(format!(
            "GPU {}: fabric registration completed with NVML status {}",
            g.index, info.status
        )),
        FabricRegistration::Completed if is_zero_uuid(&info.cluster_uuid) => Class::Detached,
        FabricRegistration::Completed => Class::Attached {
            cluster: &info.cluster_uuid,
            clique: info.clique_id,
            problems: &info.health_problems,
        },
    }
}

/// The GPU indices whose class matches, comma-separated.
fn indices(classes: &[(u32, Class<'_>)], want: impl Fn(&Class<'_>) -> bool) -> String {
    classes
        .iter()
        .filter(|(_, c)| want(c))
        .map(|(i, _)| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `error` when any query failed, `pending` when any registration is unfinished.
fn not_all_registered(classes: &[(u32, Class<'_>)]) -> Option<Fabric> {
    let errors: Vec<&str> = classes
        .iter()
        .filter_map(|(_, c)| match c {
            Class::Error(e) => Some(e.as_str()),
            _ => None,
        })
        .collect();
    if !errors.is_empty() {
        return Some(fabric(FabricState::Error, errors.join("; ")));
    }
    let pending = indices(classes, |c| matches!(c, Class::Pending));
    (!pending.is_empty()).then(|| {
        fabric(
            FabricState::Pending,
            format!("fabric registration not completed on GPU {pending}"),
        )
    })
}

/// A GPU registered in a cluster.
struct Attached<'a> {
    index: u32,
    cluster: &'a str,
    clique: u32,
    problems: &'a [FabricHealthProblem],
}

/// Every GPU is attached: `ready` in one clique, else `inconsistent` or `degraded`.
fn one_clique(attached: &[Attached<'_>]) -> Fabric {
    let first = &attached[0];
    let (cluster, clique) = (first.cluster, first.clique);
    if let Some(other) = attached
        .iter()
        .find(|a| a.cluster != cluster || a.clique != clique)
    {
        let mut f = fabric(
            FabricState::Inconsistent,
            format!(
                "GPU {} is in {cluster}.{clique} but GPU {} is in {}.{}",
                first.index, other.index, other.cluster, other.clique
            ),
        );
        if attached.iter().all(|a| a.cluster == cluster) {
            f.cluster_uuid = Some(cluster.to_string());
        }
        return f;
    }
    let unhealthy: Vec<String> = attached
        .iter()
        .filter(|a| !a.problems.is_empty())
        .map(|a| {
            let names: Vec<&str> = a.problems.iter().map(FabricHealthProblem::as_str).collect();
            format!("GPU {}: {}", a.index, names.join(","))
        })
        .collect();
    if !unhealthy.is_empty() {
        let mut f = fabric(
            FabricState::Degraded,
            format!("fabric health problems: {}", unhealthy.join("; ")),
        );
        f.cluster_uuid = Some(cluster.to_string());
        return f;
    }
    Fabric {
        state: FabricState::Ready,
        reason: format!("{} GPUs registered in one clique", attached.len()),
        domain: Some(format!("{cluster}.{clique}")),
        cluster_uuid: Some(cluster.to_string()),
        clique_id: Some(clique),
    }
}

fn fabric(state: FabricState, reason: impl Into<String>) -> Fabric {
    Fabric {
        state,
        reason: reason.into(),
        ..Fabric::default()
    }
}

/// Decodes every GPU's fabric fact and derives the domain.
pub fn from_facts(facts: &[(u32, Fact<RawFabric>)]) -> (Vec<Option<GpuFabricInfo>>, Fabric) {
    let decoded: Vec<Result<GpuFabricInfo, String>> = facts
        .iter()
        .map(|(_, f)| match f {
            Ok(raw) => Ok(decode(raw)),
            Err(e) if e.is_not_supported() => Ok(GpuFabricInfo {
                registration: FabricRegistration::NotSupported,
                ..GpuFabricInfo::default()
            }),
            Err(e) => Err(e.to_string()),
        })
        .collect();
    let inputs: Vec<GpuFabricInput<'_>> = facts
        .iter()
        .zip(&decoded)
        .map(|((i, _), d)| GpuFabricInput {
            index: *i,
            info: d.as_ref().map_err(String::as_str),
        })
        .collect();
    let domain = derive_domain(&inputs);
    let per_gpu = facts
        .iter()
        .zip(decoded)
        .map(|((_, raw), d)| match (raw, d) {
            (Ok(_), Ok(info)) => Some(info),
            _ => None,
        })
        .collect();
    (per_gpu, domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::nvml::{FailureKind, NvmlFailure};

    const CLUSTER: &str = "8c1b2a3d4e5f60718293a4b5c6d7e8f9";

    fn raw(state: u8, status: u32, uuid: &str, clique: u32, mask: u32) -> Fact<RawFabric> {
        Ok(RawFabric {
            api_version: 3,
            state,
            status,
            cluster_uuid: uuid.into(),
            clique_id: clique,
            health_mask: Some(mask),
            health_summary: Some(1),
        })
    }

    fn run(f: Vec<Fact<RawFabric>>) -> Fabric {
        let facts: Vec<(u32, Fact<RawFabric>)> = f
            .into_iter()
            .enumerate()
            .map(|(i, f)| (i as u32, f))
            .collect();
        from_facts(&facts).1
    }

    const HEALTHY: u32 = 0b10_10_10_10 | (1 << 8);

    #[test]
    fn uuid_is_canonical() {
        assert_eq!(
            canonical_uuid(CLUSTER),
            "8c1b2a3d-4e5f-6071-8293-a4b5c6d7e8f9"
        );
        assert_eq!(canonical_uuid("xyz"), "xyz");
    }

    #[test]
    fn ready_when_all_agree() {
        let f = run(vec![raw(3, 0, CLUSTER, 7, HEALTHY); 4]);
        assert_eq!(f.state, FabricState::Ready);
        assert_eq!(
            f.domain.as_deref(),
            Some("8c1b2a3d-4e5f-6071-8293-a4b5c6d7e8f9.7")
        );
        assert_eq!(f.clique_id, Some(7));
    }

    #[test]
    fn zero_uuid_is_none() {
        let f = run(vec![raw(3, 0, &"0".repeat(32), 0, 0); 4]);
        assert_eq!(f.state, FabricState::None);
        assert!(f.domain.is_none());
    }

    #[test]
    fn not_supported_is_none() {
        let ns = Err(NvmlFailure::new(FailureKind::NotSupported, "Not Supported"));
        let f = run(vec![ns.clone(), ns]);
        assert_eq!(f.state, FabricState::None);
    }

    #[test]
    fn in_progress_is_pending() {
        let mut gpus = vec![raw(3, 0, CLUSTER, 7, HEALTHY); 4];
        gpus[2] = raw(2, 0, &"0".repeat(32), 0, 0);
        let f = run(gpus);
        assert_eq!(f.state, FabricState::Pending);
        assert!(f.reason.contains("GPU 2"), "{}", f.reason);
        assert!(f.domain.is_none());
    }

    #[test]
    fn disagreeing_cliques_are_inconsistent() {
        let mut gpus = vec![raw(3, 0, CLUSTER, 7, HEALTHY); 4];
        gpus[3] = raw(3, 0, CLUSTER, 8, HEALTHY);
        let f = run(gpus);
        assert_eq!(f.state, FabricState::Inconsistent);
        assert!(f.domain.is_none());
        assert!(f.cluster_uuid.is_some(), "same cluster is still known");
    }

    #[test]
    fn partially_attached_is_inconsistent() {
        let mut gpus = vec![raw(3, 0, CLUSTER, 7, HEALTHY); 4];
        gpus[0] = raw(3, 0, &"0".repeat(32), 0, 0);
        assert_eq!(run(gpus).state, FabricState::Inconsistent);
    }

    #[test]
    fn degraded_bandwidth_is_degraded() {
        let mut gpus = vec![raw(3, 0, CLUSTER, 7, HEALTHY); 4];
        gpus[1] = raw(3, 0, CLUSTER, 7, (HEALTHY & !0b11) | 0b01);
        let f = run(gpus);
        assert_eq!(f.state, FabricState::Degraded);
        assert!(f.reason.contains("degraded-bandwidth"), "{}", f.reason);
        assert!(f.domain.is_none());
    }

    #[test]
    fn incorrect_configuration_is_degraded() {
        let info = decode(&RawFabric {
            api_version: 3,
            state: 3,
            status: 0,
            cluster_uuid: CLUSTER.into(),
            clique_id: 1,
            health_mask: Some(5 << 8),
            health_summary: Some(3),
        });
        assert_eq!(
            info.health_problems,
            [
                FabricHealthProblem::InsufficientNvlinks,
                FabricHealthProblem::LimitedCapacity
            ]
        );
    }

    #[test]
    fn failed_registration_is_error() {
        let f = run(vec![
            raw(3, 0, CLUSTER, 7, HEALTHY),
            raw(3, 999, CLUSTER, 7, 0),
        ]);
        assert_eq!(f.state, FabricState::Error);
        assert!(f.reason.contains("999"));
    }

    #[test]
    fn query_failure_is_error() {
        let f = run(vec![
            raw(3, 0, CLUSTER, 7, HEALTHY),
            Err(NvmlFailure::new(FailureKind::GpuLost, "GPU is lost")),
        ]);
        assert_eq!(f.state, FabricState::Error);
        assert!(f.reason.contains("GPU is lost"));
    }

    #[test]
    fn no_gpus_is_none() {
        assert_eq!(run(vec![]).state, FabricState::None);
    }
}
