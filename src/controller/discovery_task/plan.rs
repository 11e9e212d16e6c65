//! The DiscoveryTask decisions, pure: when the next run is due, and which endpoints a cluster
//! sweep connects to.

use std::net::IpAddr;

use jiff::Timestamp;

use crate::{
    crd::v1alpha1::discovery_task::{DiscoverySchedule, ScanRange},
    discovery::{schedule::Schedule, tls_probe::Target},
};

/// The most address × port targets one run connects to: a run is meant to finish within its
/// budget, and a wider sweep belongs to a scanner (SCM network discovery).
pub const MAX_TARGETS: usize = 10_000;

/// When the task runs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Run now.
    Now,
    /// Not before then.
    At(Timestamp),
    /// The schedule never matches again (a cron expression such as `0 0 30 2 *`).
    Never,
}

/// The schedule of `spec.schedule`; the error names the field.
pub fn schedule(spec: &DiscoverySchedule) -> Result<Schedule, String> {
    match (&spec.cron, &spec.interval) {
        (Some(cron), None) => Schedule::cron(cron).map_err(|e| format!("spec.schedule.cron: {e}")),
        (None, Some(interval)) => crate::controller::certificate::validate::parse_duration(interval)
            .map_err(|e| format!("spec.schedule.interval: {e}"))
            .and_then(|d| {
                i64::try_from(d.as_secs())
                    .ok()
                    .filter(|s| *s >= 60)
                    .map(Schedule::Every)
                    .ok_or_else(|| "spec.schedule.interval must be at least 1m".to_owned())
            }),
        _ => Err("spec.schedule: set exactly one of cron or interval".into()),
    }
}

/// Whether a run is due: never run, the spec changed since the last run, or the schedule's next
/// time after the last run has come.
pub fn due(
    schedule: &Schedule,
    last_run: Option<Timestamp>,
    run_generation: Option<i64>,
    generation: Option<i64>,
    now: Timestamp,
) -> Due {
    let Some(last) = last_run else {
        return Due::Now;
    };
    if run_generation != generation {
        return Due::Now;
    }
    match schedule.next_after(last) {
        Some(next) if next <= now => Due::Now,
        Some(next) => Due::At(next),
        None => Due::Never,
    }
}

/// Every address of `cidr`, or why not (malformed, or more than `limit` addresses).
pub fn addresses(cidr: &str, limit: usize) -> Result<Vec<IpAddr>, String> {
    let (address, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr:?} is not a CIDR such as 10.0.0.0/24"))?;
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("{cidr:?}: {address:?} is not an IP address"))?;
    let prefix: u32 = prefix
        .parse()
        .map_err(|_| format!("{cidr:?}: {prefix:?} is not a prefix length"))?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    if prefix > bits {
        return Err(format!("{cidr:?}: the prefix is longer than {bits} bits"));
    }
    let host_bits = bits - prefix;
    let count = if host_bits >= 64 {
        u128::MAX
    } else {
        1_u128 << host_bits
    };
    if count > limit as u128 {
        return Err(format!(
            "{cidr:?} holds {} addresses, more than the {limit} one run may connect to",
            if host_bits >= 64 {
                "2^64 or more".to_owned()
            } else {
                count.to_string()
            }
        ));
    }
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    Ok(match address {
        IpAddr::V4(v4) => {
            let mask = if host_bits == 32 { 0 } else { u32::MAX << host_bits };
            let base = u32::from(v4) & mask;
            (0..count)
                .map(|i| IpAddr::from(std::net::Ipv4Addr::from(base + i)))
                .collect()
        }
        IpAddr::V6(v6) => {
            let mask = if host_bits == 128 {
                0
            } else {
                u128::MAX << host_bits
            };
            let base = u128::from(v6) & mask;
            (0..count)
                .map(|i| IpAddr::from(std::net::Ipv6Addr::from(base + u128::from(i))))
                .collect()
        }
    })
}

