//! Connections counted per client address, for the limits every listener
//! keeps (`limits.http_max_conns_per_client`,
//! `limits.rpc_max_conns_per_client`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per client IP.
#[derive(Clone, Default)]
pub(crate) struct ClientConns(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One admitted connection; counted until dropped.
pub(crate) struct ConnGuard {
    conns: ClientConns,
    ip: IpAddr,
}

impl ClientConns {
    /// Counts a connection from `ip`, unless it already has `max` open
    /// (0: no limit). An IPv4 client counts the same over IPv6.
    pub(crate) fn admit(&self, ip: IpAddr, max: usize) -> Option<ConnGuard> {
        let ip = ip.to_canonical();
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnGuard {
            conns: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        let open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = self.conns.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_goes_down_as_connections_close() {
        let conns = ClientConns::default();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let a = conns.admit(v4, 2).unwrap();
        let b = conns.admit(mapped, 2).unwrap();
        assert!(conns.admit(v4, 2).is_none(), "the same client over IPv6");
        assert!(conns.admit("10.0.0.2".parse().unwrap(), 2).is_some());
        assert_eq!(conns.open(v4), 2);
        drop(a);
        assert_eq!(conns.open(v4), 1);
        drop(b);
        assert_eq!(conns.open(v4), 0);
        assert!(conns.0.lock().unwrap().is_empty(), "no entry left behind");
        let many: Vec<_> = (0..1000).map(|_| conns.admit(v4, 0).unwrap()).collect();
        assert_eq!(conns.open(v4), 1000, "0 is no limit");
        drop(many);
    }
}
