//! Access control: which client addresses a port serves, from `allow` and `deny` lists of
//! networks (`"10.0.0.0/8"`, `"fe80::/10"`) and single addresses (`"192.168.1.7"`, `"::1"`).
//! A client is checked on every accept, before any service code runs, so a check is a few
//! binary searches and allocates nothing.
//!
//! # How a client is decided
//! - **The most specific match wins**, as with xinetd's `only_from` and `no_access`: with
//!   `allow = ["10.0.0.0/8"]` and `deny = ["10.1.0.0/16"]`, 10.1.2.3 is denied and 10.2.0.1
//!   allowed; add `allow = ["10.1.2.0/24"]` and 10.1.2.3 is allowed again.
//! - **No rule matches**: allowed when there are only `deny` rules, denied as soon as there
//!   is one `allow` rule (at either level, see below). No rules at all: everyone is allowed.
//! - **IPv4 clients are IPv4**, whatever socket they arrive on: `::ffff:10.1.2.3`, as a
//!   dual-stack `::` listener reports an IPv4 client, is checked as `10.1.2.3`, and a rule
//!   written in that form (`::ffff:10.0.0.0/104`) is the IPv4 rule `10.0.0.0/8`. IPv6 rules
//!   match IPv6 clients only: `::/0` is "every IPv6 client", not every client.
//!
//! # `[host]` and `[ports.N]`
//! Both levels may have `allow` and `deny`. A port's rules are **added to** the host's, and
//! the most specific match wins across both; where both levels name the same network, the
//! port's rule wins. A host-level `allow` makes unmatched clients denied on every port.
//!
//! Why merge rather than let a port's lists replace the host's: `[host]` rules are a baseline
//! (a blocklist, or "only our networks"), and with replacement a port that adds one `deny`
//! line would silently drop the host's `allow` and open itself to the world. Merged, a port
//! can only open what it names: to serve a network the host denies, it names that network or
//! a narrower one (`allow = ["10.9.0.0/16"]` under the host's `deny = ["10.0.0.0/8"]`), and
//! to go public under a host `allow` it says `allow = ["0.0.0.0/0", "::/0"]`, which still
//! loses to every more specific host `deny`. xinetd treats `only_from` and `no_access` in its
//! `defaults` section as cumulative too (xinetd.conf(5)).
//!
//! # Mistakes that are errors
//! Each comes back with its list and its index there, so the config can point at the entry's
//! line: text that is no address or network; a prefix longer than the address; bits set past
//! the prefix (`"10.0.0.1/8"`: the network `10.0.0.0/8` or the address `10.0.0.1`? we do not
//! guess, the message offers both); an IPv4 address ending in `.0` without a prefix (xinetd
//! reads `"192.168.1.0"` as the whole /24, so porthost asks for the prefix to be written);
//! the same network twice in one list; the same network in both lists of one level (an
//! address cannot be both); and `allow = []`, which xinetd reads as "nobody" and a reader
//! might take for "no rule".

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// Which list a rule is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum List {
    Allow,
    Deny,
}

impl List {
    /// The config key, for messages.
    pub fn key(self) -> &'static str {
        match self {
            List::Allow => "allow",
            List::Deny => "deny",
        }
    }
}

impl fmt::Display for List {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Where a rule was written, so a log line can say which rule refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Level {
    Host,
    Port,
}

/// One bad entry of an `allow` or `deny` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub list: List,
    /// The entry's position in its list; `None` when the problem is the list as a whole
    /// (`allow = []`), so the config points at the list.
    pub index: Option<usize>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// One validated rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Normalised: IPv4-mapped IPv6 networks are IPv4 networks here.
    pub net: IpNet,
    pub list: List,
    /// Its position in its list as written.
    pub index: usize,
}

/// The validated `allow` and `deny` lists of one level (`[host]` or a port), before they are
/// combined into the [`Access`] a port checks clients with. Compares equal when the rules
/// are the same, so a reload can tell whether a port's access changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLists {
    rules: Vec<Rule>,
}

