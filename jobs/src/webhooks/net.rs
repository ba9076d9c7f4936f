//! Which addresses a webhook may reach: the address policy of the SSRF guard. Loopback,
//! private, link-local, CGNAT, multicast, unspecified and reserved ranges (IPv4 and IPv6,
//! IPv4-mapped and NAT64 addresses judged by the IPv4 address inside) are refused unless
//! `WEBHOOK_ALLOWED_CIDRS` lists them; plain `http` only with `WEBHOOK_ALLOW_HTTP`.
//!
//! The API applies it to literal addresses when an endpoint is created; the worker applies it
//! to every address a host name resolves to, at each delivery, and connects only to the
//! addresses it checked (see `wharf_workers::webhooks::guard`).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use url::{Host, Url};

/// An address range, `10.0.0.0/8` or `::1/128`; a bare address is a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, normalize(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix as u32) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix as u32) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{s}` is not an address range such as 127.0.0.0/8"))?;
        let addr = normalize(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{s}`: bad prefix length"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address it carries.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn in4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    u128::from(ip) & mask == net & mask
}

/// Why an address is not a public unicast address, or `None` if it is.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match normalize(ip) {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "private (10.0.0.0/8)"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT (100.64.0.0/10)"),
        ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
        ([169, 254, 0, 0], 16, "link-local (169.254.0.0/16)"),
        ([172, 16, 0, 0], 12, "private (172.16.0.0/12)"),
        ([192, 0, 0, 0], 24, "reserved (192.0.0.0/24)"),
        ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
        ([192, 88, 99, 0], 24, "reserved (6to4 relay, 192.88.99.0/24)"),
        ([192, 168, 0, 0], 16, "private (192.168.0.0/16)"),
        ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
        ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
        ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
        ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
        ([240, 0, 0, 0], 4, "reserved (240.0.0.0/4, broadcast)"),
    ];
    RANGES.iter().find(|(net, p, _)| in4(ip, *net, *p)).map(|(_, _, why)| *why)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if in6(ip, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        let v4 = Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32);
        return special_v4(v4).map(|_| "NAT64 of a non-public IPv4 address (64:ff9b::/96)");
    }
    const RANGES: &[(u128, u32, &str)] = &[
        (0, 96, "reserved (IPv4-compatible, ::/96)"),
        (0x0064_ff9b_0001 << 80, 48, "reserved (local NAT64, 64:ff9b:1::/48)"),
        (0x0100 << 112, 64, "reserved (discard-only, 100::/64)"),
        (0x2001_0db8 << 96, 32, "documentation (2001:db8::/32)"),
        (0x2001 << 112, 23, "reserved (IETF protocol assignments, 2001::/23)"),
        (0x2002 << 112, 16, "reserved (6to4, 2002::/16)"),
        (0xfc00 << 112, 7, "private (unique local, fc00::/7)"),
        (0xfe80 << 112, 10, "link-local (fe80::/10)"),
        (0xfec0 << 112, 10, "reserved (site-local, fec0::/10)"),
        (0xff00 << 112, 8, "multicast (ff00::/8)"),
    ];
    RANGES.iter().find(|(net, p, _)| in6(ip, *net, *p)).map(|(_, _, why)| *why)
}

/// What webhooks may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Plain `http://` URLs are allowed (`WEBHOOK_ALLOW_HTTP`).
    pub allow_http: bool,
    /// Ranges allowed even though they are not public (`WEBHOOK_ALLOWED_CIDRS`).
    pub allowed: Vec<Cidr>,
}

impl AddressPolicy {
    /// `Err(reason)` if a delivery must not connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        let ip = normalize(ip);
        if self.allowed.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        match special_range(ip) {
            None => Ok(()),
            Some(why) => Err(format!("{ip} is {why}; not allowed unless WEBHOOK_ALLOWED_CIDRS lists it")),
        }
    }

    /// Checks what can be checked without DNS: the scheme, credentials in the URL, literal
    /// addresses and `localhost` names. Returns the parsed URL.
    pub fn check_url(&self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("is not a valid URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err("must use https (plain http needs WEBHOOK_ALLOW_HTTP=true)".into()),
            other => return Err(format!("the scheme `{other}` is not supported: use https")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; use the endpoint's `headers` instead".into());
        }
        match url.host() {
            None => return Err("must name a host".into()),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
                }
            }
        }
        Ok(url)
    }
}

/// Parses a comma-separated list of ranges.
pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, String> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &AddressPolicy, ip: &str) -> bool {
        p.check_ip(ip.parse().unwrap()).is_err()
    }

    #[test]
    fn webhooks_special_ranges_are_refused() {
        let p = AddressPolicy { allow_http: true, allowed: vec![] };
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "224.0.0.1",
            "239.1.1.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.5",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.1",
            "192.0.0.8",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "fec0::1",
            "100::1",
            "2001::1",
        ] {
            assert!(refused(&p, ip), "{ip} must be refused");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "::ffff:93.184.216.34",
            "1.1.1.1",
        ] {
            assert!(!refused(&p, ip), "{ip} is public");
        }
    }

    #[test]
    fn webhooks_allow_list_opens_ranges_for_mapped_addresses_too() {
        let p = AddressPolicy { allow_http: true, allowed: parse_cidrs("127.0.0.0/8, ::1").unwrap() };
        assert!(!refused(&p, "127.0.0.1"));
        assert!(!refused(&p, "::ffff:127.0.0.1"));
        assert!(!refused(&p, "::1"));
        assert!(refused(&p, "10.0.0.1"));
        assert!(refused(&p, "169.254.169.254"));
        assert!(parse_cidrs("10.0.0.0/33").is_err() && parse_cidrs("nope").is_err());
        assert_eq!(parse_cidrs("10.0.0.1").unwrap()[0].to_string(), "10.0.0.1/32");
    }

    #[test]
    fn webhooks_urls_are_checked_without_dns() {
        let strict = AddressPolicy::default();
        assert!(strict.check_url("https://example.com/hook").is_ok());
        assert!(strict.check_url("http://example.com/hook").unwrap_err().contains("WEBHOOK_ALLOW_HTTP"));
        assert!(strict.check_url("ftp://example.com/").is_err());
        assert!(strict.check_url("https://user:pw@example.com/").is_err());
        let http = AddressPolicy { allow_http: true, allowed: vec![] };
        for bad in [
            "http://127.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "http://localhost:3000/",
            "http://api.localhost/",
            "http://10.0.0.8/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            assert!(http.check_url(bad).is_err(), "{bad} must be refused");
        }
        let lo = AddressPolicy { allow_http: true, allowed: parse_cidrs("127.0.0.0/8").unwrap() };
        assert!(lo.check_url("http://127.0.0.1:9/x").is_ok());
        assert!(lo.check_url("http://[::ffff:127.0.0.1]:9/x").is_ok());
        assert!(lo.check_url("http://localhost:9/x").is_ok());
    }
}
