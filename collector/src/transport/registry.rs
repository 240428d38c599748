//! Live sessions by device: who is online, where to push a message for a device,
//! and how to cut a device off (revocation closes its open connection at once).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;
use ward_protocol::message::close_code;
use ward_protocol::{CollectorMessage, DeviceId};

struct Entry {
    conn: quinn::Connection,
    /// Boxed: see `session::handle`.
    outbound: mpsc::Sender<Box<CollectorMessage>>,
}

#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<DeviceId, Entry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// Registers a session; a live older session of the same device is closed and
    /// `true` returned (an identity conflict, or a reconnect that raced the old one).
    pub fn register(
        &self,
        device: DeviceId,
        conn: quinn::Connection,
        outbound: mpsc::Sender<Box<CollectorMessage>>,
    ) -> bool {
        let old = match self.sessions.lock() {
            Ok(mut map) => map.insert(device, Entry { conn, outbound }),
            Err(_) => None,
        };
        match old {
            Some(old) if old.conn.close_reason().is_none() => {
                old.conn
                    .close(close_code::SUPERSEDED.into(), b"superseded by a newer connection");
                true
            }
            _ => false,
        }
    }

    /// Removes the session if it is still the registered one for the device.
    pub fn unregister(&self, device: DeviceId, conn: &quinn::Connection) {
        if let Ok(mut map) = self.sessions.lock()
            && map.get(&device).is_some_and(|e| e.conn.stable_id() == conn.stable_id())
        {
            map.remove(&device);
        }
    }

    pub fn is_online(&self, device: &DeviceId) -> bool {
        self.sessions.lock().map(|m| m.contains_key(device)).unwrap_or(false)
    }

    pub fn online_count(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Closes the device's connection, if any, with a code and reason.
    pub fn close(&self, device: &DeviceId, code: u32, reason: &str) -> bool {
        let entry = self.sessions.lock().ok().and_then(|mut m| m.remove(device));
        match entry {
            Some(e) => {
                e.conn.close(code.into(), reason.as_bytes());
                true
            }
            None => false,
        }
    }

    /// Queues a message for the device's session; false if it is not connected
    /// or its queue is full (the caller retries on reconnect).
    pub fn send_to(&self, device: &DeviceId, msg: CollectorMessage) -> bool {
        let tx = self
            .sessions
            .lock()
            .ok()
            .and_then(|m| m.get(device).map(|e| e.outbound.clone()));
        tx.is_some_and(|tx| tx.try_send(Box::new(msg)).is_ok())
    }

    /// Queues a message for every connected device; returns how many took it.
    pub fn broadcast(&self, msg: &CollectorMessage) -> usize {
        let senders: Vec<_> = match self.sessions.lock() {
            Ok(map) => map.values().map(|e| e.outbound.clone()).collect(),
            Err(_) => Vec::new(),
        };
        senders
            .iter()
            .filter(|tx| tx.try_send(Box::new(msg.clone())).is_ok())
            .count()
    }

    pub fn close_all(&self, code: u32, reason: &str) {
        if let Ok(mut map) = self.sessions.lock() {
            for (_, e) in map.drain() {
                e.conn.close(code.into(), reason.as_bytes());
            }
        }
    }
}

impl crate::actions::delivery::Outbound for Registry {
    fn send(&self, device: &DeviceId, msg: CollectorMessage) -> bool {
        self.send_to(device, msg)
    }
}