impl AccessLists {
    /// Validates the lists of one level; `None` is a list the level does not have. Every bad
    /// entry is reported, not only the first.
    pub fn parse<S: AsRef<str>>(
        allow: Option<&[S]>,
        deny: Option<&[S]>,
    ) -> Result<AccessLists, Vec<RuleError>> {
        let mut errors = Vec::new();
        if allow.is_some_and(<[S]>::is_empty) {
            errors.push(RuleError {
                list: List::Allow,
                index: None,
                message: "allow = [] would admit nobody: remove the key to have no allow rule, \
                          or remove the port to serve no one"
                    .to_owned(),
            });
        }
        let text = |list: List, index: usize| -> &str {
            let entries = match list {
                List::Allow => allow,
                List::Deny => deny,
            };
            entries.map_or("", |e| e[index].as_ref())
        };
        let mut rules = Vec::new();
        let mut seen: HashMap<IpNet, Rule> = HashMap::new();
        for (list, entries) in [(List::Allow, allow), (List::Deny, deny)] {
            for (index, entry) in entries.unwrap_or_default().iter().enumerate() {
                let entry = entry.as_ref();
                let error = |message: String| RuleError {
                    list,
                    index: Some(index),
                    message,
                };
                let net = match parse_net(entry) {
                    Ok(net) => net,
                    Err(message) => {
                        errors.push(error(message));
                        continue;
                    }
                };
                match seen.get(&net) {
                    None => {
                        let rule = Rule { net, list, index };
                        seen.insert(net, rule);
                        rules.push(rule);
                    }
                    Some(first) => {
                        let first_text = text(first.list, first.index);
                        let same = if first_text == entry {
                            String::new()
                        } else {
                            format!(" (as {first_text:?}, the same network)")
                        };
                        errors.push(error(if first.list == list {
                            format!(
                                "{entry:?} is already in {list} at entry {}{same}; list each network once",
                                first.index + 1
                            )
                        } else {
                            format!(
                                "{entry:?} is also in {} at entry {}{same}: an address cannot be both \
                                 allowed and denied; keep one, or name a narrower network in the other list",
                                first.list,
                                first.index + 1
                            )
                        }));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(AccessLists { rules })
        } else {
            Err(errors)
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn has_allow(&self) -> bool {
        self.rules.iter().any(|r| r.list == List::Allow)
    }
}

/// One entry of a list: a network with its prefix, or a single address.
fn parse_net(text: &str) -> Result<IpNet, String> {
    let examples = "e.g. \"10.0.0.0/8\", \"192.168.1.7\", \"fe80::/10\", \"::1\"";
    let not_an_address =
        || format!("{text:?} is not an IP address or network with its prefix length ({examples})");
    let net = match text.split_once('/') {
        None => {
            let ip: IpAddr = text.parse().map_err(|_| not_an_address())?;
            if let IpAddr::V4(v4) = ip {
                let zeros = v4.octets().iter().rev().take_while(|&&o| o == 0).count();
                if zeros > 0 {
                    let prefix = 32 - 8 * zeros;
                    return Err(format!(
                        "{text:?} ends in .0: xinetd reads that as the network {text}/{prefix}; \
                         write \"{text}/{prefix}\" for the network, or \"{text}/32\" for the one address"
                    ));
                }
            }
            IpNet::from(ip)
        }
        Some((addr, prefix)) => {
            let ip: IpAddr = addr.parse().map_err(|_| not_an_address())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            let len = Some(prefix)
                .filter(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|&len| len <= max)
                .ok_or_else(|| {
                    format!("{text:?}: the prefix length of an {family} network is 0 to {max}")
                })?;
            let net = IpNet::new(ip, len).expect("the prefix length was checked");
            if net.trunc() != net {
                return Err(format!(
                    "{text:?} has bits set past its /{len} prefix: write \"{}\" for the network, \
                     or \"{ip}\" for the one address",
                    net.trunc()
                ));
            }
            net
        }
    };
    Ok(canonical_net(net))
}

/// An IPv6 network inside `::ffff:0:0/96` is the IPv4 network it maps.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => {
                IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).expect("a prefix of 0 to 32 bits"))
            }
            None => net,
        },
        net => net,
    }
}

