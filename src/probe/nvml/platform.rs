//! NVML platform info: where a GPU sits physically (chassis serial, slot, tray, host, module).
//! Pure decoding of the raw answer into the model; no NVML here.
//!
//! "Not supported" (a driver before R570, a GPU that is not in a GB200/GB300 rack, or a library
//! without the symbol) is an answer, not a fault; a snapshot recorded before this query existed
//! leaves the facts unknown. Any other failure is an error, reported as a problem of the probe.

use crate::model::{GpuPlatform, PlatformStatus};

use super::{Fact, FailureKind, RawPlatform};

/// Hex digits as bytes; `None` when `hex` is not an even number of hex digits.
fn bytes_of(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The chassis serial from its raw bytes: the text before the first NUL when it is printable
/// ASCII, else the hex digits of the bytes without trailing zeros. `None` when all zero.
pub fn chassis_serial(raw: &str) -> Option<String> {
    let Some(bytes) = bytes_of(raw) else {
        // Not hex (a hand-written snapshot): taken as the text itself.
        let t = raw.trim();
        return (!t.is_empty()).then(|| t.to_string());
    };
    let text: &[u8] = bytes.split(|b| *b == 0).next().unwrap_or(&[]);
    let rest_zero = bytes[text.len()..].iter().all(|b| *b == 0);
    if !text.is_empty() && rest_zero && text.iter().all(|b| (0x20..0x7f).contains(b)) {
        let t = String::from_utf8_lossy(text).trim().to_string();
        if !t.is_empty() {
            return Some(t);
        }
    }
    let end = bytes.iter().rposition(|b| *b != 0)? + 1;
    Some(hex(&bytes[..end]))
}

/// The InfiniBand GUID: `0x` and 16 hex digits when only the first 8 bytes are used (Blackwell),
/// else all 32 digits. `None` when all zero.
pub fn ib_guid(raw: &str) -> Option<String> {
    let bytes = bytes_of(raw)?;
    if bytes.iter().all(|b| *b == 0) {
        return None;
    }
    if bytes.len() == 16 && bytes[8..].iter().all(|b| *b == 0) {
        Some(format!("0x{}", hex(&bytes[..8])))
    } else {
        Some(hex(&bytes))
    }
}

/// One GPU's platform answer in the model, and the problem to report when the query failed.
pub fn decode(fact: &Fact<RawPlatform>) -> (GpuPlatform, Option<String>) {
    match fact {
        Ok(raw) => (
            GpuPlatform {
                status: PlatformStatus::Ok,
                reason: String::new(),
                api_version: raw.api_version,
                chassis_serial: chassis_serial(&raw.chassis_serial),
                slot_number: Some(raw.slot_number.into()),
                tray_index: Some(raw.tray_index.into()),
                host_id: Some(raw.host_id.into()),
                module_id: Some(raw.module_id.into()),
                peer_type: Some(raw.peer_type.into()),
                ib_guid: ib_guid(&raw.ib_guid),
            },
            None,
        ),
        Err(e) if e.is_not_supported() => (
            GpuPlatform {
                status: PlatformStatus::NotSupported,
                reason: e.message.clone(),
                ..GpuPlatform::default()
            },
            None,
        ),
        Err(e) if e.kind == FailureKind::NotRecorded => (
            GpuPlatform {
                status: PlatformStatus::Unknown,
                reason: e.message.clone(),
                ..GpuPlatform::default()
            },
            None,
        ),
        Err(e) => (
            GpuPlatform {
                status: PlatformStatus::Error,
                reason: e.message.clone(),
                ..GpuPlatform::default()
            },
            Some(e.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::nvml::NvmlFailure;

    fn ascii_hex(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        b.resize(16, 0);
        hex(&b)
    }

    fn raw(serial: &str) -> RawPlatform {
        RawPlatform {
            api_version: 2,
            ib_guid: format!("{}{}", "0002c90300a1b2c3", "0".repeat(16)),
            chassis_serial: ascii_hex(serial),
            slot_number: 5,
            tray_index: 3,
            host_id: 0,
            peer_type: 1,
            module_id: 2,
        }
    }

    #[test]
    fn serial_text_is_read_up_to_the_nul() {
        assert_eq!(
            chassis_serial(&ascii_hex("1821325190123")).as_deref(),
            Some("1821325190123")
        );
        assert_eq!(chassis_serial(&"0".repeat(32)), None);
        // Not printable: the bytes in hex, trailing zeros dropped.
        assert_eq!(
            chassis_serial("01ff0000000000000000000000000000").as_deref(),
            Some("01ff")
        );
        // Text after a NUL is not text.
        assert_eq!(
            chassis_serial("41004200000000000000000000000000").as_deref(),
            Some("410042")
        );
        assert_eq!(chassis_serial("RACK 7").as_deref(), Some("RACK 7"));
    }

    #[test]
    fn ib_guid_uses_eight_bytes_on_blackwell() {
        assert_eq!(
            ib_guid(&format!("0002c90300a1b2c3{}", "0".repeat(16))).as_deref(),
            Some("0x0002c90300a1b2c3")
        );
        assert_eq!(ib_guid(&"0".repeat(32)), None);
        assert_eq!(ib_guid("zz"), None);
    }

    #[test]
    fn an_answer_is_decoded() {
        let (p, problem) = decode(&Ok(raw("1821325190123")));
        assert!(problem.is_none());
        assert_eq!(p.status, PlatformStatus::Ok);
        assert_eq!(p.chassis_serial.as_deref(), Some("1821325190123"));
        assert_eq!(
            (
                p.slot_number,
                p.tray_index,
                p.host_id,
                p.module_id,
                p.peer_type
            ),
            (Some(5), Some(3), Some(0), Some(2), Some(1))
        );
        assert_eq!(p.ib_guid.as_deref(), Some("0x0002c90300a1b2c3"));
    }

    #[test]
    fn not_supported_and_missing_are_no_problem() {
        for kind in [FailureKind::NotSupported, FailureKind::Missing] {
            let (p, problem) = decode(&Err(NvmlFailure::new(kind, "Not Supported")));
            assert_eq!(p.status, PlatformStatus::NotSupported);
            assert_eq!(p.reason, "Not Supported");
            assert!(problem.is_none());
            assert!(p.chassis_serial.is_none() && p.tray_index.is_none());
        }
    }

    #[test]
    fn not_recorded_is_unknown_and_other_failures_are_errors() {
        let (p, problem) = decode(&Err(NvmlFailure::new(
            FailureKind::NotRecorded,
            "not in the snapshot",
        )));
        assert_eq!(p.status, PlatformStatus::Unknown);
        assert!(problem.is_none());
        let (p, problem) = decode(&Err(NvmlFailure::new(FailureKind::GpuLost, "GPU is lost")));
        assert_eq!(p.status, PlatformStatus::Error);
        assert_eq!(problem.as_deref(), Some("GPU is lost"));
    }
}
