//! Open connections counted by peer address, for the per-address caps: one
//! address may not hold every slot. IPv4-mapped IPv6 addresses count as
//! their IPv4 address.

use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Default)]
pub struct PerAddress(HashMap<IpAddr, usize>);

impl PerAddress {
    pub fn count(&self, ip: IpAddr) -> usize {
        self.0.get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    pub fn add(&mut self, ip: IpAddr) {
        *self.0.entry(ip.to_canonical()).or_insert(0) += 1;
    }

    /// One connection of `ip` closed; an address with none is forgotten.
    pub fn remove(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if let Some(n) = self.0.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_address_and_forgets_at_zero() {
        let mut p = PerAddress::default();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        p.add(v4);
        p.add(mapped);
        assert_eq!(p.count(v4), 2, "a mapped address is the same peer");
        p.remove(v4);
        p.remove(v4);
        p.remove(v4);
        assert_eq!(p.count(mapped), 0);
        assert!(p.0.is_empty());
    }
}