/// The rule a client matched, for the log line that says why it was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Matched {
    pub net: IpNet,
    pub list: List,
    pub level: Level,
}

/// What [`Access::check`] decided about one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The most specific rule that matched; `None` when none did and the default decided.
    pub by: Option<Matched>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        match self.by {
            Some(m) => {
                let level = match m.level {
                    Level::Host => "[host]",
                    Level::Port => "the port's",
                };
                write!(f, "{verdict} by {level} {} {}", m.list, m.net)
            }
            None if self.allowed => write!(f, "{verdict}: no rule matches"),
            None => write!(f, "{verdict}: no allow rule matches"),
        }
    }
}

/// The access rules of one port, host and port levels combined, ready for a check per accept.
/// Serializable, so that the fork server, which accepts a process-per-client port's clients
/// itself, checks them with the very rules the host built.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Access {
    v4: Table,
    v6: Table,
    /// Whether either level has an `allow` rule: then a client no rule matches is denied.
    /// Taken from the lists as written, so a port that overrides every host `allow` with a
    /// `deny` does not turn the host's "only these" into "everyone else".
    default_deny: bool,
}

impl Access {
    /// Combines the host's lists and a port's: the most specific rule wins, and on the same
    /// network the port's rule wins.
    pub fn new(host: &AccessLists, port: &AccessLists) -> Access {
        let mut merged: BTreeMap<IpNet, Matched> = BTreeMap::new();
        for (lists, level) in [(host, Level::Host), (port, Level::Port)] {
            for rule in &lists.rules {
                merged.insert(
                    rule.net,
                    Matched {
                        net: rule.net,
                        list: rule.list,
                        level,
                    },
                );
            }
        }
        let (mut v4, mut v6) = (Table::default(), Table::default());
        for (net, matched) in merged {
            match net {
                IpNet::V4(n) => {
                    v4.insert(32, n.prefix_len(), u32::from(n.network()).into(), matched)
                }
                IpNet::V6(n) => v6.insert(128, n.prefix_len(), u128::from(n.network()), matched),
            }
        }
        Access {
            v4,
            v6,
            default_deny: host.has_allow() || port.has_allow(),
        }
    }

    /// Whether there is nothing to check: no rule at either level.
    pub fn is_open(&self) -> bool {
        !self.default_deny && self.v4.groups.is_empty() && self.v6.groups.is_empty()
    }

    /// Decides one client. An IPv4-mapped IPv6 address is checked as the IPv4 address.
    pub fn check(&self, ip: IpAddr) -> Decision {
        let found = match ip.to_canonical() {
            IpAddr::V4(v4) => self.v4.find(u32::from(v4).into()),
            IpAddr::V6(v6) => self.v6.find(u128::from(v6)),
        };
        match found {
            Some(m) => Decision {
                allowed: m.list == List::Allow,
                by: Some(m),
            },
            None => Decision {
                allowed: !self.default_deny,
                by: None,
            },
        }
    }
}

/// A set of networks, such as `trusted_proxies`: the same entries and the same mistakes as an
/// `allow` list (reported as [`List::Allow`]), with a membership test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks {
    access: Access,
}

impl Networks {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Networks, Vec<RuleError>> {
        let lists = AccessLists::parse(Some(entries), None)?;
        Ok(Networks {
            access: Access::new(&AccessLists::default(), &lists),
        })
    }

    /// Whether `ip` is in one of the networks; IPv4-mapped addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.access.check(ip).by.is_some()
    }
}

