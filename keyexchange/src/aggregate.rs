//! The fewest prefixes that cover exactly a set of addresses: how a node's pod IPs become its
//! allowed IPs in pod-IP mode (AWS VPC CNI), where pods get scattered addresses from one range.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The minimal list of prefixes whose union is exactly `addresses`, sorted (IPv4 first).
///
/// Runs of consecutive addresses are split greedily into the largest aligned blocks, which is
/// optimal: any cover of exactly a run must use aligned blocks, and the greedy split uses the
/// fewest of them.
pub fn aggregate(addresses: &BTreeSet<IpAddr>) -> Vec<IpNet> {
    let mut out = Vec::new();
    let v4: Vec<u128> = addresses
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(u128::from(u32::from(*a))),
            IpAddr::V6(_) => None,
        })
        .collect();
    let v6: Vec<u128> = addresses
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(u128::from(*a)),
            IpAddr::V4(_) => None,
        })
        .collect();
    for (values, bits) in [(v4, 32u32), (v6, 128u32)] {
        for (start, end) in runs(&values) {
            split(start, end, bits, &mut out);
        }
    }
    out
}

/// Maximal runs of consecutive values in a sorted, deduplicated list, as inclusive ranges.
fn runs(sorted: &[u128]) -> Vec<(u128, u128)> {
    let mut out: Vec<(u128, u128)> = Vec::new();
    for &v in sorted {
        match out.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(v) => *end = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// Covers `[start, end]` with the fewest aligned blocks of a `bits`-wide address family.
fn split(mut start: u128, end: u128, bits: u32, out: &mut Vec<IpNet>) {
    loop {
        // The largest block aligned at `start` that does not pass `end`.
        let align = if start == 0 { bits } else { start.trailing_zeros().min(bits) };
        let span = end - start;
        let fit = if span == u128::MAX { 128 } else { 127 - (span + 1).leading_zeros() };
        let size_bits = align.min(fit);
        let prefix = (bits - size_bits) as u8;
        let net = if bits == 32 {
            IpNet::new(IpAddr::V4(Ipv4Addr::from(start as u32)), prefix)
        } else {
            IpNet::new(IpAddr::V6(Ipv6Addr::from(start)), prefix)
        };
        out.push(net.expect("prefix length within the family"));
        let last = start + ((1u128 << size_bits) - 1);
        if last >= end {
            return;
        }
        start = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn aggregate_table() {
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (vec![], vec![]),
            (vec!["10.0.0.7"], vec!["10.0.0.7/32"]),
            (vec!["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"], vec!["10.0.0.4/30"]),
            (vec!["10.0.0.3", "10.0.0.4", "10.0.0.5"], vec!["10.0.0.3/32", "10.0.0.4/31"]),
            (vec!["10.0.0.1", "10.0.0.9"], vec!["10.0.0.1/32", "10.0.0.9/32"]),
            (vec!["10.0.0.255", "10.0.1.0"], vec!["10.0.0.255/32", "10.0.1.0/32"]),
            (vec!["0.0.0.0", "0.0.0.1"], vec!["0.0.0.0/31"]),
            (vec!["255.255.255.254", "255.255.255.255"], vec!["255.255.255.254/31"]),
            (
                vec!["fd00::1", "10.0.0.1", "fd00::2", "fd00::3"],
                vec!["10.0.0.1/32", "fd00::1/128", "fd00::2/127"],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(aggregate(&set(&input)), nets(&want), "{input:?}");
        }
    }

    #[test]
    fn a_whole_range_is_one_prefix() {
        let all: BTreeSet<IpAddr> = (0..=255u8).map(|i| IpAddr::V4(Ipv4Addr::new(10, 1, 2, i))).collect();
        assert_eq!(aggregate(&all), nets(&["10.1.2.0/24"]));
    }

    proptest! {
        /// The prefixes cover exactly the input, and no two of them could merge into one.
        #[test]
        fn covers_exactly_and_minimally(lows in proptest::collection::btree_set(0u8..64, 0..40)) {
            let input: BTreeSet<IpAddr> = lows.iter().map(|l| IpAddr::V4(Ipv4Addr::new(10, 0, 0, *l))).collect();
            let got = aggregate(&input);
            let covered: BTreeSet<IpAddr> = got.iter().flat_map(|n| n.hosts_inclusive()).collect();
            prop_assert_eq!(&covered, &input);
            for pair in got.windows(2) {
                prop_assert!(pair[0].supernet() != pair[1].supernet() || pair[0].prefix_len() != pair[1].prefix_len(),
                    "{} and {} merge", pair[0], pair[1]);
            }
        }
    }

    /// All addresses of a prefix, network and broadcast included.
    trait HostsInclusive {
        fn hosts_inclusive(&self) -> Vec<IpAddr>;
    }

    impl HostsInclusive for IpNet {
        fn hosts_inclusive(&self) -> Vec<IpAddr> {
            let IpNet::V4(net) = self else { unreachable!("IPv4 only in this test") };
            (u32::from(net.network())..=u32::from(net.broadcast()))
                .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .collect()
        }
    }
}
