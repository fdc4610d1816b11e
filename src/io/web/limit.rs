//! Per-client rate limiting for the public page, and who the client is.
//!
//! A fixed one-minute window per client address: simple, and the numbers
//! are generous (60 a minute by default; a customer needs two requests).
//! IPv6 clients are counted per /64, the block one subscriber usually
//! holds, so hopping through addresses of one's own block does not reset
//! the count. The table is bounded: past [`MAX_CLIENTS`] entries, those of
//! earlier windows are dropped, and if every entry is of the current window
//! new clients share one overflow bucket (so a flood of addresses cannot
//! grow memory, and at worst slows the flood itself).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

/// Clients remembered at once.
pub const MAX_CLIENTS: usize = 65_536;

/// Counts requests per client and minute.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    counts: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

/// The address a client is counted under.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl RateLimiter {
    /// At most `per_minute` requests per client and minute.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `ip` at `now` (Unix seconds): `Ok` when it may
    /// go on, `Err(seconds)` to wait when over the limit.
    pub fn check(&self, ip: IpAddr, now: u64) -> Result<(), u64> {
        let window = now / 60;
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = bucket(ip);
        if counts.len() >= MAX_CLIENTS && !counts.contains_key(&key) {
            counts.retain(|_, (w, _)| *w == window);
            if counts.len() >= MAX_CLIENTS {
                key = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
            }
        }
        let entry = counts.entry(key).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.per_minute {
            return Err(60 - now % 60);
        }
        entry.1 += 1;
        Ok(())
    }
}

/// The client of a request: the peer, or, when the peer is one of
/// `trusted_proxies`, the last address of `X-Forwarded-For` (the one the
/// proxy itself appended; anything before it the client wrote). Without
/// trusted proxies the header is ignored, so a client cannot choose the
/// address it is counted under.
pub fn client_ip(
    peer: SocketAddr,
    forwarded_for: Option<&str>,
    trusted_proxies: &[IpAddr],
) -> IpAddr {
    let peer_ip = bucket(peer.ip());
    if !trusted_proxies.iter().any(|p| bucket(*p) == peer_ip) {
        return peer.ip();
    }
    forwarded_for
        .and_then(|h| h.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_client_and_window() {
        let l = RateLimiter::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a, 120).is_ok());
        }
        assert_eq!(l.check(a, 130), Err(50));
        assert!(l.check(b, 130).is_ok(), "another client has its own count");
        assert!(l.check(a, 180).is_ok(), "a new minute starts afresh");
        // One /64 is one client.
        let l = RateLimiter::new(1);
        assert!(l.check("2001:db8::1".parse().unwrap(), 0).is_ok());
        assert!(l.check("2001:db8::2".parse().unwrap(), 0).is_err());
        assert!(l.check("2001:db8:0:1::1".parse().unwrap(), 0).is_ok());
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.5:40000".parse().unwrap();
        let trusted = ["10.0.0.5".parse().unwrap()];
        let xff = Some("203.0.113.9, 198.51.100.7");
        assert_eq!(
            client_ip(proxy, xff, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, xff, &[]),
            proxy.ip(),
            "not trusted: ignored"
        );
        let stranger: SocketAddr = "192.0.2.1:1".parse().unwrap();
        assert_eq!(client_ip(stranger, xff, &trusted), stranger.ip());
        assert_eq!(client_ip(proxy, Some("junk"), &trusted), proxy.ip());
    }
}