/// The rules of one address family, grouped by prefix length, longest first, so the first
/// match is the most specific. A lookup masks the address once per distinct prefix length
/// (at most 33 or 129, in practice a handful) and binary-searches that group, so a blocklist
/// of thousands of single addresses costs one search.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Table {
    groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Group {
    mask: u128,
    /// Network bits (masked), sorted.
    nets: Vec<(u128, Matched)>,
}

impl Table {
    /// Adds one network; `bits` is its address as an integer of `width` bits.
    fn insert(&mut self, width: u8, len: u8, bits: u128, matched: Matched) {
        let mask = mask(width, len);
        let at = match self.groups.binary_search_by(|g| mask.cmp(&g.mask)) {
            Ok(at) => at,
            Err(at) => {
                self.groups.insert(
                    at,
                    Group {
                        mask,
                        nets: Vec::new(),
                    },
                );
                at
            }
        };
        let nets = &mut self.groups[at].nets;
        let key = bits & mask;
        match nets.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => nets[i].1 = matched,
            Err(i) => nets.insert(i, (key, matched)),
        }
    }

    fn find(&self, bits: u128) -> Option<Matched> {
        self.groups.iter().find_map(|g| {
            let key = bits & g.mask;
            g.nets
                .binary_search_by_key(&key, |(k, _)| *k)
                .ok()
                .map(|i| g.nets[i].1)
        })
    }
}

