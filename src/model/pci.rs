//! PCI addresses and CPU lists, as the kernel spells them.

/// A PCI function address `domain:bus:device.function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI domain (segment).
    pub domain: u32,
    /// Bus number (`1b` in `0000:1b:00.0`).
    pub bus: u8,
    /// Device number (0..=31).
    pub device: u8,
    /// Function number (0..=7).
    pub function: u8,
}

impl PciAddress {
    /// Parses the sysfs form `0000:1b:00.0` (also NVML's `00000000:1B:00.0`, upper-case with an
    /// 8-digit domain). Bus and device are always two digits in both; a short form such as
    /// `0:0:6.0` is no address any kernel or NVML prints, and is refused. `None` for anything
    /// else. [`Display`](std::fmt::Display) gives the sysfs form.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split(':');
        let (d, b, df) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || d.is_empty() || d.len() > 8 || b.len() != 2 {
            return None;
        }
        let (dev, func) = df.split_once('.')?;
        if dev.len() != 2 || func.len() != 1 {
            return None;
        }
        let hex = |x: &str| x.chars().all(|c| c.is_ascii_hexdigit());
        if !(hex(d) && hex(b) && hex(dev) && hex(func)) {
            return None;
        }
        let device = u8::from_str_radix(dev, 16).ok()?;
        let function = u8::from_str_radix(func, 16).ok()?;
        if device > 0x1f || function > 7 {
            return None;
        }
        Some(Self {
            domain: u32::from_str_radix(d, 16).ok()?,
            bus: u8::from_str_radix(b, 16).ok()?,
            device,
            function,
        })
    }
}

impl std::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// Renders a CPU bitmask (NVML's array of 64-bit words, lowest CPUs first) as a Linux cpulist.
pub fn cpulist_from_mask(words: &[u64]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (w, word) in words.iter().enumerate() {
        for bit in 0..64 {
            if word & (1u64 << bit) != 0 {
                let cpu = w * 64 + bit;
                match ranges.last_mut() {
                    Some((_, end)) if *end + 1 == cpu => *end = cpu,
                    _ => ranges.push((cpu, cpu)),
                }
            }
        }
    }
    ranges
        .iter()
        .map(|&(s, e)| {
            if s == e {
                s.to_string()
            } else {
                format!("{s}-{e}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
