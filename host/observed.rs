//! The read model of a running host: what the admin endpoint and systemd's status read, kept
//! by the supervisor. Below both, so that neither reads the other.

use std::sync::Arc;

use crate::events::Events;
use crate::metrics::HostStats;
use crate::models::fork_server::ForkerHandle;
use crate::port::Port;

/// What the admin endpoint reads of a running host: every port that has connections (served,
/// or draining after a reload), and what the host itself counts.
#[derive(Debug, Default)]
pub struct Observed {
    ports: std::sync::Mutex<Vec<Arc<Port>>>,
    /// The process-per-client fork server, once the supervisor has one.
    pub(crate) forker: std::sync::OnceLock<Arc<ForkerHandle>>,
    pub stats: HostStats,
    pub events: Arc<Events>,
}

impl Observed {
    /// Every port served or draining, in port order.
    pub fn ports(&self) -> Vec<Arc<Port>> {
        let mut ports = self.lock().clone();
        ports.sort_by_key(|p| p.port());
        ports
    }

    /// The host's child processes, from what it knows: the fork server and the process
    /// serving each open connection (a child of the fork server, or an `exec` port's program),
    /// without reading every process on the machine to find them.
    pub fn children(&self) -> Vec<u32> {
        let forker = self.forker.get().and_then(|f| f.last_pid());
        let mut pids: Vec<u32> = forker.into_iter().collect();
        for port in self.lock().iter() {
            pids.extend(port.child_pids());
        }
        pids
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Port>>> {
        crate::lock::lock(&self.ports)
    }

    pub(crate) fn add(&self, port: &Arc<Port>) {
        self.lock().push(port.clone());
    }

    /// A port has drained: what it counted is kept, and it is no longer listed.
    pub(crate) fn drained(&self, port: &Arc<Port>) {
        let mut ports = self.lock();
        self.stats.drained.keep(port);
        ports.retain(|p| !Arc::ptr_eq(p, port));
    }
}