/// The first `len` of `width` bits set. Longer prefixes give larger masks, which is how
/// [`Table`] keeps its groups longest first.
fn mask(width: u8, len: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    (all << (width - len)) & all
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lists(allow: &[&str], deny: &[&str]) -> AccessLists {
        let opt = |l| (!<[&str]>::is_empty(l)).then_some(l);
        AccessLists::parse(opt(allow), opt(deny)).unwrap()
    }

    fn access(allow: &[&str], deny: &[&str]) -> Access {
        Access::new(&AccessLists::default(), &lists(allow, deny))
    }

    fn allowed(access: &Access, ip: &str) -> bool {
        access.check(ip.parse().unwrap()).allowed
    }

    fn errors(allow: Option<&[&str]>, deny: Option<&[&str]>) -> Vec<(List, Option<usize>, String)> {
        AccessLists::parse(allow, deny)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.list, e.index, e.message))
            .collect()
    }

    #[test]
    fn the_most_specific_match_wins_ipv4() {
        let a = access(&["10.0.0.0/8", "10.1.2.0/24"], &["10.1.0.0/16", "10.1.2.3"]);
        assert!(allowed(&a, "10.2.0.1"));
        assert!(!allowed(&a, "10.1.9.9"));
        assert!(allowed(&a, "10.1.2.4"));
        assert!(!allowed(&a, "10.1.2.3"));
        assert!(
            !allowed(&a, "11.0.0.1"),
            "unmatched, and there is an allow list"
        );
        assert!(!allowed(&a, "::1"), "IPv6 is unmatched too");
    }

    #[test]
    fn the_most_specific_match_wins_ipv6() {
        let a = access(
            &["2001:db8::/32", "2001:db8:1:2::/64"],
            &["2001:db8:1::/48"],
        );
        assert!(allowed(&a, "2001:db8:9::1"));
        assert!(!allowed(&a, "2001:db8:1:3::1"));
        assert!(allowed(&a, "2001:db8:1:2::77"));
        assert!(!allowed(&a, "2001:db9::1"));
        assert!(!allowed(&a, "10.0.0.1"));
    }

    #[test]
    fn only_deny_allows_the_rest_and_no_rules_allow_everyone() {
        let a = access(&[], &["192.168.1.7", "fe80::/10"]);
        assert!(!allowed(&a, "192.168.1.7"));
        assert!(allowed(&a, "192.168.1.8"));
        assert!(!allowed(&a, "fe80::1"));
        assert!(allowed(&a, "::1"));
        assert!(!a.is_open());
        let open = Access::new(&AccessLists::default(), &AccessLists::default());
        assert!(open.is_open());
        assert!(allowed(&open, "203.0.113.9") && allowed(&open, "::1"));
    }

    #[test]
    fn zero_length_prefixes_match_their_whole_family() {
        let a = access(&["0.0.0.0/0"], &["::/0"]);
        assert!(allowed(&a, "203.0.113.9"));
        assert!(!allowed(&a, "2001:db8::1"));
        assert!(allowed(&a, "::ffff:203.0.113.9"), "IPv4 clients are IPv4");
    }

    #[test]
    fn ipv4_mapped_clients_and_rules_are_ipv4() {
        let a = access(&["10.0.0.0/8"], &["::ffff:10.1.0.0/112"]);
        assert!(allowed(&a, "::ffff:10.2.3.4"));
        assert!(!allowed(&a, "::ffff:10.1.0.9"));
        assert!(
            !allowed(&a, "10.1.0.9"),
            "the mapped-form rule is the IPv4 rule 10.1.0.0/16"
        );
        let d = a.check("::ffff:10.1.0.9".parse().unwrap());
        assert_eq!(d.by.unwrap().net, "10.1.0.0/16".parse::<IpNet>().unwrap());
        // An IPv6 rule around the mapped range does not catch IPv4 clients.
        let b = access(&[], &["::/8"]);
        assert!(allowed(&b, "::ffff:10.0.0.1"));
        assert!(!allowed(&b, "::1"));
    }

    #[test]
    fn host_and_port_rules_merge_and_the_port_wins_ties() {
        let host = lists(&["10.0.0.0/8"], &["10.66.0.0/16"]);
        // The port narrows the host's allow and reopens part of its deny.
        let port = lists(&["10.66.1.0/24"], &["10.0.0.0/8", "10.5.0.0/16"]);
        let a = Access::new(&host, &port);
        assert!(
            !allowed(&a, "10.1.1.1"),
            "the port's deny wins the tie on 10.0.0.0/8"
        );
        assert!(!allowed(&a, "10.5.0.1"));
        assert!(
            !allowed(&a, "10.66.9.9"),
            "the host's deny, more specific than any allow"
        );
        assert!(
            allowed(&a, "10.66.1.5"),
            "the port's allow is the most specific"
        );
        assert!(
            !allowed(&a, "192.0.2.1"),
            "the host's allow still makes unmatched denied"
        );
        let d = a.check("10.66.9.9".parse().unwrap());
        assert_eq!(d.to_string(), "denied by [host] deny 10.66.0.0/16");
        let d = a.check("10.66.1.5".parse().unwrap());
        assert_eq!(d.to_string(), "allowed by the port's allow 10.66.1.0/24");

        // A port adding only a deny keeps the host's allow: it cannot open itself by accident.
        let a = Access::new(&host, &lists(&[], &["10.1.2.3"]));
        assert!(!allowed(&a, "192.0.2.1"));
        assert!(!allowed(&a, "10.1.2.3"));
        assert!(allowed(&a, "10.1.2.4"));

        // To go public under a host allow, a port says so; the host's deny still holds.
        let a = Access::new(&host, &lists(&["0.0.0.0/0", "::/0"], &[]));
        assert!(allowed(&a, "192.0.2.1") && allowed(&a, "2001:db8::1"));
        assert!(!allowed(&a, "10.66.0.1"));

        // A host blocklist holds on a port with an allow list of its own.
        let a = Access::new(&lists(&[], &["192.0.2.66"]), &lists(&["192.0.2.0/24"], &[]));
        assert!(!allowed(&a, "192.0.2.66"));
        assert!(allowed(&a, "192.0.2.1"));
        assert!(!allowed(&a, "198.51.100.1"));
    }

    #[test]
    fn decisions_say_why() {
        let a = access(&["127.0.0.1"], &[]);
        assert_eq!(
            a.check("127.0.0.2".parse().unwrap()).to_string(),
            "denied: no allow rule matches"
        );
        assert_eq!(
            a.check("127.0.0.1".parse().unwrap()).to_string(),
            "allowed by the port's allow 127.0.0.1/32"
        );
        let open = Access::default();
        assert_eq!(
            open.check("::1".parse().unwrap()).to_string(),
            "allowed: no rule matches"
        );
    }

    #[test]
    fn bad_entries_come_back_with_their_list_and_index() {
        let errs = errors(
            Some(&[
                "10.0.0.0/8",
                "10.0.0.300",
                "10.0.0.1/8",
                "10.0.0.0/33",
                "fe80::/129",
            ]),
            Some(&[
                "::1",
                "10.0.0.0/8x",
                "2001:db8::1/32",
                "10.0.0.0/+8",
                "10.0.0.0/",
            ]),
        );
        let at: Vec<_> = errs.iter().map(|(l, i, _)| (*l, *i)).collect();
        assert_eq!(
            at,
            [
                (List::Allow, Some(1)),
                (List::Allow, Some(2)),
                (List::Allow, Some(3)),
                (List::Allow, Some(4)),
                (List::Deny, Some(1)),
                (List::Deny, Some(2)),
                (List::Deny, Some(3)),
                (List::Deny, Some(4)),
            ]
        );
        assert!(
            errs[0]
                .2
                .starts_with("\"10.0.0.300\" is not an IP address or network")
        );
        assert_eq!(
            errs[1].2,
            "\"10.0.0.1/8\" has bits set past its /8 prefix: write \"10.0.0.0/8\" for the \
             network, or \"10.0.0.1\" for the one address"
        );
        assert_eq!(
            errs[2].2,
            "\"10.0.0.0/33\": the prefix length of an IPv4 network is 0 to 32"
        );
        assert!(errs[3].2.contains("IPv6 network is 0 to 128"));
        assert!(
            errs[5]
                .2
                .contains("write \"2001:db8::/32\" for the network")
        );
    }

    #[test]
    fn an_ipv4_address_ending_in_zero_needs_its_prefix() {
        let errs = errors(None, Some(&["192.168.1.0", "10.0.0.0", "0.0.0.0"]));
        assert_eq!(
            errs[0].2,
            "\"192.168.1.0\" ends in .0: xinetd reads that as the network 192.168.1.0/24; write \
             \"192.168.1.0/24\" for the network, or \"192.168.1.0/32\" for the one address"
        );
        assert!(errs[1].2.contains("\"10.0.0.0/8\" for the network"));
        assert!(errs[2].2.contains("\"0.0.0.0/0\" for the network"));
        // With the prefix written, both readings are accepted.
        let a = access(&[], &["192.168.1.0/32"]);
        assert!(!allowed(&a, "192.168.1.0") && allowed(&a, "192.168.1.1"));
    }

    #[test]
    fn contradictions_and_duplicates_are_errors() {
        let errs = errors(
            Some(&["10.0.0.0/8", "::1", "::ffff:10.0.0.0/104"]),
            Some(&["192.0.2.1", "10.0.0.0/8", "0:0::1"]),
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert_eq!((errs[0].0, errs[0].1), (List::Allow, Some(2)));
        assert_eq!(
            errs[0].2,
            "\"::ffff:10.0.0.0/104\" is already in allow at entry 1 (as \"10.0.0.0/8\", the \
             same network); list each network once"
        );
        assert_eq!((errs[1].0, errs[1].1), (List::Deny, Some(1)));
        assert_eq!(
            errs[1].2,
            "\"10.0.0.0/8\" is also in allow at entry 1: an address cannot be both allowed and \
             denied; keep one, or name a narrower network in the other list"
        );
        assert_eq!((errs[2].0, errs[2].1), (List::Deny, Some(2)));
        assert!(
            errs[2].2.contains("(as \"::1\", the same network)"),
            "{}",
            errs[2].2
        );
    }

    #[test]
    fn an_empty_allow_list_is_an_error_and_an_empty_deny_list_is_none() {
        let errs = errors(Some(&[]), None);
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].0, errs[0].1), (List::Allow, None));
        assert!(errs[0].2.starts_with("allow = [] would admit nobody"));
        let empty: &[&str] = &[];
        assert!(AccessLists::parse(None, Some(empty)).unwrap().is_empty());
    }

    #[test]
    fn networks_test_membership() {
        let n = Networks::parse(&["127.0.0.1", "10.0.0.0/8", "fd00::/8"]).unwrap();
        assert!(n.contains("127.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(n.contains("10.9.9.9".parse().unwrap()));
        assert!(n.contains("fd12::1".parse().unwrap()));
        assert!(!n.contains("127.0.0.2".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let errs = Networks::parse(&["127.0.0.1/8"]).unwrap_err();
        assert_eq!((errs[0].list, errs[0].index), (List::Allow, Some(0)));
    }

    #[test]
    fn masks() {
        assert_eq!(mask(32, 0), 0);
        assert_eq!(mask(32, 8), 0xff00_0000);
        assert_eq!(mask(32, 32), 0xffff_ffff);
        assert_eq!(mask(128, 1), 1 << 127);
        assert_eq!(mask(128, 128), u128::MAX);
    }

    /// A network and an address drawn near each other, so that matches are common.
    fn v4_net() -> impl Strategy<Value = IpNet> {
        (0u32..16, 0u8..=32).prop_map(|(hi, len)| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | (hi << 20) | (hi << 4));
            IpNet::V4(Ipv4Net::new(ip, len).unwrap().trunc())
        })
    }

    fn v4_client() -> impl Strategy<Value = IpAddr> {
        (0u32..16, 0u32..16).prop_map(|(hi, lo)| {
            IpAddr::V4(std::net::Ipv4Addr::from(
                0x0a00_0000 | (hi << 20) | (lo << 4),
            ))
        })
    }

    proptest! {
        /// The tables agree with the rule read the slow way: of all rules containing the
        /// address, the longest prefix decides, the port's on a tie; none: allowed unless
        /// some list has an allow rule.
        #[test]
        fn lookups_agree_with_a_linear_scan(
            host in prop::collection::vec((v4_net(), any::<bool>()), 0..8),
            port in prop::collection::vec((v4_net(), any::<bool>()), 0..8),
            clients in prop::collection::vec(v4_client(), 1..16),
        ) {
            let level = |rules: &[(IpNet, bool)]| {
                // One rule per network, the first one written, as parse would insist.
                let mut seen = std::collections::HashSet::new();
                let rules: Vec<_> = rules.iter().filter(|(n, _)| seen.insert(*n)).copied().collect();
                let allow: Vec<String> = rules.iter().filter(|r| r.1).map(|r| r.0.to_string()).collect();
                let deny: Vec<String> = rules.iter().filter(|r| !r.1).map(|r| r.0.to_string()).collect();
                let opt = |l: Vec<String>| (!l.is_empty()).then_some(l);
                (AccessLists::parse(opt(allow).as_deref(), opt(deny).as_deref()).unwrap(), rules)
            };
            let (host_lists, host_rules) = level(&host);
            let (port_lists, port_rules) = level(&port);
            let access = Access::new(&host_lists, &port_lists);
            let any_allow = host_rules.iter().chain(&port_rules).any(|r| r.1);
            for client in clients {
                let best = host_rules.iter().map(|r| (r, 0)).chain(port_rules.iter().map(|r| (r, 1)))
                    .filter(|((net, _), _)| net.contains(&client))
                    .max_by_key(|((net, _), level)| (net.prefix_len(), *level));
                let expected = best.map_or(!any_allow, |((_, allow), _)| *allow);
                let mapped = match client {
                    IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                    v6 => v6,
                };
                prop_assert_eq!(access.check(client).allowed, expected, "client {}", client);
                prop_assert_eq!(access.check(mapped).allowed, expected, "client {}", mapped);
            }
        }
    }
}