/// The targets of a sweep: each host × port (sending `server_name` or the host as SNI), then
/// each range address × port; duplicates once. The error names the field and the limit.
pub fn targets(
    hosts: &[String],
    ports: &[u16],
    ranges: &[ScanRange],
    server_name: Option<&str>,
) -> Result<Vec<Target>, String> {
    let mut all = Vec::new();
    for host in hosts {
        for port in ports {
            let is_address = host.parse::<IpAddr>().is_ok();
            all.push(Target {
                host: host.clone(),
                port: *port,
                server_name: server_name
                    .map(str::to_owned)
                    .or_else(|| (!is_address).then(|| host.clone())),
            });
        }
    }
    for (index, range) in ranges.iter().enumerate() {
        let ports: Vec<u16> = range
            .ports
            .iter()
            .map(|p| {
                u16::try_from(*p)
                    .map_err(|_| format!("spec.cluster.endpoints.ranges[{index}].ports: {p} is not a port"))
            })
            .collect::<Result<_, _>>()?;
        let addresses = addresses(&range.cidr, MAX_TARGETS)
            .map_err(|e| format!("spec.cluster.endpoints.ranges[{index}].cidr: {e}"))?;
        for address in addresses {
            for port in &ports {
                all.push(Target {
                    host: address.to_string(),
                    port: *port,
                    server_name: server_name.map(str::to_owned),
                });
            }
        }
        if all.len() > MAX_TARGETS {
            return Err(format!(
                "spec.cluster.endpoints: more than {MAX_TARGETS} address × port targets; narrow the ranges or ports"
            ));
        }
    }
    all.sort();
    all.dedup();
    if all.len() > MAX_TARGETS {
        return Err(format!(
            "spec.cluster.endpoints: more than {MAX_TARGETS} address × port targets; narrow the hosts, ranges or ports"
        ));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_run_is_due_first_after_a_spec_change_and_on_schedule() {
        let hourly = Schedule::Every(3600);
        let now = at("2026-11-29T12:00:00Z");
        assert_eq!(due(&hourly, None, None, Some(1), now), Due::Now);
        let last = Some(at("2026-11-29T11:30:00Z"));
        assert_eq!(
            due(&hourly, last, Some(1), Some(1), now),
            Due::At(at("2026-11-29T12:30:00Z"))
        );
        assert_eq!(due(&hourly, last, Some(1), Some(2), now), Due::Now);
        assert_eq!(
            due(&hourly, Some(at("2026-11-29T10:00:00Z")), Some(1), Some(1), now),
            Due::Now
        );
        let never = Schedule::cron("0 0 30 2 *").unwrap();
        assert_eq!(due(&never, last, Some(1), Some(1), now), Due::Never);
    }

    #[test]
    fn schedules_name_their_field() {
        let bad = DiscoverySchedule {
            cron: Some("61 * * * *".into()),
            interval: None,
        };
        assert!(schedule(&bad).unwrap_err().starts_with("spec.schedule.cron"));
        let every = DiscoverySchedule {
            cron: None,
            interval: Some("6h".into()),
        };
        assert_eq!(schedule(&every).unwrap(), Schedule::Every(6 * 3600));
    }

    #[test]
    fn ranges_expand_to_addresses_within_the_limit() {
        let v4 = addresses("10.1.2.3/30", 16).unwrap();
        assert_eq!(v4.len(), 4);
        assert_eq!(v4[0].to_string(), "10.1.2.0");
        assert_eq!(addresses("127.0.0.1/32", 16).unwrap()[0].to_string(), "127.0.0.1");
        assert_eq!(addresses("::1/128", 16).unwrap()[0].to_string(), "::1");
        assert!(
            addresses("10.0.0.0/8", 10_000)
                .unwrap_err()
                .contains("16777216 addresses")
        );
        assert!(addresses("10.0.0.0", 16).unwrap_err().contains("not a CIDR"));
        assert!(
            addresses("10.0.0.0/33", 16)
                .unwrap_err()
                .contains("longer than 32")
        );
        assert!(addresses("2001:db8::/32", 10_000).unwrap_err().contains("2^64"));
    }

    #[test]
    fn targets_combine_hosts_ranges_and_ports_once() {
        let ranges = [ScanRange {
            cidr: "127.0.0.1/32".into(),
            ports: vec![8443, 9443],
        }];
        let all = targets(&["db.example".into(), "127.0.0.1".into()], &[8443], &ranges, None).unwrap();
        let shown: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["127.0.0.1:8443", "127.0.0.1:9443", "db.example:8443"]);
        assert_eq!(
            all.iter()
                .find(|t| t.host == "db.example")
                .unwrap()
                .server_name
                .as_deref(),
            Some("db.example")
        );
        let wide = [ScanRange {
            cidr: "10.0.0.0/16".into(),
            ports: vec![443],
        }];
        assert!(
            targets(&[], &[443], &wide, None)
                .unwrap_err()
                .contains("ranges[0].cidr")
        );
    }
}
